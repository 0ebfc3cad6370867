"""The compose box: Enter sends; Shift+Enter, Alt+Enter (or Ctrl+J, for terminals that
cannot tell Shift+Enter from Enter) insert a new line; a paste keeps its new lines.

A line starting with ``/`` is a command (``/file PATH``, ``/timer 1h``, ...: see the help
screen); ``//`` sends a text that starts with ``/``.
"""

from __future__ import annotations

import shlex

from textual import events
from textual.message import Message
from textual.widgets import TextArea

__all__ = ["NEWLINE_KEYS", "Command", "ComposeBox", "parse_command"]

NEWLINE_KEYS = frozenset({"shift+enter", "alt+enter", "ctrl+j"})


class ComposeBox(TextArea):
    """A :class:`TextArea` that posts :class:`ComposeBox.Submitted` on Enter."""

    class Submitted(Message):
        def __init__(self, compose: ComposeBox, text: str) -> None:
            super().__init__()
            self.compose = compose
            self.text = text

    def __init__(self) -> None:
        super().__init__(
            id="compose", soft_wrap=True, show_line_numbers=False, tab_behavior="focus"
        )
        self.placeholder = "Message (Enter sends, Shift+Enter: new line, /help)"

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            if self.text.strip():
                self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self._replace_via_keyboard("\n", start, end)
            return
        await super()._on_key(event)


class Command:
    """A parsed ``/command arg ...`` line."""

    def __init__(self, name: str, args: list[str], rest: str) -> None:
        self.name = name
        self.args = args
        self.rest = rest  # everything after the command word, as typed

    def __repr__(self) -> str:
        return f"Command({self.name!r}, {self.args!r})"


def parse_command(text: str) -> Command | None:
    """``None`` for a message to send; a :class:`Command` for ``/name args``. Raises
    ValueError for unbalanced quotes."""
    stripped = text.strip()
    if not stripped.startswith("/") or stripped.startswith("//"):
        return None
    word, _, rest = stripped[1:].partition(" ")
    return Command(word.lower(), shlex.split(rest), rest.strip())
