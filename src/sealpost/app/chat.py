"""The app: unlock, then the main screen, staying connected until quit.

Connection. The app stays connected by calling :meth:`Client.receive` in a loop (each call
returns as soon as something arrives, or after ``poll`` seconds with nothing): a call that
fails (:class:`ServerUnavailable`, or the server refusing) shows "connection lost", and
why where :meth:`Client.diagnose_refusal` can tell (this device removed, the server's
log key changed: an alarm)
and the next, after a backoff of 1 s doubling to 30 s, "connected" again once it
succeeds; each call first sends what the outbox holds and what was written offline: the
app sends with ``queue_offline=True``, so a text written while the server cannot be
reached is kept in the profile, shown "sending" and counted on the status line, and is
sent, in order, once the connection is back, even after the app was quit
(:mod:`sealpost.client.services.pending`). (:meth:`Client.events` reconnects by itself but
cannot say when it is offline, which the app must show.)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding

from sealpost.app.dialogs import HelpScreen
from sealpost.app.link import Linker, LinkScreen, link_new
from sealpost.app.main import MainScreen
from sealpost.app.model import Settings
from sealpost.app.notify import Notifier
from sealpost.app.unlock import Opener, UnlockScreen
from sealpost.client import Client, ClientError, ServerUnavailable
from sealpost.client.store import Store

__all__ = ["ChatApp"]

log = logging.getLogger("sealpost.app")

CSS = """
#unlock { align: center middle; }
#unlock-box { width: 60; height: auto; border: round $primary; padding: 1 2; }
#unlock-box Input { margin: 1 0; }
#link { align: center middle; }
#link-box { width: 80; max-width: 100%; height: auto; max-height: 100%;
            border: round $primary; padding: 0 1; }
#link-form { height: auto; }
#link-form Button { margin: 0 0 1 0; }
#status-bar { height: 1; background: $panel; }
#alarm-banner { height: auto; }
#hints { height: 1; }
#body { height: 1fr; }
#sidebar { width: 28; border-right: solid $panel-lighten-2; }
#new-chat { width: 100%; }
#conversations { height: 1fr; padding: 0 1; }
#chat { width: 1fr; }
#chat-title { height: 1; background: $boost; }
#key-banner { height: auto; }
#messages { height: 1fr; }
#messages { padding: 0 1; }
#progress { height: 1; display: none; }
#compose { height: 4; border: tall $panel-lighten-2; }
#compose:focus { border: tall $accent; }
ModalScreen { align: center middle; }
#dialog { width: 76; max-width: 100%; max-height: 100%; height: auto; border: round $primary;
          padding: 0 1; background: $surface; }
#dialog VerticalScroll { height: auto; max-height: 18; }
#dialog.safety { height: 100%; max-height: 40; }
#dialog.safety VerticalScroll { height: 1fr; max-height: 100%; }
#dialog ListView { height: auto; max-height: 14; }
#dialog .buttons { height: auto; align: center middle; }
#dialog Button { margin: 0 1; min-width: 8; }
"""


class ChatApp(App[None]):
    """``sealpost chat``: ``ChatApp(profile).run()``.

    A directory that holds no profile yet opens the linking screen
    (:mod:`sealpost.app.link`: this device joins an account the user has) instead of
    the unlock screen. ``opener`` opens the profile (default :meth:`Client.open`),
    ``linker`` links a new one (default :meth:`Client.link_new`), ``tz`` is the time zone
    times are shown in (default: the local one), ``now`` the clock for "today" and
    timers, ``notify_command`` the desktop notifier (None: the bell only), ``poll`` how
    long each receive waits."""

    CSS = CSS
    TITLE = "sealpost"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[Any]] = [
        Binding("ctrl+q", "quit", "quit", priority=True),
        Binding("f1", "help", "help", priority=True),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(
        self,
        profile: Path | str,
        *,
        opener: Opener | None = None,
        linker: Linker | None = None,
        tz: datetime.tzinfo | None = None,
        now: Callable[[], float] = time.time,
        notify_command: str | None = "notify-send",
        poll: float = 2.0,
    ) -> None:
        super().__init__()
        self.profile = Path(profile)
        self._opener = opener or _open
        self._linker = linker or link_new
        self._tz = tz
        self._now = now
        self._poll = poll
        self.notifier = Notifier(self.bell, command=notify_command)
        self.client: Client | None = None
        self.main: MainScreen | None = None
        self._pump: asyncio.Task[None] | None = None

    def now_ms(self) -> int:
        return int(self._now() * 1000)

    def on_mount(self) -> None:
        if Store.exists(self.profile):
            self.push_screen(UnlockScreen(self.profile, self._opener))
        else:
            self.push_screen(LinkScreen(self.profile, self._linker))

    async def on_unlock_screen_unlocked(self, event: UnlockScreen.Unlocked) -> None:
        self.client = event.client
        self.main = MainScreen(
            event.client,
            Settings.load(event.client),
            self.notifier,
            tz=self._tz,
            now_ms=self.now_ms,
        )
        await self.switch_screen(self.main)
        self._pump = asyncio.get_running_loop().create_task(self._stay_connected())

    async def _stay_connected(self) -> None:
        assert self.client is not None and self.main is not None
        backoff = 1.0
        down = False
        while True:
            try:
                events = await self.client.receive(wait=self._poll)
            except ClientError as exc:
                why: ClientError | None = None if isinstance(exc, ServerUnavailable) else exc
                if not down:  # once an outage: is it this device the server refuses?
                    with contextlib.suppress(ClientError):
                        why = await self.client.diagnose_refusal() or why
                down = True
                self.main.set_connected(False, why)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff, down = 1.0, False
            self.main.set_connected(True)
            for event in events:
                try:
                    await self.main.handle(event)
                except Exception:  # showing one event failed: the next ones still show
                    log.exception("the app could not show an event")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        await self.shutdown()
        self.exit()

    async def shutdown(self) -> None:
        """Stop receiving and close the profile (waits for sends under way)."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
            self._pump = None
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()

    async def on_unmount(self) -> None:
        await self.shutdown()


async def _open(profile: Path, passcode: str) -> Client:
    return await Client.open(profile, passcode, lock_timeout=1.0)
