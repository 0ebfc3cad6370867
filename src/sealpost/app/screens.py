"""The screens for trust and the account: safety number, alarms, devices, a group.

Each takes the unlocked :class:`~sealpost.client.Client` and calls only its public API.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, ListItem, ListView, Static

from sealpost.app.dialogs import ConfirmScreen, PromptScreen
from sealpost.app.text import peer, toast
from sealpost.client import Client, ClientError
from sealpost.client.qr import qr_text
from sealpost.protocol.safety import safety_number_lines

__all__ = ["AlarmsScreen", "DevicesScreen", "GroupScreen", "SafetyScreen"]


class SafetyScreen(ModalScreen[bool]):
    """The 60-digit safety number and its QR code; Verify marks it checked. Dismissed
    with True when the contact was verified here."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close"),
        Binding("v", "verify", "verify"),
    ]

    def __init__(self, client: Client, name: str) -> None:
        super().__init__()
        self._client = client
        self._who = name

    def compose(self) -> ComposeResult:
        number = self._client.safety_number(self._who)
        contact = next((c for c in self._client.contacts() if c.username == self._who), None)
        title = Text("Safety number with ", style="bold", end="")
        title.append_text(peer(self._who, "bold"))
        state = Text(end="")
        if contact is not None and contact.key_changed:
            state.append("⚠ this contact's key changed: compare again before verifying", "bold red")
        elif contact is not None and contact.verified:
            state.append("✓ verified", "green")
        else:
            state.append("not verified: compare these digits in person or on a call", "yellow")
        with Vertical(id="dialog", classes="safety"):
            yield Static(title)
            yield Static(Text("\n".join(safety_number_lines(number)), style="bold"))
            yield Static(state)
            with VerticalScroll():
                yield Static(Text(qr_text(self._client.safety_qr_payload(self._who))))
            with Horizontal(classes="buttons"):
                yield Button("Verify (v)", id="verify", variant="success")
                yield Button("Close (Esc)", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "verify":
            self.action_verify()
        else:
            self.action_close()

    def action_verify(self) -> None:
        self._client.verify(self._who)
        self.dismiss(True)

    def action_close(self) -> None:
        self.dismiss(False)


class AlarmsScreen(ModalScreen[int]):
    """Every alarm not yet dismissed, in full; Dismiss all (after reading) clears them.
    Dismissed with how many were dismissed."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "close")]

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client

    def compose(self) -> ComposeResult:
        alarms = self._client.alarms()
        text = Text(end="")
        if not alarms:
            text.append("No alarms.", "green")
        for alarm in alarms:
            text.append(f"#{alarm.alarm_id} ", "bold red")
            text.append_text(peer(alarm.meaning, "bold"))
            text.append("\n  about ")
            text.append_text(peer(alarm.subject))
            text.append("\n  ")
            text.append_text(peer(alarm.detail))
            text.append("\n\n")
        with Vertical(id="dialog"):
            yield Static(Text("Key-transparency alarms", style="bold red"))
            with VerticalScroll():
                yield Static(text, id="alarm-list")
            with Horizontal(classes="buttons"):
                yield Button("Dismiss all", id="dismiss", variant="warning")
                yield Button("Close (Esc)", id="close")

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "dismiss":
            self.dismiss(await self._client.dismiss_alarms())
        else:
            self.dismiss(0)

    def action_close(self) -> None:
        self.dismiss(0)


class DevicesScreen(ModalScreen[str | None]):
    """This account's devices; ``r`` removes the chosen one (after a confirmation), ``l``
    links a new one (dismissed with ``"link"``: the main screen asks for its code)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close"),
        Binding("r,delete", "remove", "remove"),
        Binding("l", "link", "link a new device"),
    ]

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text("Devices of this account", style="bold"))
            yield ListView(id="device-list")
            yield Static(
                Text("r: remove the chosen device   l: link a new one   Esc: close", style="dim")
            )

    def on_mount(self) -> None:
        self.reload()

    @work(exclusive=True)
    async def reload(self) -> None:
        view = self.query_one("#device-list", ListView)
        await view.clear()
        try:
            devices = await self._client.devices()
        except ClientError as exc:
            await view.append(ListItem(Static(peer(f"cannot list the devices: {exc}", "red"))))
            return
        for device in devices:
            line = Text(f"{device['device_id']:>3}  ", end="")
            line.append_text(peer(device["name"]))
            if device.get("current"):
                line.append("  (this device)", "dim")
            item = ListItem(Static(line))
            item.device_id = int(device["device_id"])  # type: ignore[attr-defined]
            item.current = bool(device.get("current"))  # type: ignore[attr-defined]
            await view.append(item)

    @work(exclusive=True, group="remove")
    async def action_remove(self) -> None:
        child = self.query_one("#device-list", ListView).highlighted_child
        if child is None or getattr(child, "current", True):
            toast(self, "choose another device of this account", "warning")
            return
        device_id = int(getattr(child, "device_id"))  # noqa: B009
        if not await self.app.push_screen_wait(
            ConfirmScreen(f"Remove device {device_id}? It can no longer read new messages.")
        ):
            return
        try:
            await self._client.remove_device(device_id)
        except ClientError as exc:
            toast(self, exc, "error")
        self.reload()

    def action_link(self) -> None:
        self.dismiss("link")

    def action_close(self) -> None:
        self.dismiss(None)


class GroupScreen(ModalScreen[None]):
    """A group's name, members and admins; add, remove, rename, leave."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "close")]

    def __init__(self, client: Client, name: str) -> None:
        super().__init__()
        self._client = client
        self._who = name

    def _view_text(self) -> Text:
        group = next((g for g in self._client.groups() if g.name == self._who), None)
        text = Text(end="")
        if group is None:
            return Text("this group is gone", "red")
        text.append("#", "bold")
        text.append_text(peer(group.name, "bold"))
        text.append(f"   version {group.version}", "dim")
        if not group.member:
            text.append("   (you left)", "yellow")
        for member in group.members:
            text.append("\n  ")
            text.append_text(peer(member))
            if member in group.admins:
                text.append("  admin", "dim")
        return text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            with VerticalScroll():
                yield Static(self._view_text(), id="group-view")
            with Horizontal(classes="buttons"):
                yield Button("Add", id="add")
                yield Button("Remove", id="remove")
                yield Button("Rename", id="rename")
                yield Button("Leave", id="leave", variant="error")
                yield Button("Close", id="close")

    @work(exclusive=True)
    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        action = event.button.id
        if action == "close":
            self.dismiss(None)
            return
        client, name = self._client, self._who
        try:
            if action in ("add", "remove"):
                answer = await self.app.push_screen_wait(
                    PromptScreen(f"Members to {action} (usernames, separated by spaces)")
                )
                if answer and answer.split():
                    call = client.group_add if action == "add" else client.group_remove
                    await call(name, answer.split())
            elif action == "rename":
                answer = await self.app.push_screen_wait(PromptScreen("New name", name))
                if answer and answer.strip():
                    view = await client.group_rename(name, answer.strip())
                    self._who = view.name
            elif action == "leave" and await self.app.push_screen_wait(
                ConfirmScreen(Text("Leave this group?"))
            ):
                await client.group_leave(name)
        except (ClientError, ValueError) as exc:
            toast(self, exc, "error")
        self.query_one("#group-view", Static).update(self._view_text())

    def action_close(self) -> None:
        self.dismiss(None)
