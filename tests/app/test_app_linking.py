"""Linking from the app, both ends, against a real server process and real profiles: a
new device's app shows the link code (text and QR) and the confirmation code, and opens
the account's conversations once an existing device accepts; an existing device's app
accepts a link with ``/link CODE`` after showing the new device's name and code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from app_helpers import chat_app, make_client, passcode_of, run, unlock, until
from textual.widgets import Input, ListView, Static

from integration.helpers import ServerProcess
from sealpost.app.compose import ComposeBox
from sealpost.app.dialogs import ConfirmScreen
from sealpost.app.link import LinkScreen
from sealpost.app.main import MainScreen
from sealpost.app.screens import DevicesScreen
from sealpost.app.sidebar import ConversationList
from sealpost.client import Client
from sealpost.client.store import TEST_PARAMS


async def _linker(
    profile: Path, passcode: str, server: str, name: str, show: Callable[[str, str], None]
) -> Client:
    return await Client.link_new(
        profile, passcode, server_url=server, device_name=name, show=show, params=TEST_PARAMS
    )


def test_a_new_device_links_to_an_account_from_the_app(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        await alice.send(bob.username, "hi bob")
        app = chat_app(tmp_path / "laptop", linker=_linker)
        try:
            async with app.run_test(size=(100, 50)) as pilot:
                screen = app.screen
                assert isinstance(screen, LinkScreen)
                # a short passcode is refused before anything is asked of the server
                for key, value in (
                    ("#server", server.url),
                    ("#device", "laptop"),
                    ("#new-passcode", "short"),
                    ("#again", "short"),
                ):
                    screen.query_one(key, Input).value = value
                await pilot.click("#link-start")
                assert "at least" in str(screen.query_one("#link-status", Static).render())
                assert screen.code is None
                screen.query_one("#new-passcode", Input).value = "laptop passcode"
                again = screen.query_one("#again", Input)
                again.value = "laptop passcode"
                again.focus()
                await pilot.press("enter")  # Enter in the last box starts it too
                code = await until(pilot, lambda: screen.code, "the link code")
                shown = str(screen.query_one("#link-code", Static).render())
                assert f"/link {code}" in shown and screen.confirmation in shown
                assert "█" in shown or "▀" in shown  # the QR code
                asked: list[tuple[str, str]] = []

                def confirm(name: str, confirmation: str) -> bool:
                    asked.append((name, confirmation))
                    return confirmation == screen.confirmation

                device_id = await alice.link_accept(code, confirm)
                assert asked == [("laptop", screen.confirmation)]
                main = await until(
                    pilot,
                    lambda: isinstance(app.screen, MainScreen) and app.screen.ready and app.screen,
                    "the conversations",
                )
                assert main.client.username == alice.username
                assert main.client.device_id == device_id != alice.device_id
                listing = main.query_one(ConversationList)
                assert bob.username in [s.address for s in listing.summaries]
        finally:
            await alice.close()
            await bob.close()
        # the profile was made: the next start asks for its passcode
        async with chat_app(tmp_path / "laptop").run_test(size=(80, 24)) as pilot:
            again = await unlock(pilot, "laptop passcode")
            assert again.client.username == alice.username

    run(scenario())


def test_an_existing_device_accepts_a_link_in_the_app(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await alice.close()
        codes: list[tuple[str, str]] = []
        app = chat_app(profile)
        async with app.run_test(size=(100, 30)) as pilot:
            main = await unlock(pilot, passcode_of(name))
            joining = asyncio.create_task(
                _linker(
                    tmp_path / "phone",
                    "phone passcode",
                    server.url,
                    "phone",
                    lambda code, confirmation: codes.append((code, confirmation)),
                )
            )
            try:
                await until(pilot, lambda: codes, "the new device's code")
                [(code, confirmation)] = codes
                compose = main.query_one(ComposeBox)
                compose.focus()
                compose.load_text(f"/link {code}")
                await pilot.press("enter")
                question = await until(
                    pilot,
                    lambda: (
                        isinstance(app.screen, ConfirmScreen)
                        and str(app.screen.query_one(Static).render())
                    ),
                    "the confirmation",
                )
                assert "phone" in question and confirmation in question
                await pilot.press("y")
                phone = await asyncio.wait_for(joining, 45)
            finally:
                joining.cancel()
            try:
                assert phone.username == name and phone.device_id != main.client.device_id
                # the devices screen lists it, and removes it
                main.query_one(ComposeBox).blur()
                await pilot.press("ctrl+e")
                listing = await until(
                    pilot,
                    lambda: (
                        isinstance(app.screen, DevicesScreen)
                        and len(app.screen.query_one(ListView)) == 2
                        and app.screen.query_one(ListView)
                    ),
                    "two devices listed",
                )
                rows = [str(item.query_one(Static).render()) for item in listing.children]
                assert any("phone" in r for r in rows) and any("(this device)" in r for r in rows)
                listing.index = next(i for i, r in enumerate(rows) if "phone" in r)
                await pilot.press("r")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "confirm")
                await pilot.press("y")
                await until(pilot, lambda: len(listing) == 1, "the phone removed")
                assert [d["name"] for d in await main.client.devices()] != ["phone"]
                assert len(await main.client.devices()) == 1
            finally:
                await phone.close()

    run(scenario())
