"""The conversation list: contacts and groups, most recent first, each with its unread
count, a one-line preview of its last message and that message's time."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from rich.text import Text

from sealpost.app.lines import LineList, Row
from sealpost.app.text import body_lines, peer, time_label
from sealpost.client import ConversationSummary
from sealpost.client.services.conversations import UNREAD_CAP

__all__ = ["ConversationItem", "ConversationList"]


def render_summary(
    summary: ConversationSummary, now_ms: int, tz: datetime.tzinfo | None, warn: bool
) -> Text:
    text = Text(end="", no_wrap=True, overflow="ellipsis")
    if warn:
        text.append("⚠ ", "bold red")
    text.append("#" if summary.is_group else "", "dim")
    text.append_text(peer(summary.title, "bold" if summary.unread else ""))
    if summary.unread:
        count = f"{UNREAD_CAP - 1}+" if summary.unread >= UNREAD_CAP else str(summary.unread)
        text.append(f" ({count})", "bold yellow")
    last = summary.last
    if last is not None:
        text.append(f"  {time_label(last.received_at, now_ms, tz)}", "dim")
        preview = body_lines(last.text)[0] if last.text else ""
        if last.attachment is not None and not preview:
            preview = "📎 " + last.attachment.filename
        who = "you: " if last.outgoing else (f"{last.author}: " if summary.is_group else "")
        text.append("\n")
        if last.gone is not None:
            text.append_text(peer(who, "dim"))
            text.append(f"(message {last.gone})", "dim italic")
        else:
            text.append_text(peer(who + preview, "dim"))
    else:
        text.append("\n")
        text.append("no messages yet", "dim italic")
    return text


class ConversationItem(Row):
    def __init__(self, summary: ConversationSummary, body: Text) -> None:
        super().__init__()
        self.summary = summary
        self.body = body

    def render(self) -> Text:
        return self.body


class ConversationList(LineList[ConversationItem]):
    """One line-API widget (:class:`~sealpost.app.lines.LineList`), not a widget per
    conversation; Enter or a click opens the conversation chosen."""

    select_on_click = True

    def __init__(self, *, tz: datetime.tzinfo | None, now_ms: Callable[[], int]) -> None:
        super().__init__(id="conversations")
        self._tz = tz
        self._now_ms = now_ms
        self.summaries: list[ConversationSummary] = []

    async def show(
        self, summaries: list[ConversationSummary], current: str | None, warned: set[str]
    ) -> None:
        """Show ``summaries``, keeping the chosen conversation (else the open one) chosen."""
        chosen = self.highlighted
        keep = chosen.summary.address if chosen is not None else current
        self.summaries = summaries
        now = self._now_ms()
        self.rows = [
            ConversationItem(s, render_summary(s, now, self._tz, s.address in warned))
            for s in summaries
        ]
        self._index = next((i for i, s in enumerate(summaries) if s.address == keep), None)
        self.layout_rows()
        self.show_cursor()

    def unread_of(self, address: str) -> int:
        return next((s.unread for s in self.summaries if s.address == address), 0)
