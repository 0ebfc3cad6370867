"""Groups and linked devices end to end, against a real server process: five devices of
three accounts in a group, membership changes with sender-key rotation (a removed member
that keeps its keys cannot read on), transcripts on the sender's other devices, timers
on every device, device removal, and a device the account key never certified."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ServerProcess
from test_client_e2e import make_client, run

from sealpost._errors import InvalidMessage
from sealpost.client import (
    Client,
    DeviceLinked,
    GroupChanged,
    MessageReceived,
    ServerError,
    TimerChanged,
)
from sealpost.client.store import TEST_PARAMS
from sealpost.protocol.content import TextContent, encode_content
from sealpost.protocol.group_sealed import group_envelope_id, open_group, unseal_group
from sealpost.protocol.keys import AccountIdentity, DeviceKeys
from sealpost.protocol.sealed_multi import seal_multi
from sealpost.protocol.senderkeys import OwnSenderChain, ReceivingSenderChain
from sealpost.server.storage.sqlite import log_account_state


async def link(existing: Client, root: Path, name: str) -> Client:
    """A new device of ``existing``'s account, linked as a user would."""
    shown: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    profile = root / f"{existing.username}-{name}"
    task = asyncio.create_task(
        Client.link_new(
            profile,
            "passcode-" + name,
            server_url=existing.server_url,
            device_name=name,
            show=lambda code, confirmation: shown.put_nowait((code, confirmation)),
            params=TEST_PARAMS,
        )
    )
    code, confirmation = await asyncio.wait_for(shown.get(), 20)
    asked: list[tuple[str, str]] = []

    def confirm(device_name: str, digits: str) -> bool:
        asked.append((device_name, digits))
        return True

    device_id = await existing.link_accept(code, confirm)
    new = await asyncio.wait_for(task, 30)
    assert asked == [(name, confirmation)]  # both sides showed the same code and name
    assert new.device_id == device_id and new.account_id == existing.account_id
    return new


def received(events: list[Any]) -> list[tuple[str, str, str]]:
    return [
        (e.message.peer, e.message.author, e.message.text)
        for e in events
        if isinstance(e, MessageReceived)
    ]


async def drain(*clients: Client) -> list[list[Any]]:
    return [await c.receive(wait=3) for c in clients]


def test_groups_across_linked_devices(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice1 = await make_client(server, tmp_path)
        bob1 = await make_client(server, tmp_path)
        carol = await make_client(server, tmp_path)
        alice2 = await link(alice1, tmp_path, "laptop")
        bob2 = await link(bob1, tmp_path, "tablet")
        everyone = [alice1, alice2, bob1, bob2, carol]
        try:
            # the account's other device is told a device was linked
            notices = await alice1.receive(wait=5)
            assert DeviceLinked(alice2.device_id, "laptop") in notices
            assert [d["device_id"] for d in await alice1.devices()] == [1, alice2.device_id]

            view = await alice1.create_group("team", [bob1.username, carol.username])
            assert view.admins == (alice1.username,) and len(view.members) == 3
            events = await drain(alice2, bob1, bob2, carol)
            for got in events:
                changes = [e for e in got if isinstance(e, GroupChanged)]
                assert [(c.name, c.by, c.member) for c in changes] == [
                    ("team", alice1.username, True)
                ]

            await alice1.send("team", "hello team")
            events = await drain(bob1, bob2, carol)
            for got in events:
                assert received(got) == [("team", alice1.username, "hello team")]
            await alice2.receive(wait=3)  # the transcript of alice1's message
            assert [(m.outgoing, m.text) for m in alice2.history("team")] == [(True, "hello team")]

            await bob2.send("#team", "hi from bob's tablet")
            events = await drain(alice1, alice2, carol, bob1)
            for got in events[:3]:
                assert received(got) == [("team", bob1.username, "hi from bob's tablet")]
            assert [m.text for m in bob1.history("team")] == [
                "hello team",
                "hi from bob's tablet",
            ]

            # carol is removed; she keeps every key she had and tries to read on
            carol_chains = {
                (bytes(a), d): bytes(s)
                for a, d, s in carol.store.read().execute(
                    "SELECT account_id, device_id, state FROM sender_keys"
                )
            }
            assert (alice1.account_id, 1) in carol_chains
            await alice1.group_remove("team", [carol.username])
            got = await carol.receive(wait=5)
            assert [(e.member, e.removed) for e in got if isinstance(e, GroupChanged)] == [
                (False, (carol.username,))
            ]
            await drain(alice2, bob1, bob2)
            await alice1.send("team", "after carol left")
            # what bob's phone was sent: a group-sealed envelope of alice's new chain,
            # whose envelope key carol was never given; her old one does not open it
            body = queued_bodies(server, bob1)[-1]
            old = ReceivingSenderChain.from_bytes(carol_chains[(alice1.account_id, 1)])
            assert old.envelope_key is not None
            assert group_envelope_id(body) != old.envelope_id
            with pytest.raises(InvalidMessage):
                open_group(body, old.envelope_key)
            # and even given the message (as a server re-adding her would), her chain is
            # the old one: alice rotated before sending
            (own_state,) = (
                alice1.store.read().execute("SELECT state FROM own_sender_keys").fetchone()
            )
            opener = OwnSenderChain.from_bytes(bytes(own_state)).envelope_key
            assert opener is not None
            _, message = unseal_group(
                body, opener, server_key=bob1._ctx.server_key, now=int(time.time())
            )
            with pytest.raises(InvalidMessage):
                old.decrypt(message)
            events = await drain(bob1, bob2, alice2, carol)
            assert received(events[0]) == [("team", alice1.username, "after carol left")]
            assert received(events[1]) == [("team", alice1.username, "after carol left")]
            assert received(events[3]) == []

            # a timer set on one device applies on every device of every member
            await bob1.set_timer("team", 2)
            events = await drain(alice1, alice2, bob2)
            for got in events:
                assert [e.seconds for e in got if isinstance(e, TimerChanged)] == [2]
            await alice2.send("team", "this one disappears")
            await drain(alice1, bob1, bob2)
            time.sleep(2.2)
            for client in (alice1, alice2, bob1, bob2):
                assert "this one disappears" not in [m.text for m in client.history("team")]
            assert [g.member for g in carol.groups()] == [False]
        finally:
            for client in everyone:
                await client.close()

    run(scenario())


def queued_bodies(server: ServerProcess, client: Client) -> list[bytes]:
    db = sqlite3.connect(server.data / "sealpost.db")
    try:
        rows = db.execute(
            "SELECT q.body, s.body FROM queue q"
            " LEFT JOIN shared_bodies s ON s.id = q.body_ref"
            " WHERE q.account_id = ? AND q.device_id = ? ORDER BY q.seq",
            (client.account_id, client.device_id),
        ).fetchall()
    finally:
        db.close()
    return [bytes(r[0]) + bytes(r[1] or b"") for r in rows]


def test_removed_device_and_uncertified_device(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice1 = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        alice2 = await link(alice1, tmp_path, "old-phone")
        try:
            await bob.send(alice1.username, "to both of alice's devices")
            got = await drain(alice1, alice2)
            assert all(
                received(g) == [(bob.username, bob.username, "to both of alice's devices")]
                for g in got
            )
            await alice1.remove_device(alice2.device_id)
            assert [d["device_id"] for d in await alice1.devices()] == [1]
            with pytest.raises(ServerError) as refused:
                await alice2.receive(wait=1)
            assert refused.value.status == 401
            await bob.send(alice1.username, "after the removal")
            assert received(await alice1.receive(wait=5)) == [
                (bob.username, bob.username, "after the removal")
            ]
            assert 2 not in {
                d for c in bob.contacts() for d in c.devices if c.username == alice1.username
            }

            # a ghost: a device the server adds to alice's account without her key
            ghost = DeviceKeys.generate(
                AccountIdentity.generate(os.urandom), 9, now=int(time.time()), rng=os.urandom
            )
            # (and logs, so that the directory's answer checks out against the log)
            db = sqlite3.connect(server.data / "sealpost.db", isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO devices (account_id, device_id, certificate, registered) "
                "VALUES (?, 9, ?, 0)",
                (alice1.account_id, ghost.certificate.encode()),
            )
            log_account_state(db, alice1.account_id)
            db.execute("COMMIT")
            db.close()
            listed = httpx.get(f"{server.url}/v1/accounts/{alice1.username}").json()
            assert 9 in [d["device_id"] for d in listed["devices"]]  # the server shows it
            contact = await bob.lookup(alice1.username)
            assert contact.devices == (1,)  # the client never accepts it
            await alice1.monitor()  # and alice's own device sees it in her log
            assert [a.kind for a in alice1.alarms()] == ["forged_device"]
            # (the server may refuse the send for naming too few devices: that is its
            # choice, a denial of service it could do anyway; it never reaches the ghost)
            with contextlib.suppress(ServerError):
                await bob.send(alice1.username, "never to the ghost")
            assert queued_bodies_for(server, alice1.account_id, 9) == []
        finally:
            for client in (alice1, alice2, bob):
                await client.close()

    run(scenario())


def queued_bodies_for(server: ServerProcess, account_id: bytes, device_id: int) -> list[bytes]:
    db = sqlite3.connect(server.data / "sealpost.db")
    try:
        rows = db.execute(
            "SELECT q.body, s.body FROM queue q"
            " LEFT JOIN shared_bodies s ON s.id = q.body_ref"
            " WHERE q.account_id = ? AND q.device_id = ?",
            (account_id, device_id),
        ).fetchall()
    finally:
        db.close()
    return [bytes(r[0]) + bytes(r[1] or b"") for r in rows]


def test_link_refused_without_confirmation(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        shown: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        task = asyncio.create_task(
            Client.link_new(
                tmp_path / "phished",
                "passcode-x",
                server_url=server.url,
                device_name="attacker",
                show=lambda code, c: shown.put_nowait((code, c)),
                timeout=3,
                params=TEST_PARAMS,
            )
        )
        code, _ = await shown.get()
        try:
            from sealpost.client import LinkRefused

            with pytest.raises(LinkRefused):
                await alice.link_accept(code, lambda name, digits: False)
            with pytest.raises(Exception):  # noqa: B017 - nothing was provisioned
                await task
            assert not (tmp_path / "phished" / "keyfile.json").exists()
            assert [d["device_id"] for d in await alice.devices()] == [1]
        finally:
            await alice.close()

    run(scenario())


def test_a_large_group_state_travels_as_an_attachment(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Over ~270 members the signed state passes 16 KiB and goes as an encrypted
    attachment; members fetch, check and apply it like an inline one."""
    from helpers import Client as RelayClient
    from helpers import Device, unique_name

    others = []
    for _ in range(300):
        name = unique_name("m")
        with RelayClient(server.url, Device.generate()) as relay:
            assert relay.register(name).status_code == 201
        others.append(name)

    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        try:
            view = await alice.create_group("big", [bob.username, *others])
            assert len(view.members) == 302
            rows = alice.store.read().execute("SELECT length(state) FROM groups").fetchall()
            assert rows[0][0] > 16 * 1024
            got = await bob.receive(wait=10)
            changes = [e for e in got if isinstance(e, GroupChanged)]
            assert [(c.name, c.member) for c in changes] == [("big", True)]
            assert len(bob.groups()[0].members) == 302
            await alice.send("big", "to three hundred")
            assert received(await bob.receive(wait=10)) == [
                ("big", alice.username, "to three hundred")
            ]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_group_envelopes_cannot_be_misattributed_and_legacy_ones_still_open(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A member (carol) that copies another's envelope key into her own chain only makes
    her own messages look alike to the server: each message is still attributed to the
    certificate's device and decrypted with that device's chain. And a group message in
    the legacy per-device-wrapped form (0x22, in flight across an upgrade) still opens."""

    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        carol = await make_client(server, tmp_path)
        try:
            view = await alice.create_group("club", [bob.username, carol.username])
            await drain(bob, carol)
            await alice.send("club", "one from alice")
            for got in await drain(bob, carol):
                assert received(got) == [("club", alice.username, "one from alice")]

            # carol gives her own new chain alice's envelope key
            (alice_state,) = (
                carol.store.read()
                .execute("SELECT state FROM sender_keys WHERE account_id = ?", (alice.account_id,))
                .fetchone()
            )
            stolen = ReceivingSenderChain.from_bytes(bytes(alice_state)).envelope_key
            assert stolen is not None
            fresh = OwnSenderChain.create(view.group_id, rng=os.urandom)
            mine = OwnSenderChain(
                view.group_id, fresh.chain_id, 0, fresh.chain_key, fresh.signing_key, stolen
            )
            with carol.store.transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO own_sender_keys (group_id, state) VALUES (?, ?)",
                    (view.group_id, mine.to_bytes()),
                )
            carol._services.groups.chains.held.pop(view.group_id, None)
            await carol.send("club", "carol, under alice's envelope id")
            await alice.send("club", "two from alice")
            got = []
            for _ in range(5):  # two batches, perhaps: whatever the server pushed at once
                got += await bob.receive(wait=3)
                if len(received(got)) == 2:
                    break
            assert received(got) == [
                ("club", carol.username, "carol, under alice's envelope id"),
                ("club", alice.username, "two from alice"),
            ]
            ids = bob.store.read().execute(
                "SELECT account_id FROM sender_keys WHERE envelope_id = ?", (mine.envelope_id,)
            )
            assert sorted(bytes(a) for (a,) in ids) == sorted([alice.account_id, carol.account_id])

            # the legacy form: a key wrap for bob's device, alice's current chain inside
            chain = alice._services.groups.chains.held[view.group_id]
            cert = await alice._services.sending.sender_certificate()
            text = TextContent(
                os.urandom(16),
                int(time.time() * 1000),
                os.urandom(32),
                alice.username,
                "legacy envelope",
                view.group_id,
            )
            inner = cert.encode() + chain.encrypt(encode_content(text))
            with alice.store.transaction() as conn:
                conn.execute(
                    "UPDATE own_sender_keys SET state = ? WHERE group_id = ?",
                    (chain.to_bytes(), view.group_id),
                )
            assert bob._ctx.device is not None
            shared, [wrap] = seal_multi(
                inner, [bob._ctx.device.identity_key.public_key()], os.urandom
            )
            async with httpx.AsyncClient(base_url=server.url) as http:
                response = await http.put(
                    "/v1/messages/multi",
                    json={
                        "shared": base64.b64encode(shared).decode(),
                        "recipients": [[bob.account_id.hex(), 1, base64.b64encode(wrap).decode()]],
                    },
                )
                assert response.status_code == 200, response.text
            got = await bob.receive(wait=5)
            assert received(got) == [("club", alice.username, "legacy envelope")]
        finally:
            for client in (alice, bob, carol):
                await client.close()

    run(scenario())


def test_group_message_is_delivered_once_every_member_confirmed(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Each member's device sends the author a delivery receipt (pairwise); the author's
    devices show the message delivered only when every other member has confirmed it."""

    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        carol = await make_client(server, tmp_path)
        alice2 = await link(alice, tmp_path, "laptop")
        try:
            await alice.receive(wait=5)  # the notice that alice2 was linked
            await alice.create_group("ticks", [bob.username, carol.username])
            await drain(alice2, bob, carol)
            sent = await alice.send("ticks", "did everyone get this?")

            async def status(client: Client, want: str) -> str:
                found = "?"
                for _ in range(8):
                    await client.receive(wait=0.5)
                    rows = [m for m in client.history("ticks") if m.id == sent.id]
                    found = rows[0].status if rows else "?"
                    if found == want:
                        break
                return found

            assert received(await bob.receive(wait=5)) == [
                ("ticks", alice.username, "did everyone get this?")
            ]
            await asyncio.sleep(0.5)  # bob's receipt goes out after RECEIPT_DELAY
            assert await status(alice, "delivered") == "sent"  # carol has not confirmed
            assert received(await carol.receive(wait=5)) == [
                ("ticks", alice.username, "did everyone get this?")
            ]
            await asyncio.sleep(0.5)
            assert await status(alice, "delivered") == "delivered"
            assert await status(alice2, "delivered") == "delivered"  # the sibling's copy
            (raw,) = (
                alice.store.read()
                .execute("SELECT receipts FROM messages WHERE message_uuid = ?", (sent.id,))
                .fetchone()
            )
            assert sorted([raw[:16], raw[16:]]) == sorted([bob.account_id, carol.account_id])
            # bob's own receipt needs nobody's confirmation: his copy is "received"
            assert [m.status for m in bob.history("ticks")] == ["received"]
        finally:
            for client in (alice, alice2, bob, carol):
                await client.close()

    run(scenario())
