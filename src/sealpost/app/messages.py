"""The open conversation: its messages, read a page at a time, newest at the bottom.

Opening a conversation reads its newest :data:`PAGE` messages (a keyset page of the
store: :meth:`Client.page`); scrolling near the top, or moving the cursor past the first
message, reads the page before it, and after opening at a search hit, scrolling to the
bottom reads the pages after it, so a conversation of any length opens at once.

The list is one widget drawn line by line (:class:`~sealpost.app.lines.LineList`): each
message is rendered to lines once for the width shown and only the lines in view are
drawn, so scrolling through ten thousand messages mounts no widget per message. Each day
starts with a separator. A message shows its time, its author (in a group, or when it is
this account's), the status of what this account sent (sent, delivered) and its file;
one deleted for everyone or expired stays as a placeholder, in the store too (so after a
restart as well: :attr:`Message.gone`). Every peer-written string is
drawn through :mod:`sealpost.app.text`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from rich.text import Text

from sealpost.app.lines import LineList, Row
from sealpost.app.text import body_lines, day_label, human_size, peer
from sealpost.client import Client, Message

__all__ = ["PAGE", "MessageItem", "MessageList", "render_message"]

#: Messages read from the store at a time (on opening, and per page scrolled).
PAGE = 60

#: Read the page before when the view comes this many lines from the top.
_NEAR = 8

_STATUS = {
    "sending": ("…", "sending"),
    "queued": ("…", "sending"),
    "sent": ("✓", "sent"),
    "delivered": ("✓✓", "delivered"),
    "read": ("✓✓", "read"),
    "failed": ("✗", "not sent"),
}


def _day(ms: int, tz: datetime.tzinfo | None) -> datetime.date:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=tz).date()


def render_message(message: Message, *, group: bool, tz: datetime.tzinfo | None) -> Text:
    """One message as text: a header line, then its body indented under it."""
    when = datetime.datetime.fromtimestamp(message.received_at / 1000, tz=tz)
    text = Text(end="")
    text.append(when.strftime("%H:%M"), style="dim")
    text.append(" ")
    if message.outgoing:
        text.append("you", style="bold green")
    elif group or message.author != message.peer:
        text.append_text(peer(message.author or message.peer, "bold cyan"))
    else:
        text.append_text(peer(message.peer, "bold cyan"))
    if message.outgoing:
        mark, word = _STATUS.get(message.status, ("", message.status))
        text.append(f"  {mark} {word}", style="dim")
    if message.expires_at is not None:
        text.append("  ⏱", style="dim")
    for line in body_lines(message.text) if message.text else []:
        text.append("\n  ")
        text.append(line)
    if message.attachment is not None:
        info = message.attachment
        text.append("\n  📎 ")
        text.append_text(peer(info.filename, "underline"))
        text.append(f" ({human_size(info.size)})", style="dim")
        if info.saved_to:
            text.append("  saved to ", style="dim")
            text.append_text(peer(info.saved_to, "dim"))
        elif not message.outgoing:
            text.append("  s: save", style="dim")
    return text


class MessageItem(Row):
    """One message shown (not a widget: :class:`MessageList` draws its lines)."""

    def __init__(self, message: Message, *, group: bool, tz: datetime.tzinfo | None) -> None:
        super().__init__()
        self.message = message
        self.gone = message.gone  # "deleted" or "expired": a placeholder
        self._group = group
        self._tz = tz
        self.day = _day(message.received_at, tz)

    def render(self) -> Text:
        """What is drawn for this message (without its day separator)."""
        if self.gone is not None:
            when = datetime.datetime.fromtimestamp(self.message.received_at / 1000, tz=self._tz)
            return Text(f"{when.strftime('%H:%M')} (this message was {self.gone})", "dim italic")
        return render_message(self.message, group=self._group, tz=self._tz)

    def update(self, message: Message) -> None:
        self.message = message
        self.changed()

    def placeholder(self, why: str) -> None:
        self.gone = why
        self.changed()


class MessageList(LineList[MessageItem]):
    """The messages of one conversation (see the module's docstring)."""

    def __init__(self, *, tz: datetime.tzinfo | None, now_ms: Callable[[], int]) -> None:
        super().__init__(id="messages")
        self._tz = tz
        self._now_ms = now_ms
        self._client: Client | None = None
        self.address: str | None = None
        self._group = False
        self.complete = False  # the oldest message is shown
        self.newest = True  # the newest message is shown (new ones are added)
        self._loading = False

    def head(self, index: int) -> Text | None:
        item = self.rows[index]
        if index and self.rows[index - 1].day == item.day:
            return None
        label = day_label(item.message.received_at, self._now_ms(), self._tz)
        return Text(f"── {label} ──", style="dim", justify="center")

    def _item(self, message: Message) -> MessageItem:
        return MessageItem(message, group=self._group, tz=self._tz)

    # ------------------------------------------------------------------ reading

    async def open(self, client: Client, address: str, *, around: bytes | None = None) -> None:
        """Show ``address``'s newest page or, with ``around``, the pages around that
        message with the cursor on it."""
        self._client, self.address = client, address
        self._group = address.startswith("#")
        if around is None:
            messages = client.page(address, limit=PAGE)
            self.complete, self.newest = len(messages) < PAGE, True
        else:
            newer = client.page(address, after=around, limit=PAGE)
            upto = newer[0].id if newer else None
            older = client.page(address, before=upto, limit=PAGE)
            messages = older + newer
            self.complete, self.newest = len(older) < PAGE, len(newer) < PAGE
        self.rows = [self._item(m) for m in messages]
        target = self._index_of(around) if around is not None else None
        self._index = target if target is not None else (len(self.rows) - 1 if messages else None)
        self.layout_rows()
        self.scroll_to(y=0, animate=False, immediate=True)
        self.call_after_refresh(self._settle)

    def _settle(self) -> None:
        if self._index is None or (self._index == len(self.rows) - 1 and self.newest):
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self.show_cursor(center=True)

    def _index_of(self, message_id: bytes | None) -> int | None:
        return next((i for i, it in enumerate(self.rows) if it.message.id == message_id), None)

    def messages(self) -> list[MessageItem]:
        """The messages loaded, oldest first."""
        return list(self.rows)

    @property
    def selected(self) -> MessageItem | None:
        return self.highlighted

    async def add(self, message: Message) -> None:
        """A new message at the bottom (kept in view if the view was at the bottom)."""
        if not self.newest or any(it.message.id == message.id for it in self.rows):
            return  # not shown yet: read with the pages after the ones shown
        at_end = self._index is None or self._index >= len(self.rows) - 1
        at_end = at_end or self.is_vertical_scroll_end
        self.rows.append(self._item(message))
        if at_end:
            self._index = len(self.rows) - 1
        self.layout_rows()
        if at_end:
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)

    async def load_older(self) -> int:
        """Read the page before the first message shown; returns how many were added."""
        if self.complete or self._loading or self._client is None or self.address is None:
            return 0
        self._loading = True
        try:
            first = self.rows[0].message.id if self.rows else None
            older = self._client.page(self.address, before=first, limit=PAGE)
            self.complete = len(older) < PAGE
            if not older:
                return 0
            lines_before = self.line_count
            self.rows[:0] = [self._item(m) for m in older]
            if self._index is not None:
                self._index += len(older)
            self.layout_rows()
            # the same messages stay where they were on the screen
            self.scroll_to(
                y=self.scroll_y + self.line_count - lines_before, animate=False, immediate=True
            )
            return len(older)
        finally:
            self._loading = False

    async def load_newer(self) -> int:
        """Read the page after the last message shown (after opening at a search hit)."""
        if self.newest or self._loading or self._client is None or self.address is None:
            return 0
        self._loading = True
        try:
            last = self.rows[-1].message.id if self.rows else None
            newer = self._client.page(self.address, after=last, limit=PAGE)
            self.newest = len(newer) < PAGE
            self.rows += [self._item(m) for m in newer]
            self.layout_rows()
            return len(newer)
        finally:
            self._loading = False

    def refresh_statuses(self) -> None:
        """Read the statuses of the newest messages shown again (after a receipt)."""
        if self._client is None or self.address is None or not self.newest:
            return
        shown = {it.message.id: it for it in self.rows[-PAGE * 4 :]}
        changed = False
        for message in self._client.page(self.address, limit=min(len(shown), PAGE * 4)):
            item = shown.get(message.id)
            if item is not None and item.message.status != message.status:
                item.update(message)
                changed = True
        if changed:
            self.layout_rows()

    def gone(self, message_id: bytes, why: str) -> bool:
        for item in self.rows:
            if item.message.id == message_id and item.gone is None:
                item.placeholder(why)
                self.layout_rows()
                return True
        return False

    def expire(self, now_ms: int) -> None:
        changed = False
        for item in self.rows:
            exp = item.message.expires_at
            if item.gone is None and exp is not None and exp <= now_ms:
                item.placeholder("expired")
                changed = True
        if changed:
            self.layout_rows()

    # ------------------------------------------------------------------ moving

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new <= _NEAR and new < old and not self.complete:
            self.run_worker(self.load_older(), exclusive=True, group="older")
        elif not self.newest and new >= self.max_scroll_y - _NEAR and new > old:
            self.run_worker(self.load_newer(), exclusive=True, group="newer")

    async def action_cursor_up(self) -> None:
        if self._index == 0 and not self.complete:
            await self.load_older()
        await super().action_cursor_up()

    async def action_cursor_down(self) -> None:
        if self._index is not None and self._index >= len(self.rows) - 1 and not self.newest:
            await self.load_newer()
        await super().action_cursor_down()
