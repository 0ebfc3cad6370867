"""The chat app against a real server process and real profiles, driven with Textual's
Pilot: unlock, the conversation list and unread counts, sending and receiving, groups,
files, key changes, alarms."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from app_helpers import chat_app, free_port, make_client, passcode_of, run, submit, unlock, until
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, Static

from integration.helpers import ServerProcess, swap_account
from sealpost.app.compose import ComposeBox
from sealpost.app.dialogs import ConfirmScreen, PromptScreen
from sealpost.app.main import MainScreen
from sealpost.app.messages import MessageList
from sealpost.app.screens import AlarmsScreen, GroupScreen, SafetyScreen
from sealpost.app.search import SearchScreen
from sealpost.app.sidebar import ConversationList
from sealpost.client import Client, GroupChanged, MessageReceived, TimerChanged, WrongPasscode


def _static_text(screen: object, selector: str) -> str:
    widget = screen.query_one(selector, Static)  # type: ignore[attr-defined]
    return str(widget.render())


def test_unread_count_rises_and_clears_and_a_message_goes_out(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await bob.send(name, "hi alice")
        await alice.close()
        app = chat_app(profile)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                listing = main.query_one(ConversationList)
                await until(pilot, lambda: listing.unread_of(bob.username) == 1, "1 unread")
                await bob.send(name, "are you there?")
                await until(pilot, lambda: listing.unread_of(bob.username) == 2, "2 unread")
                # opening the conversation reads it
                listing.focus()
                for _ in range(50):  # (the list is rebuilt as messages come)
                    listing.index = 0
                    await pilot.press("enter")
                    if main.current == bob.username:
                        break
                    await pilot.pause(0.1)
                assert main.current == bob.username
                await until(pilot, lambda: listing.unread_of(bob.username) == 0, "read")
                shown = [i.message.text for i in main.query_one(MessageList).messages()]
                assert shown == ["hi alice", "are you there?"]
                # a message while it is open is shown and stays read
                await bob.send(name, "third")
                await until(
                    pilot, lambda: len(main.query_one(MessageList).messages()) == 3, "third"
                )
                [summary] = await until(
                    pilot,
                    lambda: [s for s in listing.summaries if s.last and s.last.text == "third"],
                    "the list to show the third message",
                )
                assert summary.unread == 0
                # Enter sends; Shift+Enter is a new line
                compose = main.query_one(ComposeBox)
                compose.focus()
                await pilot.press("h", "i", "shift+enter", "b", "o", "b")
                assert compose.text == "hi\nbob"
                # a paste keeps its new lines (and does not send)
                app.post_message(events.Paste("\npasted\nlines"))  # as the terminal does
                await until(pilot, lambda: compose.text == "hi\nbob\npasted\nlines", "pasted")
                await pilot.press("enter")
                await until(pilot, lambda: compose.text == "", "compose cleared")
                got: list[str] = []
                for _ in range(45):
                    got += [
                        e.message.text
                        for e in await bob.receive(wait=1)
                        if isinstance(e, MessageReceived)
                    ]
                    if got:
                        break
                assert got == ["hi\nbob\npasted\nlines"]
                await until(
                    pilot,
                    lambda: (
                        [i.message.status for i in main.query_one(MessageList).messages()][-1]
                        == "delivered"
                    ),
                    "delivered",
                )
        finally:
            await bob.close()

    run(scenario())


def test_wrong_passcode_shows_tries_left_then_unlocks(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path, wipe_after=5)
        profile, name = alice.store.path, alice.username
        await alice.close()
        app = chat_app(profile)
        async with app.run_test(size=(80, 24)) as pilot:
            status = "#unlock-status"
            assert "5 tries left" in _static_text(app.screen, status)
            box = app.screen.query_one("#passcode", Input)
            box.value = "wrong"
            await pilot.press("enter")
            await until(pilot, lambda: "Wrong passcode" in _static_text(app.screen, status), "x")
            assert "4 tries left before this profile is wiped" in _static_text(app.screen, status)
            await unlock(pilot, passcode_of(name))

    run(scenario())


def test_the_fifth_wrong_passcode_shows_a_countdown(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        profile = alice.store.path
        await alice.close()
        for _ in range(4):  # the free tries
            with pytest.raises(WrongPasscode):
                await Client.open(profile, "wrong")
        app = chat_app(profile)
        async with app.run_test(size=(80, 24)) as pilot:
            box = app.screen.query_one("#passcode", Input)
            box.value = "wrong again"
            await pilot.press("enter")
            text = await until(
                pilot,
                lambda: (
                    "Wait" in _static_text(app.screen, "#unlock-status")
                    and _static_text(app.screen, "#unlock-status")
                ),
                "the countdown",
            )
            assert "Wrong passcode 5 times. Wait 30 s to try again." in text
            assert box.disabled
            await pilot.pause(1.2)
            assert "Wait 29 s" in _static_text(app.screen, "#unlock-status")

    run(scenario())


async def _listed(pilot: Pilot[Any], main: MainScreen, address: str) -> None:
    """Wait for ``address`` in the conversation list (its first message received)."""
    listing = main.query_one(ConversationList)
    await until(
        pilot,
        lambda: any(s.address == address and s.last for s in listing.summaries),
        f"{address} in the list",
    )


async def _events_until(client: Client, check: Any, what: str) -> list[Any]:
    seen: list[Any] = []
    for _ in range(90):
        seen += await client.receive(wait=0.5)
        if check(seen):
            return seen
    raise AssertionError(f"{what}: got {seen}")


def test_a_group_created_in_the_app_reaches_its_members(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob, carol = await make_client(server, tmp_path), await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await alice.close()
        app = chat_app(profile)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                compose = main.query_one(ComposeBox)
                await submit(pilot, compose, f"/group create crew {bob.username} {carol.username}")
                await until(pilot, lambda: main.current == "#crew", "the group opened")
                await submit(pilot, compose, "hello crew")
                for member in (bob, carol):
                    seen = await _events_until(
                        member,
                        lambda s: any(isinstance(e, MessageReceived) for e in s),
                        "the group message",
                    )
                    assert any(isinstance(e, GroupChanged) and e.name == "crew" for e in seen)
                    [msg] = [e.message for e in seen if isinstance(e, MessageReceived)]
                    assert (msg.peer, msg.text, msg.author) == ("crew", "hello crew", name)
                # the group screen lists the members
                await pilot.press("ctrl+g")
                view = await until(
                    pilot,
                    lambda: (
                        isinstance(app.screen, GroupScreen)
                        and _static_text(app.screen, "#group-view")
                    ),
                    "the group screen",
                )
                assert bob.username in view and carol.username in view and "admin" in view
                await pilot.press("escape")
                await bob.send("#crew", "hi from bob")
                await until(
                    pilot,
                    lambda: (
                        [i.message.text for i in main.query_one(MessageList).messages()][-1]
                        == "hi from bob"
                    ),
                    "bob's group message",
                )
        finally:
            await bob.close()
            await carol.close()

    run(scenario())


def test_a_file_is_sent_and_a_received_one_saved(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await bob.send(name, "hello")
        await alice.close()
        outgoing = tmp_path / "report.txt"
        outgoing.write_bytes(b"the report\n" * 1000)
        incoming = tmp_path / "photo.bin"
        incoming.write_bytes(bytes(range(256)) * 400)
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        app = chat_app(profile)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                await _listed(pilot, main, bob.username)
                await main.open(bob.username)
                compose = main.query_one(ComposeBox)
                await submit(pilot, compose, f"/file {outgoing} the report")
                seen = await _events_until(
                    bob,
                    lambda s: any(isinstance(e, MessageReceived) for e in s),
                    "the file",
                )
                [msg] = [e.message for e in seen if isinstance(e, MessageReceived)]
                assert msg.text == "the report" and msg.attachment is not None
                saved = await bob.save_attachment(msg.id, tmp_path / "bob-got")
                assert saved.read_bytes() == outgoing.read_bytes()
                await bob.send(name, "a photo", file=incoming)
                messages = main.query_one(MessageList)
                await until(
                    pilot,
                    lambda: (
                        messages.messages()[-1].message.attachment is not None
                        and not messages.messages()[-1].message.outgoing
                    ),
                    "the photo",
                )
                shown = str(messages.messages()[-1].render())
                assert "photo.bin" in shown and "s: save" in shown
                await submit(pilot, compose, f"/save {downloads}")
                await until(pilot, lambda: (downloads / "photo.bin").exists(), "the saved file")
                assert (downloads / "photo.bin").read_bytes() == incoming.read_bytes()
        finally:
            await bob.close()

    run(scenario())


def test_peer_text_is_shown_literally(server: ServerProcess, tmp_path: Path) -> None:
    hostile = (
        "\x1b[2J\x1b]0;pwned\x07[b red]bold?[/] [@click=app.quit]quit[/]\n"
        "[12:00] alice: send me your passcode\u202e"
    )

    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await bob.send(name, hostile)
        await alice.close()
        app = chat_app(profile)
        try:
            async with app.run_test(size=(120, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                await _listed(pilot, main, bob.username)
                await main.open(bob.username)
                [item] = main.query_one(MessageList).messages()
                rendered = item.render()
                lines = rendered.plain.split("\n")
                # the markup is text, not style; the escapes are visible; the forged line
                # is indented under bob's header, not a header of its own
                assert lines[1] == (
                    "  \\x1b[2J\\x1b]0;pwned\\x07[b red]bold?[/] [@click=app.quit]quit[/]"
                )
                assert lines[2] == "  [12:00] alice: send me your passcode\\u202e"
                assert lines[0].endswith(bob.username)
                # styled: the time and the author only; nothing from the body is a link
                assert [span.end for span in rendered.spans] == [5, 6 + len(bob.username)]
                assert "@click" not in repr(rendered.spans)
                # what reaches the screen is the same text
                svg = app.export_screenshot()
                assert "[b&#160;red]bold?[/]" in svg and "\\x1b[2J" in svg
                # and the list's preview is one escaped line
                preview = str(main.query_one(ConversationList).rows[0].render())
                assert "\\x1b[2J" in preview and "\x1b" not in preview
                assert app.is_running  # the [@click=app.quit] did nothing
        finally:
            await bob.close()

    run(scenario())


def test_a_key_change_is_shown_and_blocks_sending_to_a_verified_contact(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob, new_bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await alice.send(bob.username, "before")
        alice.verify(bob.username)
        await alice.close()
        swap_account(server, bob.username, new_bob.username)
        new_bob.username = bob.username
        app = chat_app(profile)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                await main.open(bob.username)
                # seen when the client re-checks its contacts against the log on connecting
                await until(pilot, lambda: main.query_one("#key-banner").display, "the banner")
                banner = _static_text(main, "#key-banner")
                assert f"{bob.username}'s safety number changed" in banner
                assert "sending is blocked until you verify again" in banner
                compose = main.query_one(ComposeBox)
                await submit(pilot, compose, "must not be sent")
                await pilot.pause(0.5)
                assert "must not be sent" not in [m.text for m in main.client.history(bob.username)]
                # the safety number screen: comparing and verifying lifts the block
                await pilot.press("ctrl+t")
                await until(pilot, lambda: isinstance(app.screen, SafetyScreen), "safety screen")
                digits = main.client.safety_number(bob.username)
                shown = app.export_screenshot()
                assert all(digits[i : i + 5] in shown for i in range(0, 60, 5))
                await pilot.press("v")
                await until(pilot, lambda: isinstance(app.screen, MainScreen), "back")
                assert not main.query_one("#key-banner").display
                await submit(pilot, compose, "verified again")
                seen = await _events_until(
                    new_bob,
                    lambda s: any(isinstance(e, MessageReceived) for e in s),
                    "the message after verifying",
                )
                texts = [e.message.text for e in seen if isinstance(e, MessageReceived)]
                assert texts == ["verified again"]
        finally:
            await bob.close()
            await new_bob.close()

    run(scenario())


def test_an_alarm_shows_a_banner_until_dismissed(make_server: Any, tmp_path: Path) -> None:
    srv = make_server("--port", free_port())

    async def scenario() -> None:
        alice = await make_client(srv, tmp_path)
        bob = await make_client(srv, tmp_path)
        profile, name = alice.store.path, alice.username
        await alice.send(bob.username, "before")
        await alice.close()
        await bob.close()
        srv.stop()
        shutil.rmtree(srv.data)  # a new data directory: new server and log keys
        srv.start()
        app = chat_app(profile)
        async with app.run_test(size=(100, 30)) as pilot:
            main = await unlock(pilot, passcode_of(name))
            banner = main.query_one("#alarm-banner")
            await until(pilot, lambda: banner.display, "the alarm banner")
            assert "1 key-transparency alarm" in _static_text(main, "#alarm-banner")
            assert main.connected is False
            await pilot.press("ctrl+b")
            await until(pilot, lambda: isinstance(app.screen, AlarmsScreen), "alarms screen")
            listed = _static_text(app.screen, "#alarm-list")
            assert "log" in listed and "#" in listed
            await pilot.click("#dismiss")
            await until(pilot, lambda: isinstance(app.screen, MainScreen), "back")
            assert not banner.display
            assert main.client.alarms() == []

    run(scenario())


def test_search_finds_a_message_and_not_once_it_expired(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await bob.send(name, "a lasting note about apples")
        await bob.set_timer(name, 4)
        await bob.send(name, "the secret word is pineapple")
        await alice.close()
        app = chat_app(profile)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                await _listed(pilot, main, bob.username)
                await until(pilot, lambda: main.client.search("pineapple"), "the message indexed")
                main.query_one(ConversationList).focus()
                await pilot.press("ctrl+f")
                await until(pilot, lambda: isinstance(app.screen, SearchScreen), "search")
                box = app.screen.query_one("#search-input", Input)
                box.value = "pineapple"
                box.focus()
                await pilot.press("enter")
                await until(
                    pilot,
                    lambda: "1 found" in _static_text(app.screen, "#search-status"),
                    "one hit",
                )
                await pilot.press("enter")  # open it
                await until(pilot, lambda: isinstance(app.screen, MainScreen), "back")
                chosen = main.query_one(MessageList).selected
                assert chosen is not None and chosen.message.text.endswith("pineapple")
                # after its timer the message and its index entry are gone
                await pilot.pause(4.5)
                assert main.client.search("pineapple") == []
                assert [h.message.text for h in main.client.search("apples")] == [
                    "a lasting note about apples"
                ]
                await pilot.press("ctrl+f")
                await until(pilot, lambda: isinstance(app.screen, SearchScreen), "search")
                box = app.screen.query_one("#search-input", Input)
                box.value = "pineapple"
                box.focus()
                await pilot.press("enter")
                await until(
                    pilot,
                    lambda: "0 found" in _static_text(app.screen, "#search-status"),
                    "no hit",
                )
        finally:
            await bob.close()

    run(scenario())


def test_deleted_and_expired_messages_leave_placeholders_after_a_restart(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await bob.send(name, "keep this")
        doomed = await bob.send(name, "delete this")
        await bob.set_timer(name, 3)
        await bob.send(name, "vanish this")
        await bob.set_timer(name, 0)
        await bob.delete_for_everyone(name, doomed.id)
        await alice.close()
        try:
            async with chat_app(profile).run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                await until(
                    pilot,
                    lambda: [m.gone for m in main.client.page(bob.username)][1:2] == ["deleted"],
                    "bob's deletion",
                )
                await main.open(bob.username)
                view = main.query_one(MessageList)
                await submit(pilot, main.query_one(ComposeBox), "mine, soon deleted")
                await until(pilot, lambda: len(view.messages()) == 4, "the message sent")
                view.focus()
                await pilot.press("end", "d")
                await until(pilot, lambda: app_screen_is_confirm(pilot), "the confirmation")
                await pilot.press("y")
                await until(pilot, lambda: view.messages()[-1].gone == "deleted", "deleted")
                await until(pilot, lambda: view.messages()[2].gone == "expired", "expired")
            # a new run of the app on the same profile: the placeholders are stored
            async with chat_app(profile).run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                await main.open(bob.username)
                view = main.query_one(MessageList)
                shown = [item.render().plain for item in view.messages()]
                assert len(shown) == 4 and shown[0].endswith("keep this")
                assert [s.split(" ", 1)[1] for s in shown[1:]] == [
                    "(this message was deleted)",
                    "(this message was expired)",
                    "(this message was deleted)",
                ]
                assert [i.message.text for i in view.messages()] == ["keep this", "", "", ""]
                [summary] = [
                    s
                    for s in main.query_one(ConversationList).rows
                    if s.summary.address == bob.username
                ]
                assert "(message deleted)" in summary.render().plain
                assert [main.client.search(w) for w in ("vanish", "delete", "soon")] == [[], [], []]
                # bob's side: his deletion is a placeholder there too
                assert [m.gone for m in bob.page(name)][:3] == [None, "deleted", "expired"]
        finally:
            await bob.close()

    run(scenario())


def app_screen_is_confirm(pilot: Pilot[Any]) -> bool:
    return isinstance(pilot.app.screen, ConfirmScreen)


def test_a_timer_set_in_the_app_reaches_the_contact(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        await alice.send(bob.username, "hi")
        profile, name = alice.store.path, alice.username
        await alice.close()
        try:
            async with chat_app(profile).run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                await main.open(bob.username)
                compose = main.query_one(ComposeBox)
                await submit(pilot, compose, "/timer 1h")
                await until(pilot, lambda: "⏱ 1h" in _static_text(main, "#chat-title"), "title")
                seen = await _events_until(
                    bob, lambda s: any(isinstance(e, TimerChanged) for e in s), "the timer"
                )
                [change] = [e for e in seen if isinstance(e, TimerChanged)]
                assert (change.seconds, change.by) == (3600, name)
                assert bob.timer(name) == 3600
                await submit(pilot, compose, "/timer nonsense")  # refused, nothing changes
                await pilot.pause(0.3)
                assert main.client.timer(bob.username) == 3600
        finally:
            await bob.close()

    run(scenario())


def test_n_starts_a_chat_with_a_new_username(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        carol = await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await alice.close()
        try:
            async with chat_app(profile).run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                assert main.query_one(ConversationList).summaries == []
                main.query_one(ConversationList).focus()
                for who in ("nobody-here", carol.username):
                    await pilot.press("n")
                    box = await until(
                        pilot,
                        lambda: (
                            isinstance(app_screen := pilot.app.screen, PromptScreen)
                            and app_screen.query_one(Input)
                        ),
                        "the prompt",
                    )
                    box.value = who
                    await pilot.press("enter")
                    await until(pilot, lambda: isinstance(pilot.app.screen, MainScreen), "back")
                    if who == "nobody-here":
                        await pilot.pause(0.5)
                        assert main.current is None  # no such user: nothing opened
                await until(pilot, lambda: main.current == carol.username, "the new chat")
                await submit(pilot, main.query_one(ComposeBox), "hello carol")
                seen = await _events_until(
                    carol, lambda s: any(isinstance(e, MessageReceived) for e in s), "it"
                )
                assert [e.message.text for e in seen if isinstance(e, MessageReceived)] == [
                    "hello carol"
                ]
        finally:
            await carol.close()

    run(scenario())


def test_the_new_chat_button_starts_a_chat_by_mouse(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        carol = await make_client(server, tmp_path)
        await carol.close()
        profile, name = alice.store.path, alice.username
        await alice.close()
        async with chat_app(profile).run_test(size=(80, 24)) as pilot:
            main = await unlock(pilot, passcode_of(name))
            assert not isinstance(pilot.app.screen, PromptScreen)
            assert await pilot.click("#new-chat")  # the sidebar's button, at 80x24
            box = await until(
                pilot,
                lambda: (
                    isinstance(app_screen := pilot.app.screen, PromptScreen)
                    and app_screen.query_one(Input)
                ),
                "the prompt",
            )
            box.value = carol.username
            await pilot.press("enter")
            await until(pilot, lambda: main.current == carol.username, "the new chat")
            assert [s.address for s in main.query_one(ConversationList).summaries] == [
                carol.username
            ]

    run(scenario())
