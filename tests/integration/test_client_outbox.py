"""Sends a crash left in the outbox go again through the one settle path of live sends
(services/delivery.py), against a real server process: the same bytes are sent once more
and the message becomes ``sent``; a resend the server refuses for an outdated device list
is encrypted anew for the current one, as a live send would be."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import ServerProcess
from test_client_e2e import make_client, run, texts
from test_client_groups import link

from sealpost.client import Client
from sealpost.client.rows import Outgoing
from sealpost.protocol.content import TextContent


async def commit_send(alice: Client, peer: str, text: str) -> tuple[bytes, int]:
    """Run the front of the send pipeline up to its commit (ratchet steps, history row,
    outbox row) and no further; the message id and the outbox row's id."""
    content = TextContent(
        alice._ctx.rng(16), alice._ctx.now_ms(), alice._ctx.delivery_token, alice.username, text
    )
    future = asyncio.get_running_loop().create_future()
    item = Outgoing(peer, content, future, store=True, transcript=True)
    sending = alice._services.sending
    cert = await sending.sender_certificate()
    async with alice._ctx.lock:
        prepared = await sending.prepare(item, cert)
        outbox_id = sending._commit(prepared)
    return content.message_id, outbox_id


async def commit_then_crash(alice: Client, peer: str, text: str) -> bytes:
    """:func:`commit_send`, then stop as a crash would: nothing reached the server."""
    message_id, _ = await commit_send(alice, peer, text)
    profile = alice.store.path
    await alice.close()
    assert profile.exists()
    return message_id


def outbox_rows(client: Client) -> int:
    return len(client.store.repos().outbox.pending())


async def settled(client: Client, peer: str, text: str, timeout: float = 20) -> str:
    """The status of ``text`` once it is no longer ``sending`` (or ``sending``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = next(m.status for m in client.history(peer) if m.text == text)
        if status != "sending" or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.1)


def test_a_send_committed_before_a_crash_is_sent_again_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        alice_profile, alice_name, bob_name = alice.store.path, alice.username, bob.username
        try:
            await alice.send(bob_name, "before")
            message_id = await commit_then_crash(alice, bob_name, "in the outbox")
            alice = await Client.open(alice_profile, "passcode-" + alice_name)
            assert [m.status for m in alice.history(bob_name)][-1] == "sending"
            assert outbox_rows(alice) == 1
            assert texts(await bob.receive(wait=3)) == [(alice_name, "before")]

            assert await alice.flush_outbox() == 1
            assert outbox_rows(alice) == 0
            [after] = [m for m in alice.history(bob_name) if m.id == message_id]
            assert after.status == "sent"
            assert texts(await bob.receive(wait=5)) == [(alice_name, "in the outbox")]
            assert await alice.flush_outbox() == 0  # settled: nothing goes twice
            assert texts(await bob.receive(wait=2)) == []
            await alice.receive(wait=3)  # bob's delivery receipt
            assert await settled(alice, bob_name, "in the outbox") == "delivered"
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_a_resend_to_a_changed_device_list_is_encrypted_anew(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        alice_profile, alice_name, bob_name = alice.store.path, alice.username, bob.username
        phone = None
        try:
            await alice.send(bob_name, "before")
            await commit_then_crash(alice, bob_name, "for every device")  # bob's one device
            phone = await link(bob, tmp_path, "phone")  # bob's device list changes
            alice = await Client.open(alice_profile, "passcode-" + alice_name)
            # the resend is refused (mismatched_devices): bob is looked up again and the
            # message is encrypted anew for both devices, by the sender loop
            await alice.flush_outbox()
            assert await settled(alice, bob_name, "for every device") == "sent"
            for _ in range(50):
                if outbox_rows(alice) == 0:
                    break
                await asyncio.sleep(0.1)
            assert outbox_rows(alice) == 0
            assert (alice_name, "for every device") in texts(await bob.receive(wait=5))
            assert texts(await phone.receive(wait=5)) == [(alice_name, "for every device")]
        finally:
            await alice.close()
            await bob.close()
            if phone is not None:
                await phone.close()

    run(scenario())
