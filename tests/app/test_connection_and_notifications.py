"""The app's notifications and its connection, against real server processes: a message
in a conversation that is not open rings and runs the desktop notifier with the
conversation's name only (the text once ``/notify-text on``; nothing once ``/notify
off`` or while the conversation is open); a server that goes away shows "connection
lost", and when it is back "connected" again, and what was written meanwhile is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app_helpers import chat_app, free_port, make_client, passcode_of, run, submit, unlock, until
from textual.widgets import Static

from integration.helpers import ServerProcess
from sealpost.app.compose import ComposeBox
from sealpost.app.messages import MessageList
from sealpost.client import Client, MessageReceived


def _fake_notify_send(root: Path) -> tuple[Path, Path]:
    """A stand-in for the desktop's notify-send (an external program): it writes its
    arguments, one per line, then a blank line."""
    out = root / "notified.txt"
    script = root / "notify-send"
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a"; done >> {out}\necho >> {out}\n')
    script.chmod(0o755)
    return script, out


def _notified(out: Path) -> list[list[str]]:
    if not out.exists():
        return []
    return [n.splitlines() for n in out.read_text().split("\n\n") if n.strip()]


def test_notifications_name_the_conversation_not_the_text(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob, carol = await make_client(server, tmp_path), await make_client(server, tmp_path)
        profile, name = alice.store.path, alice.username
        await alice.close()
        script, out = _fake_notify_send(tmp_path)
        app = chat_app(profile, notify_command=str(script))
        bells: list[int] = []
        app.notifier._bell = lambda: bells.append(1)  # the terminal's bell, counted
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                compose = main.query_one(ComposeBox)
                await bob.send(name, "the secret plan")
                await until(pilot, lambda: len(_notified(out)) == 1, "a notification")
                [first] = _notified(out)
                assert first == [
                    "--app-name=sealpost",
                    "--",
                    f"sealpost: {bob.username}",
                    "new message",
                ]
                assert bells == [1]
                await submit(pilot, compose, "/notify-text on")
                await bob.send(name, "a <b>second</b> one")
                await until(pilot, lambda: len(_notified(out)) == 2, "the second")
                assert _notified(out)[1][-1] == "a &lt;b&gt;second&lt;/b&gt; one"
                # while the conversation is open: shown, not notified
                await main.open(bob.username)
                await bob.send(name, "third")
                view = main.query_one(MessageList)
                await until(pilot, lambda: len(view.messages()) == 3, "the third shown")
                await submit(pilot, compose, "/notify off")
                await carol.send(name, "from carol")
                await until(
                    pilot,
                    lambda: any(
                        s.address == carol.username
                        for s in main.query_one("#conversations").summaries
                    ),  # type: ignore[attr-defined]
                    "carol's message",
                )
                await pilot.pause(0.5)
                assert len(_notified(out)) == 2 and bells == [1, 1]
            # the settings are kept in the profile
            reopened = await Client.open(profile, passcode_of(name))
            try:
                from sealpost.app.model import Settings

                settings = Settings.load(reopened)
                assert (settings.notify, settings.notify_text) == (False, True)
            finally:
                await reopened.close()
        finally:
            await bob.close()
            await carol.close()

    run(scenario())


def test_a_lost_connection_is_shown_and_what_was_written_goes_out_when_it_is_back(
    make_server: Any, tmp_path: Path
) -> None:
    srv = make_server("--port", free_port())

    async def scenario() -> None:
        alice = await make_client(srv, tmp_path)
        bob = await make_client(srv, tmp_path)
        await alice.send(bob.username, "before")
        profile, name = alice.store.path, alice.username
        await alice.close()
        app = chat_app(profile)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                status = main.query_one("#status-bar", Static)
                await until(pilot, lambda: "● connected" in str(status.render()), "connected")
                await main.open(bob.username)
                srv.stop()
                await until(
                    pilot, lambda: "connection lost" in str(status.render()), "connection lost"
                )
                await submit(pilot, main.query_one(ComposeBox), "written while offline")
                await until(pilot, lambda: "1 message waiting" in str(status.render()), "waiting")
                srv.start()
                await until(
                    pilot, lambda: "● connected" in str(status.render()), "connected again", 60
                )
                got: list[str] = []
                for _ in range(60):
                    got += [
                        e.message.text
                        for e in await bob.receive(wait=1)
                        if isinstance(e, MessageReceived)
                    ]
                    if "written while offline" in got:
                        break
                assert "written while offline" in got
                assert "waiting" not in str(status.render())
                await until(
                    pilot,
                    lambda: (
                        main.query_one(MessageList).messages()[-1].message.text
                        == "written while offline"
                    ),
                    "shown as sent",
                )
        finally:
            await bob.close()

    run(scenario())


def test_a_message_typed_offline_is_kept_through_a_restart_and_delivered_when_the_server_is_back(
    make_server: Any, tmp_path: Path
) -> None:
    srv = make_server("--port", free_port())

    async def scenario() -> None:
        alice = await make_client(srv, tmp_path)
        bob = await make_client(srv, tmp_path)
        await alice.send(bob.username, "before")
        profile, name = alice.store.path, alice.username
        await alice.close()
        srv.stop()
        try:
            # the app started while the server is down: the message cannot be encrypted
            # (no sender certificate yet), so it is kept in the profile
            async with chat_app(profile).run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                status = main.query_one("#status-bar", Static)
                await until(
                    pilot, lambda: "connection lost" in str(status.render()), "connection lost"
                )
                await main.open(bob.username)
                await submit(pilot, main.query_one(ComposeBox), "typed offline")
                view = main.query_one(MessageList)
                await until(
                    pilot,
                    lambda: view.messages()[-1].message.text == "typed offline",
                    "shown at once",
                )
                assert view.messages()[-1].message.status == "sending"
                await until(pilot, lambda: "1 message waiting" in str(status.render()), "waiting")
            # quit and started again, still offline: it is still there, still waiting
            async with chat_app(profile).run_test(size=(100, 30)) as pilot:
                main = await unlock(pilot, passcode_of(name))
                status = main.query_one("#status-bar", Static)
                assert "1 message waiting" in str(status.render())
                await main.open(bob.username)
                view = main.query_one(MessageList)
                last = view.messages()[-1].message
                assert (last.text, last.status) == ("typed offline", "sending")
                srv.start()
                await until(
                    pilot, lambda: "● connected" in str(status.render()), "connected again", 60
                )
                await until(pilot, lambda: "waiting" not in str(status.render()), "sent")
                await until(
                    pilot, lambda: view.messages()[-1].message.status == "sent", "shown sent"
                )
            got: list[str] = []
            for _ in range(10):
                events = await bob.receive(wait=1)
                got += [e.message.text for e in events if isinstance(e, MessageReceived)]
            assert got == ["before", "typed offline"]  # once
        finally:
            await bob.close()

    run(scenario())


def test_a_message_typed_offline_to_a_contact_whose_key_changed_is_shown_failed_with_why(
    make_server: Any, tmp_path: Path
) -> None:
    srv = make_server("--port", free_port())

    async def scenario() -> None:
        alice = await make_client(srv, tmp_path)
        bob = await make_client(srv, tmp_path)
        await alice.send(bob.username, "before")
        alice.verify(bob.username)
        profile, name = alice.store.path, alice.username
        await alice.close()
        await bob.close()
        srv.stop()
        async with chat_app(profile).run_test(size=(100, 30)) as pilot:
            main = await unlock(pilot, passcode_of(name))
            status = main.query_one("#status-bar", Static)
            await until(pilot, lambda: "connection lost" in str(status.render()), "offline")
            await main.open(bob.username)
            await submit(pilot, main.query_one(ComposeBox), "to the old key")
            view = main.query_one(MessageList)
            await until(pilot, lambda: "1 message waiting" in str(status.render()), "waiting")
            # meanwhile bob's key changes (as a lookup records it): alice had verified him
            client = main.client
            contact = next(c for c in client.contacts() if c.username == bob.username)
            with client.store.unit() as repos:
                repos.contacts.change_key(
                    bob.username, b"\x02" * 32, contact.account_key, contact.account_id
                )
            client._services.directory.changed()
            srv.start()
            await until(
                pilot, lambda: view.messages()[-1].message.status == "failed", "shown failed", 60
            )
            notes = [str(n.message) for n in pilot.app._notifications]
            assert any(n.startswith(f"not sent to {bob.username} (written offline)") for n in notes)
            assert "waiting" not in str(status.render())

    run(scenario())
