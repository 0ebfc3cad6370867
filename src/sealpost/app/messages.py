"""The open conversation: its messages, read a page at a time, newest at the bottom.

Opening a conversation reads its newest :data:`PAGE` messages (a keyset page of the
store: :meth:`Client.page`); scrolling near the top, or moving the cursor past the first
message, reads the page before it, and after opening at a search hit, scrolling to the
bottom reads the pages after it, so a conversation of any length opens at once.

The list is one widget drawn line by line (Textual's line API, as its ``RichLog``): each
message is rendered to lines once for the width shown and only the lines in view are
drawn, so scrolling through ten thousand messages mounts no widget per message. Each day
starts with a separator. A message shows its time, its author (in a group, or when it is
this account's), the status of what this account sent (sent, delivered) and its file;
one deleted for everyone or expired stays as a placeholder. Every peer-written string is
drawn through :mod:`sealpost.app.text`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

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


class MessageItem:
    """One message shown (not a widget: :class:`MessageList` draws its lines)."""

    def __init__(self, message: Message, *, group: bool, tz: datetime.tzinfo | None) -> None:
        self.message = message
        self.gone: str | None = None  # "deleted" or "expired" once it is a placeholder
        self.day: str | None = None  # the day separator drawn above it, if any
        self._group = group
        self._tz = tz
        self._lines: tuple[int, list[Strip]] | None = None  # (width, lines) rendered

    def render(self) -> Text:
        """What is drawn for this message (without its day separator)."""
        if self.gone is not None:
            when = datetime.datetime.fromtimestamp(self.message.received_at / 1000, tz=self._tz)
            return Text(f"{when.strftime('%H:%M')} (this message was {self.gone})", "dim italic")
        return render_message(self.message, group=self._group, tz=self._tz)

    def update(self, message: Message) -> None:
        self.message = message
        self._lines = None

    def placeholder(self, why: str) -> None:
        self.gone = why
        self._lines = None

    def lines(self, list_: MessageList, width: int) -> list[Strip]:
        if self._lines is None or self._lines[0] != width:
            self._lines = (width, list_.render_strips(self.render(), width))
        return self._lines[1]


class MessageList(ScrollView, can_focus=True):
    """The messages of one conversation (see the module's docstring)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "previous message", show=False),
        Binding("down", "cursor_down", "next message", show=False),
        Binding("home", "first", show=False),
        Binding("end", "last", show=False),
        Binding("pageup", "page_up", show=False),
        Binding("pagedown", "page_down", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"message-list--cursor", "message-list--cursor-blur"}
    DEFAULT_CSS = """
    MessageList { background: $surface; overflow-y: auto; overflow-x: hidden; }
    MessageList:focus { background-tint: $foreground 5%; }
    MessageList > .message-list--cursor-blur {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
    }
    MessageList > .message-list--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
    }
    """

    def __init__(self, *, tz: datetime.tzinfo | None, now_ms: Callable[[], int]) -> None:
        super().__init__(id="messages")
        self._tz = tz
        self._now_ms = now_ms
        self._client: Client | None = None
        self.address: str | None = None
        self._group = False
        self._items: list[MessageItem] = []
        self.index: int | None = None  # the chosen message
        self.complete = False  # the oldest message is shown
        self.newest = True  # the newest message is shown (new ones are added)
        self._loading = False
        self._width = 0
        self._strips: list[Strip] = []
        self._owner: list[int] = []  # per line: the index of its message (-1: a separator)
        self._first: list[int] = []  # per message: its first line (after its separator)

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
            older = (
                client.page(address, before=upto, limit=PAGE)
                if upto is not None
                else client.page(address, limit=PAGE)
            )
            messages = older + newer
            self.complete, self.newest = len(older) < PAGE, len(newer) < PAGE
        self._items = [MessageItem(m, group=self._group, tz=self._tz) for m in messages]
        target = self._index_of(around) if around is not None else None
        self.index = target if target is not None else (len(self._items) - 1 if messages else None)
        self._layout()
        self.scroll_to(y=0, animate=False, immediate=True)
        self.call_after_refresh(self._settle)

    def _settle(self) -> None:
        if self.index is None or (self.index == len(self._items) - 1 and self.newest):
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        else:
            self._show_cursor(center=True)

    def _index_of(self, message_id: bytes | None) -> int | None:
        return next((i for i, it in enumerate(self._items) if it.message.id == message_id), None)

    def messages(self) -> list[MessageItem]:
        """The messages loaded, oldest first."""
        return list(self._items)

    @property
    def selected(self) -> MessageItem | None:
        return None if self.index is None else self._items[self.index]

    async def add(self, message: Message) -> None:
        """A new message at the bottom (kept in view if the view was at the bottom)."""
        if not self.newest or any(it.message.id == message.id for it in self._items):
            return  # not shown yet: read with the pages after the ones shown
        at_end = self.index is None or self.index >= len(self._items) - 1
        at_end = at_end or self.is_vertical_scroll_end
        self._items.append(MessageItem(message, group=self._group, tz=self._tz))
        if at_end:
            self.index = len(self._items) - 1
        self._layout()
        if at_end:
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)

    async def load_older(self) -> int:
        """Read the page before the first message shown; returns how many were added."""
        if self.complete or self._loading or self._client is None or self.address is None:
            return 0
        self._loading = True
        try:
            first = self._items[0].message.id if self._items else None
            older = self._client.page(self.address, before=first, limit=PAGE)
            self.complete = len(older) < PAGE
            if not older:
                return 0
            lines_before = len(self._strips)
            self._items[:0] = [MessageItem(m, group=self._group, tz=self._tz) for m in older]
            if self.index is not None:
                self.index += len(older)
            self._layout()
            # the same messages stay where they were on the screen
            self.scroll_to(
                y=self.scroll_y + len(self._strips) - lines_before, animate=False, immediate=True
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
            last = self._items[-1].message.id if self._items else None
            newer = self._client.page(self.address, after=last, limit=PAGE)
            self.newest = len(newer) < PAGE
            self._items += [MessageItem(m, group=self._group, tz=self._tz) for m in newer]
            self._layout()
            return len(newer)
        finally:
            self._loading = False

    def refresh_statuses(self) -> None:
        """Read the statuses of the newest messages shown again (after a receipt)."""
        if self._client is None or self.address is None or not self.newest:
            return
        shown = {it.message.id: it for it in self._items[-PAGE * 4 :]}
        changed = False
        for message in self._client.page(self.address, limit=min(len(shown), PAGE * 4)):
            item = shown.get(message.id)
            if item is not None and item.message.status != message.status:
                item.update(message)
                changed = True
        if changed:
            self._layout()

    def gone(self, message_id: bytes, why: str) -> bool:
        for item in self._items:
            if item.message.id == message_id and item.gone is None:
                item.placeholder(why)
                self._layout()
                return True
        return False

    def expire(self, now_ms: int) -> None:
        changed = False
        for item in self._items:
            exp = item.message.expires_at
            if item.gone is None and exp is not None and exp <= now_ms:
                item.placeholder("expired")
                changed = True
        if changed:
            self._layout()

    # ------------------------------------------------------------------ drawing

    def render_strips(self, text: Text, width: int) -> list[Strip]:
        console = self.app.console
        options = console.options.update_width(width)
        lines = console.render_lines(text, options, pad=True, new_lines=False)
        return [Strip(line, width) for line in lines]

    def _layout(self) -> None:
        """Lay the messages out as lines for the current width (messages already
        rendered at this width are not rendered again)."""
        width = self.scrollable_content_region.width
        if width <= 0:
            return  # not sized yet: laid out on the first resize
        self._width = width
        strips: list[Strip] = []
        owner: list[int] = []
        first: list[int] = []
        last_day: datetime.date | None = None
        now = self._now_ms()
        for i, item in enumerate(self._items):
            day = _day(item.message.received_at, self._tz)
            if day != last_day:
                label = Text(
                    f"── {day_label(item.message.received_at, now, self._tz)} ──",
                    style="dim",
                    justify="center",
                )
                strips.extend(self.render_strips(label, width))
                owner.append(-1)
                last_day = day
            first.append(len(strips))
            lines = item.lines(self, width)
            strips.extend(lines)
            owner.extend([i] * len(lines))
        self._strips, self._owner, self._first = strips, owner, first
        self.virtual_size = Size(width, len(strips))
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        if self.scrollable_content_region.width != self._width:
            self._layout()
            self.call_after_refresh(self._settle)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y
        width = self.scrollable_content_region.width
        if line >= len(self._strips):
            return Strip.blank(width, self.rich_style)
        strip = self._strips[line].crop_extend(scroll_x, scroll_x + width, self.rich_style)
        if self.index is not None and self._owner[line] == self.index:
            cursor = "message-list--cursor" if self.has_focus else "message-list--cursor-blur"
            strip = strip.apply_style(self.get_component_rich_style(cursor))
        return strip.apply_style(self.rich_style)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    # ------------------------------------------------------------------ moving

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new <= _NEAR and new < old and not self.complete:
            self.run_worker(self.load_older(), exclusive=True, group="older")
        elif not self.newest and new >= self.max_scroll_y - _NEAR and new > old:
            self.run_worker(self.load_newer(), exclusive=True, group="newer")

    def _show_cursor(self, *, center: bool = False) -> None:
        if self.index is None or not self._first:
            return
        top = self._first[self.index]
        height = len(self._items[self.index].lines(self, self._width)) if self._width else 1
        self.scroll_to_region(
            Region(0, top, max(1, self._width), height),
            animate=False,
            center=center,
            immediate=True,
        )

    def _move(self, index: int) -> None:
        if not self._items:
            return
        self.index = max(0, min(len(self._items) - 1, index))
        self._show_cursor()
        self.refresh()

    async def action_cursor_up(self) -> None:
        if self.index is not None and self.index == 0 and not self.complete:
            await self.load_older()
        self._move(len(self._items) - 1 if self.index is None else self.index - 1)

    async def action_cursor_down(self) -> None:
        if self.index is not None and self.index >= len(self._items) - 1 and not self.newest:
            await self.load_newer()
        self._move(len(self._items) - 1 if self.index is None else self.index + 1)

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self._items) - 1)

    def action_page_up(self) -> None:
        self.scroll_page_up(animate=False)

    def action_page_down(self) -> None:
        self.scroll_page_down(animate=False)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        line = int(self.scroll_y) + offset.y
        if 0 <= line < len(self._owner) and self._owner[line] >= 0:
            self.index = self._owner[line]
            self.refresh()
