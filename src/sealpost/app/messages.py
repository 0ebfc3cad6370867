"""The open conversation: its messages, loaded lazily from the store, newest at the bottom.

Opening a conversation reads its last :data:`PAGE` messages only; scrolling to the top
(or moving the cursor past the first message) reads the page before, so a conversation of
any length opens at once. Each day starts with a separator. A message shows its time, its
author (in a group, or when it is this account's), the status of what this account sent
(sent, delivered) and its file; one deleted for everyone or expired while shown stays as
a placeholder. Every peer-written string is drawn through :mod:`sealpost.app.text`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from rich.text import Text
from textual.widgets import ListItem, ListView, Static

from sealpost.app.text import body_lines, day_label, human_size, peer
from sealpost.client import Client, Message

__all__ = ["PAGE", "DaySeparator", "MessageItem", "MessageList"]

#: Messages read from the store at a time (on opening, and per scroll to the top).
PAGE = 100

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


class DaySeparator(ListItem):
    def __init__(self, label: str) -> None:
        super().__init__(Static(Text(f"── {label} ──", style="dim", justify="center")))
        self.disabled = True


class MessageItem(ListItem):
    def __init__(self, message: Message, *, group: bool, tz: datetime.tzinfo | None) -> None:
        self.message = message
        self.gone: str | None = None  # "deleted" or "expired" once it is a placeholder
        self._group = group
        self._tz = tz
        self._body = Static(render_message(message, group=group, tz=tz))
        super().__init__(self._body)

    def update(self, message: Message) -> None:
        self.message = message
        if self.gone is None:
            self._body.update(render_message(message, group=self._group, tz=self._tz))

    def placeholder(self, why: str) -> None:
        self.gone = why
        when = datetime.datetime.fromtimestamp(self.message.received_at / 1000, tz=self._tz)
        self._body.update(
            Text(f"{when.strftime('%H:%M')} (this message was {why})", style="dim italic")
        )


class MessageList(ListView):
    """The messages of one conversation (see the module's docstring)."""

    def __init__(self, *, tz: datetime.tzinfo | None, now_ms: Callable[[], int]) -> None:
        super().__init__(id="messages", initial_index=None)
        self._tz = tz
        self._now_ms = now_ms
        self._client: Client | None = None
        self.address: str | None = None
        self._group = False
        self._loaded = 0
        self.complete = False  # every message of the conversation is loaded
        self._loading = False

    async def open(self, client: Client, address: str, *, around: bytes | None = None) -> None:
        """Show ``address``'s newest page (or, with ``around``, every message from that one
        on, so the cursor can rest on it)."""
        self._client, self.address = client, address
        self._group = address.startswith("#")
        await self.clear()
        messages = client.history(address, limit=PAGE)
        if around is not None:
            limit = PAGE
            while not any(m.id == around for m in messages) and len(messages) == limit:
                limit *= 4
                messages = client.history(address, limit=limit)
        self._loaded = len(messages)
        self.complete = len(messages) < PAGE if around is None else len(messages) < limit
        await self.extend(self._items(messages, None))
        target = self._index_of(around) if around is not None else None
        self.index = target if target is not None else (len(self) - 1 if len(self) else None)
        self.call_after_refresh(self._settle, target)

    def _settle(self, target: int | None) -> None:
        if target is None:
            self.scroll_end(animate=False)
        else:
            self.scroll_to_widget(self._nodes[target], animate=False, center=True)

    def _index_of(self, message_id: bytes | None) -> int | None:
        for i, node in enumerate(self._nodes):
            if isinstance(node, MessageItem) and node.message.id == message_id:
                return i
        return None

    def _items(self, messages: list[Message], after: Message | None) -> list[ListItem]:
        items: list[ListItem] = []
        last = after
        for message in messages:
            if last is None or _day(last.received_at, self._tz) != _day(
                message.received_at, self._tz
            ):
                items.append(DaySeparator(day_label(message.received_at, self._now_ms(), self._tz)))
            items.append(MessageItem(message, group=self._group, tz=self._tz))
            last = message
        return items

    def messages(self) -> list[MessageItem]:
        return [n for n in self._nodes if isinstance(n, MessageItem)]

    @property
    def selected(self) -> MessageItem | None:
        child = self.highlighted_child
        return child if isinstance(child, MessageItem) else None

    async def add(self, message: Message) -> None:
        """A new message at the bottom (kept in view if the view was at the bottom)."""
        at_end = self.index is None or self.index >= len(self) - 1 or self.is_vertical_scroll_end
        shown = self.messages()
        if any(item.message.id == message.id for item in shown):
            return
        await self.extend(self._items([message], shown[-1].message if shown else None))
        self._loaded += 1
        if at_end:
            self.index = len(self) - 1
            self.call_after_refresh(self.scroll_end, animate=False)

    async def load_older(self) -> int:
        """Read the page before the first message shown; returns how many were added."""
        if self.complete or self._loading or self._client is None or self.address is None:
            return 0
        self._loading = True
        try:
            messages = self._client.history(self.address, limit=self._loaded + PAGE)
            older = messages[: max(0, len(messages) - self._loaded)]
            self.complete = len(messages) < self._loaded + PAGE
            if not older:
                return 0
            shown = self.messages()
            first = self._nodes[0] if self._nodes else None
            removed = 0
            if (
                shown
                and isinstance(first, DaySeparator)
                and _day(older[-1].received_at, self._tz)
                == _day(shown[0].message.received_at, self._tz)
            ):
                await self.pop(0)
                removed = 1
            items = self._items(older, None)
            index = self.index
            await self.insert(0, items)
            self._loaded += len(older)
            if index is not None:
                self.index = index - removed + len(items)
            if shown:
                self.call_after_refresh(self.scroll_to_widget, shown[0], animate=False, top=True)
            return len(older)
        finally:
            self._loading = False

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new <= 0 and old > 0 and not self.complete:
            self.run_worker(self.load_older(), exclusive=True, group="older")

    def action_cursor_up(self) -> None:
        if self.index is not None and self.index <= 1 and not self.complete:
            self.run_worker(self.load_older(), exclusive=True, group="older")
        super().action_cursor_up()

    def refresh_statuses(self) -> None:
        """Read the statuses of the messages shown again (after a receipt)."""
        if self._client is None or self.address is None:
            return
        shown = {item.message.id: item for item in self.messages()}
        for message in self._client.history(self.address, limit=min(self._loaded, PAGE * 4)):
            item = shown.get(message.id)
            if item is not None and item.message.status != message.status:
                item.update(message)

    def gone(self, message_id: bytes, why: str) -> bool:
        for item in self.messages():
            if item.message.id == message_id and item.gone is None:
                item.placeholder(why)
                return True
        return False

    def expire(self, now_ms: int) -> None:
        for item in self.messages():
            exp = item.message.expires_at
            if item.gone is None and exp is not None and exp <= now_ms:
                item.placeholder("expired")
