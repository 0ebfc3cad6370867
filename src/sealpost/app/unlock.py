"""The unlock screen: the passcode, and what a wrong one costs.

The store slows guessing (the fifth wrong passcode in a row and each after it make the
next try wait: 30 s, 1 min, 5 min, 15 min, then 1 h) and, for a profile made with
``--wipe-after N``, destroys its key at the Nth. This screen shows the wait as a
countdown (the passcode box is disabled until it ends) and the tries left before the
wipe, read from the store's counter (:mod:`sealpost.client.unlock`) and from its errors
(:class:`WrongPasscode`, :class:`TooManyAttempts`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, Static

from sealpost.app.text import peer
from sealpost.client import Client, ProfileBusy, StoreError, WrongPasscode
from sealpost.client.store import ProfileWiped, TooManyAttempts
from sealpost.client.unlock import unlock_state

__all__ = ["Opener", "UnlockScreen"]

#: How the screen opens a profile (the app passes one that fixes the clock in tests).
Opener = Callable[[Path, str], Awaitable[Client]]


class UnlockScreen(Screen[None]):
    class Unlocked(Message):
        def __init__(self, client: Client) -> None:
            super().__init__()
            self.client = client

    def __init__(self, profile: Path, opener: Opener) -> None:
        super().__init__(id="unlock")
        self._profile = profile
        self._opener = opener
        self._retry_at = 0.0  # time.monotonic() when the next try is allowed
        self._tries_left: int | None = None
        self._failures = 0
        self._countdown: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="unlock-box"):
            yield Static(Text("sealpost", style="bold"), id="unlock-title")
            yield Static(peer(f"profile: {self._profile.name}", "dim"))
            yield Input(password=True, placeholder="passcode", id="passcode")
            yield Static(Text(""), id="unlock-status")

    def on_mount(self) -> None:
        try:
            state = unlock_state(self._profile)
        except StoreError as exc:
            self._status(Text(str(exc), style="red"))
            self.query_one(Input).disabled = True
            return
        self._failures = state.failures
        self._tries_left = state.tries_left
        if state.retry_after > 0:
            self._wait(state.retry_after)
        else:
            self._status(self._counter_text())
        self.query_one(Input).focus()

    def _status(self, text: Text) -> None:
        self.query_one("#unlock-status", Static).update(text)

    def _counter_text(self, head: str = "") -> Text:
        text = Text(head, style="red" if head else "", end="")
        if self._tries_left is not None:
            if text:
                text.append("\n")
            left = self._tries_left
            style = "bold red" if left <= 3 else "yellow"
            text.append(
                f"{left} {'try' if left == 1 else 'tries'} left before this profile is wiped",
                style=style,
            )
        return text

    def _wait(self, seconds: float) -> None:
        self._retry_at = time.monotonic() + seconds
        self.query_one(Input).disabled = True
        if self._countdown is not None:
            self._countdown.stop()
        self._countdown = self.set_interval(0.5, self._tick)
        self._tick()

    def _tick(self) -> None:
        left = self._retry_at - time.monotonic()
        box = self.query_one(Input)
        if left <= 0:
            if self._countdown is not None:
                self._countdown.stop()
                self._countdown = None
            box.disabled = False
            box.focus()
            self._status(self._counter_text("You may try again."))
            return
        self._status(
            self._counter_text(
                f"Wrong passcode {self._failures} times. Wait {math.ceil(left)} s to try again."
            )
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value or event.input.disabled:
            return
        event.input.disabled = True
        self._status(Text("unlocking…", style="dim"))
        self._try(event.value)

    @work(exclusive=True)
    async def _try(self, passcode: str) -> None:
        box = self.query_one(Input)
        try:
            client = await self._opener(self._profile, passcode)
        except WrongPasscode as exc:
            box.value = ""
            self._failures = exc.failures
            if self._tries_left is not None:
                self._tries_left = max(0, self._tries_left - 1)
            if exc.retry_after > 0:
                self._wait(exc.retry_after)
            else:
                box.disabled = False
                box.focus()
                self._status(self._counter_text(f"Wrong passcode ({exc.failures} in a row)."))
            return
        except TooManyAttempts as exc:
            box.value = ""
            self._wait(exc.retry_after)
            return
        except ProfileWiped:
            self._status(Text("This profile was wiped after too many wrong passcodes.", "red"))
            return
        except ProfileBusy as exc:
            box.disabled = False
            self._status(peer(exc, "red"))
            return
        except (StoreError, OSError) as exc:
            box.disabled = False
            self._status(peer(f"cannot open the profile: {exc}", "red"))
            return
        box.value = ""
        self.post_message(self.Unlocked(client))
