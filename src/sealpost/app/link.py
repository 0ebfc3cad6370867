"""The new device's end of linking, for ``sealpost chat`` on a profile directory that
holds no profile yet: this device joins an account the user already has.

The screen asks for the server, a name for this device and a passcode for its profile
(twice), then shows the link code, as text and as a QR code, and the six-digit
confirmation code. On a device already linked to the account, ``/link CODE`` in the app
(or ``sealpost link accept CODE``) shows the new device's name and that code to compare
before it provisions this one; once it has, this device registers and the app opens the
conversations, as after an unlock. The protocol is :mod:`sealpost.client.services.linking`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Input, Static

from sealpost.app.text import peer
from sealpost.app.unlock import UnlockScreen
from sealpost.cli.passcode import MIN_PASSCODE
from sealpost.client import Client, ClientError, StoreError
from sealpost.client.qr import qr_text

__all__ = ["LinkScreen", "Linker"]

#: How the screen links: ``(profile, passcode, server URL, device name, show)`` to the
#: new device's :class:`Client` (default :meth:`Client.link_new`; tests pass their KDF
#: parameters).
Linker = Callable[[Path, str, str, str, Callable[[str, str], None]], Awaitable[Client]]


async def link_new(
    profile: Path, passcode: str, server: str, name: str, show: Callable[[str, str], None]
) -> Client:
    return await Client.link_new(profile, passcode, server_url=server, device_name=name, show=show)


class LinkScreen(Screen[None]):
    """See the module's docstring. Posts :class:`UnlockScreen.Unlocked` once linked."""

    def __init__(self, profile: Path, linker: Linker) -> None:
        super().__init__(id="link")
        self._profile = profile
        self._linker = linker
        self.code: str | None = None  # the link code shown, once there is one
        self.confirmation: str | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="link-box"):
            yield Static(Text("sealpost: link this device to your account", style="bold"))
            yield Static(peer(f"no profile in {self._profile} yet", "dim"))
            with Vertical(id="link-form"):
                yield Input(placeholder="server, e.g. https://chat.example.org", id="server")
                yield Input(placeholder="a name for this device, e.g. laptop", id="device")
                yield Input(password=True, placeholder="a passcode for it", id="new-passcode")
                yield Input(password=True, placeholder="the passcode again", id="again")
                yield Button("Link", id="link-start", variant="primary")
            yield Static(Text(""), id="link-status")
            yield Static(Text(""), id="link-code")
            yield Static(Text("A new account? Quit (Ctrl+Q) and run 'sealpost init'.", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#server", Input).focus()

    def _status(self, text: Text) -> None:
        self.query_one("#link-status", Static).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        order = ["server", "device", "new-passcode", "again"]
        at = order.index(event.input.id or "server")
        if at + 1 < len(order):
            self.query_one("#" + order[at + 1], Input).focus()
        else:
            self._start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self._start()

    def _start(self) -> None:
        values = {
            key: self.query_one("#" + key, Input).value
            for key in ("server", "device", "new-passcode", "again")
        }
        server, name = values["server"].strip(), values["device"].strip()
        passcode = values["new-passcode"]
        if not server.startswith(("https://", "http://")):
            self._status(Text("The server is a URL: https://…", style="red"))
        elif not name:
            self._status(Text("Give this device a name (the other device shows it).", "red"))
        elif len(passcode) < MIN_PASSCODE:
            self._status(Text(f"A passcode needs at least {MIN_PASSCODE} characters.", "red"))
        elif passcode != values["again"]:
            self._status(Text("The two passcodes differ.", style="red"))
        else:
            self.query_one("#link-form").disabled = True
            self._status(Text("asking the server for a link code…", style="dim"))
            self._link(server, name, passcode)

    def _show(self, code: str, confirmation: str) -> None:
        self.code, self.confirmation = code, confirmation
        # the form is done with: the codes take its place (at 80x24 the confirmation code
        # and the text code are in view, the QR code below them scrolls)
        self.query_one("#link-form").display = False
        text = Text("On a device already linked to your account, type in sealpost chat\n")
        text.append(f"  /link {code}\n", "bold")
        text.append("(or run 'sealpost link accept' with that code), or scan this QR code\n")
        text.append("with it. It asks you to check that this device shows ")
        text.append(confirmation, "bold reverse")
        text.append("\n")
        text.append(qr_text(code.encode()))
        self.query_one("#link-code", Static).update(text)
        self._status(Text("waiting for your other device…", style="yellow"))

    @work(exclusive=True)
    async def _link(self, server: str, name: str, passcode: str) -> None:
        try:
            client = await self._linker(self._profile, passcode, server, name, self._show)
        except (ClientError, StoreError, OSError, TimeoutError) as exc:
            form = self.query_one("#link-form")
            form.disabled, form.display = False, True
            self.query_one("#link-code", Static).update(Text(""))
            self._status(peer(f"not linked: {exc or type(exc).__name__}", "red"))
            return
        self.post_message(UnlockScreen.Unlocked(client))
