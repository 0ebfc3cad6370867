"""The main screen: the conversation list on the left (under a "new chat" button), the
open conversation on the right (its title, warnings, messages and the compose box), a
status line on top and an alarm banner under it whenever a key-transparency alarm is not
dismissed.

Events from the client (:meth:`MainScreen.handle`) update what is shown; commands typed
in the compose box are run by :mod:`sealpost.app.commands`.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, ProgressBar, Static

from sealpost.app import commands
from sealpost.app.compose import ComposeBox, parse_command
from sealpost.app.messages import MessageList
from sealpost.app.model import ReadMarks, Settings, address_of, summaries
from sealpost.app.sidebar import ConversationList
from sealpost.app.text import peer, toast
from sealpost.cli.output import format_duration
from sealpost.client import (
    AlarmRaised,
    Client,
    ClientError,
    Event,
    GroupChanged,
    KeyChanged,
    MessageDeleted,
    MessageReceived,
    ReceiptReceived,
    SendFailed,
    TimerChanged,
)

if TYPE_CHECKING:
    from sealpost.app.notify import Notifier

__all__ = ["MainScreen"]


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "new_chat", "new chat", priority=True),
        Binding("n", "new_chat", "new chat", show=False),
        Binding("ctrl+f", "search", "search", priority=True),
        Binding("slash", "search", "search", show=False),
        Binding("ctrl+t", "safety", "safety number", priority=True),
        Binding("ctrl+g", "group", "group", priority=True),
        Binding("ctrl+e", "devices", "devices", priority=True),
        Binding("ctrl+b", "alarms", "alarms", priority=True),
        Binding("d", "delete", "delete for everyone", show=False),
        Binding("s", "save", "save file", show=False),
        Binding("escape", "focus_messages", show=False),
    ]

    def __init__(
        self,
        client: Client,
        settings: Settings,
        notifier: Notifier,
        *,
        tz: datetime.tzinfo | None,
        now_ms: Callable[[], int],
    ) -> None:
        super().__init__(id="main")
        self.client = client
        self.settings = settings
        self.notifier = notifier
        self.marks = ReadMarks(client)
        self.tz = tz
        self.now_ms = now_ms
        self.current: str | None = None
        self.connected: bool | None = None
        self.warned: set[str] = set()  # conversations whose key changed, not yet seen
        self.waiting = 0  # messages written offline, kept in the profile until sent
        self._list_lock = asyncio.Lock()
        self.ready = False  # set once mounted and the list is shown

    def compose(self) -> ComposeResult:
        yield Static(id="status-bar")
        yield Static(id="alarm-banner")
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield Button("+ new chat", id="new-chat", compact=True, tooltip="n or Ctrl+N")
                yield ConversationList(tz=self.tz, now_ms=self.now_ms)
            with Vertical(id="chat"):
                yield Static(id="chat-title")
                yield Static(id="key-banner")
                yield MessageList(tz=self.tz, now_ms=self.now_ms)
                yield ProgressBar(id="progress", show_eta=False)
                yield ComposeBox()
        yield Static(
            Text(" ? help  ^N new  ^F search  ^T safety  ^G group  ^E devices  ^Q quit", "dim"),
            id="hints",
        )

    async def on_mount(self) -> None:
        self.warned = {c.username for c in self.client.contacts() if c.key_changed}
        self.show_status()
        self.show_alarms()
        await self.refresh_list()
        self._show_title()
        self.set_interval(1.0, self._tick)
        items = self.query_one(ConversationList)
        if items.summaries:
            items.index = 0
        items.focus()
        self.ready = True

    # ------------------------------------------------------------------ showing

    def show_status(self) -> None:
        text = Text(" sealpost  ", "bold", end="")
        text.append_text(peer(self.client.username))
        if self.connected is None:
            text.append("   connecting…", "dim")
        elif self.connected:
            text.append("   ● connected", "green")
        else:
            text.append("   ○ connection lost, reconnecting…", "bold red")
        self.waiting = waiting = self.client.waiting()
        if waiting:
            text.append(f"   {waiting} message{'s' if waiting > 1 else ''} waiting", "yellow")
        self.query_one("#status-bar", Static).update(text)

    def set_connected(self, connected: bool, why: ClientError | None = None) -> None:
        """After each receive: connected or not (``why``: the server refused). A receive
        sends what was written offline first, so the statuses shown may have changed."""
        waiting = self.waiting
        if connected == self.connected and why is None and self.client.waiting() == waiting:
            return
        was = self.connected
        self.connected = connected
        self.show_status()
        if connected and self.waiting < waiting:
            self.query_one(MessageList).refresh_statuses()  # sent what was written offline
        if why is not None:
            self.show_alarms()  # a refusal for a key-transparency reason raised one
            if was is not False:
                toast(self, f"the server refused: {why}", "error")
        if connected and was is False:
            toast(self, "connected again")
            self.query_one(MessageList).refresh_statuses()

    def show_alarms(self) -> None:
        alarms = self.client.alarms()
        banner = self.query_one("#alarm-banner", Static)
        banner.display = bool(alarms)
        if alarms:
            text = Text(f" ⚠ {len(alarms)} key-transparency alarm", "bold white on red", end="")
            text.append("s" if len(alarms) > 1 else "")
            text.append(": the server did what it must not. Ctrl+B to read them ")
            banner.update(text)

    async def refresh_list(self) -> None:
        async with self._list_lock:  # one rebuild at a time, the newest state last
            await self.query_one(ConversationList).show(
                summaries(self.client, self.marks), self.current, self.warned
            )

    def _show_title(self) -> None:
        title = self.query_one("#chat-title", Static)
        banner = self.query_one("#key-banner", Static)
        banner.display = False
        if self.current is None:
            title.update(Text(" no conversation open: n or Ctrl+N starts one", "dim"))
            return
        text = Text(" ", end="")
        if self.current.startswith("#"):
            group = next((g for g in self.client.groups() if "#" + g.name == self.current), None)
            text.append_text(peer(self.current, "bold"))
            if group is not None:
                text.append(f"  {len(group.members)} members", "dim")
        else:
            text.append_text(peer(self.current, "bold"))
            contact = next((c for c in self.client.contacts() if c.username == self.current), None)
            if contact is not None:
                text.append("  ✓ verified" if contact.verified else "  not verified", "dim")
                if contact.key_changed:
                    banner.display = True
                    warning = Text(" ⚠ ", "bold white on red", end="")
                    warning.append_text(peer(self.current, "bold white on red"))
                    warning.append("'s safety number changed", "bold white on red")
                    warning.append(
                        ": sending is blocked until you verify again (Ctrl+T) "
                        if contact.verified
                        else ": a new device, or an attack. Compare it: Ctrl+T ",
                        "bold white on red",
                    )
                    banner.update(warning)
        try:
            timer = self.client.timer(self.current)
        except ClientError:
            timer = 0
        if timer:
            text.append(f"  ⏱ {format_duration(timer)}", "dim")
        title.update(text)

    async def open(self, address: str, *, around: bytes | None = None) -> None:
        self.current = address
        messages = self.query_one(MessageList)
        await messages.open(self.client, address, around=around)
        self._mark_read(address)
        self._show_title()
        await self.refresh_list()
        listing = self.query_one(ConversationList)
        for i, summary in enumerate(listing.summaries):
            if summary.address == address:
                listing.index = i
        self.query_one(ComposeBox).focus()

    def _mark_read(self, address: str) -> None:
        """Everything stored for ``address`` so far is read (the stored times: an event's
        copy of a message may carry a time a few ms before the one committed)."""
        last = self.client.history(address, limit=1)
        if last:
            self.marks.set(address, last[-1].received_at)

    def _tick(self) -> None:
        self.query_one(MessageList).expire(self.now_ms())

    # ------------------------------------------------------------------ events

    async def handle(self, event: Event) -> None:
        messages = self.query_one(MessageList)
        if isinstance(event, MessageReceived):
            message = event.message
            address = address_of(message)
            if address == self.current:
                self._mark_read(address)
                await messages.add(message)
            elif not message.outgoing and self.settings.notify:
                title = address
                self.notifier.message(title, message.text if self.settings.notify_text else None)
            await self.refresh_list()
        elif isinstance(event, ReceiptReceived):
            messages.refresh_statuses()
        elif isinstance(event, SendFailed):
            where = "#" + event.peer if event.group is not None else event.peer
            toast(self, f"not sent to {where} (written offline): {event.reason}", "error")
            messages.refresh_statuses()
            self.show_status()
        elif isinstance(event, KeyChanged):
            self.warned.add(event.peer)
            toast(self, f"{event.peer}'s safety number changed (Ctrl+T to compare)", "warning")
            self._show_title()
            await self.refresh_list()
        elif isinstance(event, MessageDeleted):
            messages.gone(event.message_id, "deleted")
            await self.refresh_list()
        elif isinstance(event, AlarmRaised):
            self.show_alarms()
            self.app.bell()
        elif isinstance(event, TimerChanged | GroupChanged):
            self._show_title()
            await self.refresh_list()
            renamed = isinstance(event, GroupChanged) and event.renamed_from is not None
            if renamed and self.current == "#" + str(getattr(event, "renamed_from", "")):
                assert isinstance(event, GroupChanged)
                self.current = "#" + event.name
                self._show_title()
            if isinstance(event, TimerChanged):
                toast(self, f"disappearing messages: {format_duration(event.seconds)}")

    # ------------------------------------------------------------------ input

    @on(ConversationList.Selected, "#conversations")
    async def _chosen(self, event: ConversationList.Selected) -> None:
        listing = self.query_one(ConversationList)
        if 0 <= event.index < len(listing.rows):
            await self.open(listing.rows[event.index].summary.address)

    @on(Button.Pressed, "#new-chat")
    def _new_chat_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_new_chat()

    @on(ComposeBox.Submitted)
    def _submitted(self, event: ComposeBox.Submitted) -> None:
        text = event.text
        try:
            command = parse_command(text)
        except ValueError:
            toast(self, "unbalanced quotes in the command", "error")
            return
        event.compose.clear()
        if command is not None:
            self.run_worker(commands.run(self, command), group="commands")
            return
        if text.lstrip().startswith("//"):
            text = text.replace("/", "", 1)
        self.send_text(text)

    @work(group="send")
    async def send_text(self, text: str, file: str | None = None) -> None:
        if self.current is None:
            toast(self, "open a conversation first (n starts one)", "warning")
            return
        await commands.send(self, self.current, text, file)

    def action_focus_messages(self) -> None:
        self.query_one(MessageList).focus()

    def action_new_chat(self) -> None:
        self.run_worker(commands.new_chat(self), group="commands")

    def action_search(self) -> None:
        self.run_worker(commands.search(self, ""), group="commands")

    def action_safety(self) -> None:
        self.run_worker(commands.safety(self), group="commands")

    def action_group(self) -> None:
        self.run_worker(commands.group_screen(self), group="commands")

    def action_devices(self) -> None:
        self.run_worker(commands.devices(self), group="commands")

    def action_alarms(self) -> None:
        self.run_worker(commands.alarms(self), group="commands")

    def action_delete(self) -> None:
        self.run_worker(commands.delete(self), group="commands")

    def action_save(self) -> None:
        self.run_worker(commands.save(self, None), group="commands")
