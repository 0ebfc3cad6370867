"""A send whose answer was lost is sent again with the same bytes and the same send ids, and
the relay stores it once (a real server process): the recipient's queue holds one copy.
An outbox row from before send ids (an old client's bytes) still goes, as before: stored
twice, and the recipient keeps one message."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from helpers import ServerProcess
from test_client_e2e import make_client, run, texts
from test_client_outbox import commit_send

from sealpost.client import Client


async def stored_then_answer_lost(alice: Client, peer: str, text: str, *, old: bool) -> None:
    """Commit a send, hand its outbox bytes to the server and wait until it stored them,
    then stop before the answer is settled, as a crash (or a socket dropped) right after
    the server stored it would: the outbox row is still there. ``old``: the row as a client
    from before send ids wrote it (no seed)."""
    _, outbox_id = await commit_send(alice, peer, text)
    [(row_id, [sent])] = alice.store.repos().outbox.pending()
    assert row_id == outbox_id and len(sent.send_id) == 16  # drawn at the commit, kept
    if old:
        sent = dataclasses.replace(sent, send_id=b"")
        with alice.store.unit() as repos:
            repos.outbox.settle(outbox_id, [sent])
    answer = await alice._services.sending.delivery.submit(sent)
    assert await answer == 1  # stored; the client never learns it
    await alice.close()


async def queued_at_relay(client: Client) -> int:
    """How many messages the relay holds for the device (read over HTTP, acking none)."""
    doc = await client._ctx.transport.request("GET", "/v1/messages")
    return len(doc["messages"])


def test_a_resend_after_a_lost_answer_is_queued_once(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        alice_profile, alice_name, bob_name = alice.store.path, alice.username, bob.username
        try:
            await stored_then_answer_lost(alice, bob_name, "lost answer", old=False)
            assert await queued_at_relay(bob) == 1
            alice = await Client.open(alice_profile, "passcode-" + alice_name)
            assert await alice.flush_outbox() == 1  # the same bytes again: answered "stored"
            assert alice.store.repos().outbox.pending() == []
            assert [m.status for m in alice.history(bob_name)][-1] == "sent"
            assert await queued_at_relay(bob) == 1  # not stored twice
            assert texts(await bob.receive(wait=5)) == [(alice_name, "lost answer")]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_an_old_outbox_row_without_send_ids_is_resent_as_before(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        alice_profile, alice_name, bob_name = alice.store.path, alice.username, bob.username
        try:
            await stored_then_answer_lost(alice, bob_name, "old client", old=True)
            alice = await Client.open(alice_profile, "passcode-" + alice_name)
            assert await alice.flush_outbox() == 1
            assert [m.status for m in alice.history(bob_name)][-1] == "sent"
            assert await queued_at_relay(bob) == 2  # no send ids: the relay cannot tell
            assert texts(await bob.receive(wait=5)) == [(alice_name, "old client")]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())
