"""Snapshots (pytest-textual-snapshot) of the app's main screens at 80x24 and 120x40.

The scene is real: a server process, three profiles (alice, bob, carol) that talk, a
group, a file. To draw the same every run, the names are fixed, the keys come from a
seeded generator (the safety number is the same), every client's clock is one fixed
instant of today (the server accepts it: ``--auth-window``), and the app shows times in
UTC. Each test opens a fresh copy of alice's profile. The linking screen (a directory with
no profile) shows a link code made from keys of a seeded generator, through the app's
``linker`` seam, which never reaches a server. Update with ``--snapshot-update`` after
checking the new pictures (``snapshot_report.html``).
"""

from __future__ import annotations

import asyncio
import datetime
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from app_helpers import until
from textual.pilot import Pilot
from textual.widgets import Input

from integration.helpers import ServerProcess
from sealpost.app import ChatApp
from sealpost.app.link import LinkScreen
from sealpost.app.main import MainScreen
from sealpost.client import Client
from sealpost.client.store import TEST_PARAMS
from sealpost.protocol.linking import LinkSecrets, confirmation_code

SIZES = [(80, 24), (120, 40)]
UTC = datetime.UTC


def _instant() -> float:
    today = datetime.datetime.now(UTC).replace(hour=9, minute=30, second=0, microsecond=0)
    return today.timestamp()


T0 = _instant()


def clock() -> float:
    return T0


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


async def _drain(*clients: Client) -> None:
    for _ in range(3):
        for client in clients:
            await client.receive(wait=0.3)


async def _scene(server: ServerProcess, root: Path) -> Path:
    made = {}
    for seed, name in enumerate(("alice", "bob", "carol", "dave")):
        made[name] = await Client.create(
            root / name,
            "passcode-" + name,
            server_url=server.url,
            username=name,
            params=TEST_PARAMS,
            rng=seeded(seed + 1),
            clock=clock,
        )
    alice, bob, carol, dave = made.values()
    try:
        await bob.send("alice", "hi alice! are you coming tonight?")
        await _drain(alice)
        await alice.send("bob", "yes, at eight\nI'll bring the cake")
        await _drain(bob, alice)
        report = root / "plan.pdf"
        report.write_bytes(b"%PDF-1.4 not really\n" * 2000)
        await bob.send("alice", "the plan", file=report)
        await carol.send("alice", "did you get my message?")
        await dave.send("alice", "new phone who dis")
        await _drain(alice, bob, carol, dave)
        await alice.create_group("crew", ["bob", "carol"])
        await _drain(bob, carol)
        await bob.send("#crew", "hello crew")
        await carol.send("#crew", "hi all [b]not bold[/b]")
        await _drain(alice, bob, carol, alice)
    finally:
        for client in made.values():
            await client.close()
    return root / "alice"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("snapshot-scene")
    server = ServerProcess(
        root / "data",
        root / "logs",
        *("--rate-per-address", "0", "--rate-sealed-per-address", "0"),
        *("--auth-window", "172800"),
    ).start()
    try:
        yield asyncio.run(_scene(server, root / "profiles"))
    finally:
        server.stop()


@pytest.fixture
def app(template: Path, tmp_path: Path) -> ChatApp:
    profile = tmp_path / "alice"
    shutil.copytree(template, profile)
    (profile / "lock").unlink(missing_ok=True)

    async def opener(path: Path, passcode: str) -> Client:
        return await Client.open(path, passcode, clock=clock)

    return ChatApp(profile, opener=opener, tz=UTC, now=clock, notify_command=None, poll=0.3)


async def _unlocked(pilot: Pilot[Any]) -> MainScreen:
    box = pilot.app.screen.query_one("#passcode", Input)
    box.value = "passcode-alice"
    await pilot.press("enter")
    screen = await until(
        pilot,
        lambda: (
            isinstance(pilot.app.screen, MainScreen) and pilot.app.screen.ready and pilot.app.screen
        ),
        "unlock",
    )
    await until(pilot, lambda: screen.connected, "connected")
    return screen  # type: ignore[no-any-return]


@pytest.mark.parametrize("size", SIZES)
def test_unlock_screen(snap_compare: Any, app: ChatApp, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_conversation_list(snap_compare: Any, app: ChatApp, size: tuple[int, int]) -> None:
    async def before(pilot: Pilot[Any]) -> None:
        await _unlocked(pilot)

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_open_conversation(snap_compare: Any, app: ChatApp, size: tuple[int, int]) -> None:
    async def before(pilot: Pilot[Any]) -> None:
        main = await _unlocked(pilot)
        await main.open("bob")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_group_conversation(snap_compare: Any, app: ChatApp, size: tuple[int, int]) -> None:
    async def before(pilot: Pilot[Any]) -> None:
        main = await _unlocked(pilot)
        await main.open("#crew")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Any, app: ChatApp, size: tuple[int, int]) -> None:
    async def before(pilot: Pilot[Any]) -> None:
        await _unlocked(pilot)
        await pilot.press("f1")

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_safety_number_screen(snap_compare: Any, app: ChatApp, size: tuple[int, int]) -> None:
    async def before(pilot: Pilot[Any]) -> None:
        main = await _unlocked(pilot)
        await main.open("bob")
        await pilot.press("ctrl+t")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=before)


async def _shows_a_fixed_code(
    profile: Path, passcode: str, server: str, name: str, show: Callable[[str, str], None]
) -> Client:
    """A linker that shows the code of seeded keys (a fixed channel) and then waits, as
    the real one does for the other device (here forever)."""
    secrets = LinkSecrets.generate(seeded(7))
    code = secrets.code(bytes(range(16)), name)
    show(code.to_text(), confirmation_code(code, secrets.kem_public()))
    await asyncio.Event().wait()
    raise AssertionError("never linked")


def test_linking_screen(snap_compare: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the screen names the directory: the same every run
    app = ChatApp(Path("new-device"), linker=_shows_a_fixed_code, tz=UTC, now=clock,
                  notify_command=None)  # fmt: skip

    async def before(pilot: Pilot[Any]) -> None:
        screen = pilot.app.screen
        assert isinstance(screen, LinkScreen)
        for key, value in (
            ("#server", "https://chat.example.org"),
            ("#device", "laptop"),
            ("#new-passcode", "laptop passcode"),
            ("#again", "laptop passcode"),
        ):
            screen.query_one(key, Input).value = value
        await pilot.click("#link-start")
        await until(pilot, lambda: screen.code is not None, "the link code")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=before)
