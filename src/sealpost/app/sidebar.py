"""The conversation list: contacts and groups, most recent first, each with its unread
count, a one-line preview of its last message and that message's time."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from rich.text import Text
from textual.widgets import ListItem, ListView, Static

from sealpost.app.model import UNREAD_SCAN, ConversationSummary
from sealpost.app.text import body_lines, peer, time_label

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
        count = f"{UNREAD_SCAN - 1}+" if summary.unread >= UNREAD_SCAN else str(summary.unread)
        text.append(f" ({count})", "bold yellow")
    last = summary.last
    if last is not None:
        text.append(f"  {time_label(last.received_at, now_ms, tz)}", "dim")
        preview = body_lines(last.text)[0] if last.text else ""
        if last.attachment is not None and not preview:
            preview = "📎 " + last.attachment.filename
        who = "you: " if last.outgoing else (f"{last.author}: " if summary.is_group else "")
        text.append("\n")
        text.append_text(peer(who + preview, "dim"))
    else:
        text.append("\n")
        text.append("no messages yet", "dim italic")
    return text


class ConversationItem(ListItem):
    def __init__(self, summary: ConversationSummary, body: Text) -> None:
        self.summary = summary
        super().__init__(Static(body))


class ConversationList(ListView):
    def __init__(self, *, tz: datetime.tzinfo | None, now_ms: Callable[[], int]) -> None:
        super().__init__(id="conversations", initial_index=None)
        self._tz = tz
        self._now_ms = now_ms
        self.summaries: list[ConversationSummary] = []

    async def show(
        self, summaries: list[ConversationSummary], current: str | None, warned: set[str]
    ) -> None:
        """Replace the list, keeping the chosen conversation (else the open one) chosen."""
        chosen = self.highlighted_child
        keep = chosen.summary.address if isinstance(chosen, ConversationItem) else current
        self.summaries = summaries
        now = self._now_ms()
        await self.clear()
        await self.extend(
            ConversationItem(s, render_summary(s, now, self._tz, s.address in warned))
            for s in summaries
        )
        for i, s in enumerate(summaries):
            if s.address == keep:
                self.index = i
                break

    def unread_of(self, address: str) -> int:
        return next((s.unread for s in self.summaries if s.address == address), 0)
