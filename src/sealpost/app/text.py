"""Peer text as Rich ``Text`` objects: data on screen, never markup and never control.

Textual renders a ``str`` given to most widgets as console markup: a message reading
``[b red]pay now[/]`` or ``[@click=app.quit]`` would style itself or bind an action. So
everything a peer or the server wrote (message text, names, group and file names, alarm
details) reaches a widget only as a :class:`rich.text.Text` built here, which is never
parsed for markup. Before that, every control character, bidi override and line separator
goes through :mod:`sealpost.cli.render`'s escapes (``\\x1b``, ``\\u202e``), so no escape
sequence reaches the terminal; a message body keeps its line breaks, but each of its lines
is drawn indented under the message's own header, so a line like ``[12:00] alice: hi``
inside a message cannot pass for a message of its own.
"""

from __future__ import annotations

import datetime
from typing import Literal, Protocol

from rich.text import Text

from sealpost.cli.errors import human_size
from sealpost.cli.render import one_line

__all__ = ["body_lines", "day_label", "human_size", "peer", "time_label", "toast"]

_BREAKS = ("\r\n", "\r", "\x85", "\u2028", "\u2029")


def peer(value: object, style: str = "") -> Text:
    """A name or any one-line value from a peer: escaped, one line, no markup."""
    return Text(one_line(value), style=style, end="")


def body_lines(body: str) -> list[str]:
    """A message body split at its line breaks, each line escaped (see module doc)."""
    for br in _BREAKS:
        body = body.replace(br, "\n")
    return [one_line(line) for line in body.split("\n")]


def _local(ms: int, tz: datetime.tzinfo | None) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=tz)


def time_label(ms: int, now_ms: int, tz: datetime.tzinfo | None = None) -> str:
    """``14:05`` today, ``Mon`` within the week, ``12 Nov`` this year, else ``12 Nov 2025``."""
    when, now = _local(ms, tz), _local(now_ms, tz)
    days = (now.date() - when.date()).days
    if days <= 0:
        return when.strftime("%H:%M")
    if days < 7:
        return when.strftime("%a")
    if when.year == now.year:
        return f"{when.day} {when.strftime('%b')}"
    return f"{when.day} {when.strftime('%b %Y')}"


def day_label(ms: int, now_ms: int, tz: datetime.tzinfo | None = None) -> str:
    """The day separator above a day's messages: Today, Yesterday, or the date."""
    when, now = _local(ms, tz), _local(now_ms, tz)
    days = (now.date() - when.date()).days
    if days == 0:
        return "Today"
    if days == 1:
        return "Yesterday"
    return f"{when.strftime('%a')} {when.day} {when.strftime('%b %Y')}"


class _Notifies(Protocol):
    def notify(
        self,
        message: str,
        *,
        title: str = ...,
        severity: Literal["information", "warning", "error"] = ...,
        timeout: float | None = ...,
        markup: bool = ...,
    ) -> None: ...


def toast(
    node: _Notifies,
    message: object,
    severity: Literal["information", "warning", "error"] = "information",
) -> None:
    """A notification whose text (an error may quote a peer or the server) is escaped and
    never read as markup."""
    node.notify(one_line(message), severity=severity, markup=False)
