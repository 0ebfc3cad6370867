"""Helpers for the chat app's tests: real profiles, and driving
:class:`sealpost.app.ChatApp` with Textual's Pilot (``App.run_test``)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from integration.helpers import ServerProcess, unique_name
from sealpost.app import ChatApp
from sealpost.app.compose import ComposeBox
from sealpost.app.main import MainScreen
from sealpost.client import Client
from sealpost.client.store import TEST_PARAMS

TIMEOUT = 45.0


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def passcode_of(name: str) -> str:
    return "passcode-" + name


async def make_client(
    server: ServerProcess, root: Path, name: str | None = None, **kwargs: Any
) -> Client:
    name = name or unique_name()
    return await Client.create(
        root / name,
        passcode_of(name),
        server_url=server.url,
        username=name,
        params=TEST_PARAMS,
        **kwargs,
    )


async def until(
    pilot: Pilot[Any], check: Callable[[], object], what: str, timeout: float = TIMEOUT
) -> Any:
    """Let the app run until ``check()`` is true (returns its value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def unlock(pilot: Pilot[Any], passcode: str) -> MainScreen:
    box = pilot.app.screen.query_one("#passcode", Input)
    box.value = passcode
    box.focus()
    await pilot.press("enter")
    screen = await until(
        pilot,
        lambda: (
            isinstance(pilot.app.screen, MainScreen) and pilot.app.screen.ready and pilot.app.screen
        ),
        "unlock",
    )
    assert isinstance(screen, MainScreen)
    return screen


def chat_app(profile: Path, **kwargs: Any) -> ChatApp:
    kwargs.setdefault("notify_command", None)
    kwargs.setdefault("poll", 0.3)
    return ChatApp(profile, **kwargs)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def submit(pilot: Pilot[Any], compose: ComposeBox, text: str) -> None:
    """Type ``text`` in the compose box and press Enter (a message, or a /command)."""
    compose.focus()
    compose.load_text(text)
    compose.move_cursor(compose.document.end)
    await pilot.press("enter")
    await until(pilot, lambda: compose.text == "", "the compose box to be sent")
