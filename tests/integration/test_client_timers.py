"""Disappearing messages and delete for everyone, pairwise, against a real server."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import ServerProcess
from test_client_e2e import make_client, run, texts

from sealpost.client import MessageDeleted, TimerChanged


def test_timer_is_carried_and_messages_expire_on_both_sides(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        try:
            await alice.send(bob.username, "before the timer")
            await bob.receive(wait=10)
            await alice.set_timer(bob.username, 2)
            events = await bob.receive(wait=10)
            changed = [e for e in events if isinstance(e, TimerChanged)]
            assert [(e.peer, e.seconds, e.by) for e in changed] == [
                (alice.username, 2, alice.username)
            ]
            assert bob.timer(alice.username) == 2
            sent = await alice.send(bob.username, "this disappears")
            assert sent.expires_at is not None
            got = await bob.receive(wait=10)
            assert texts(got) == [(alice.username, "this disappears")]
            # a reply carries the timer too
            await bob.send(alice.username, "so does this")
            await alice.receive(wait=10)
            assert [m.text for m in alice.history(bob.username)] == [
                "before the timer",
                "this disappears",
                "so does this",
            ]
            time.sleep(2.2)
            for client, peer in ((alice, bob.username), (bob, alice.username)):
                assert [m.text for m in client.history(peer)] == ["before the timer"]
                rows = client.store.read().execute(
                    "SELECT count(*) FROM messages WHERE body LIKE '%this%'"
                )
                assert rows.fetchone()[0] == 0  # gone from the store, not just hidden
            await alice.set_timer(bob.username, 0)
            await bob.receive(wait=10)
            assert bob.timer(alice.username) == 0
            await alice.send(bob.username, "kept again")
            await bob.receive(wait=10)
            time.sleep(0.5)
            assert bob.history(alice.username)[-1].expires_at is None
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_delete_for_everyone(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        try:
            keep = await alice.send(bob.username, "keep me")
            oops = await alice.send(bob.username, "oops, wrong chat")
            await bob.receive(wait=10)
            assert len(bob.history(alice.username)) == 2
            # bob cannot delete alice's message, nor one that is not his
            reply = await bob.send(alice.username, "?")
            await alice.receive(wait=10)
            try:
                await bob.delete_for_everyone(alice.username, oops.id)
            except Exception as exc:
                assert "sent" in str(exc)
            else:
                raise AssertionError("deleting someone else's message was allowed")
            await alice.delete_for_everyone(bob.username, oops.id)
            events = await bob.receive(wait=10)
            deleted = [e for e in events if isinstance(e, MessageDeleted)]
            assert [(e.message_id, e.by) for e in deleted] == [(oops.id, alice.username)]
            assert [m.id for m in bob.history(alice.username)] == [keep.id, reply.id]
            assert [m.id for m in alice.history(bob.username)] == [keep.id, reply.id]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())
