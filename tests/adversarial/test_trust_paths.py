"""Whom a client encrypts to, whatever path new keys arrive by, and an inbox that one
message cannot jam (issue 13 items 1 and 2; docs/THREAT_MODEL.md rows 2d, 2e, 5b, 5c),
and what the user sees of a ghost device exactly as rows 1a and 1c say: the CLI's exit 7
and an alarm on every later command; the alarm on the account's devices' next connect.

The server (or a sender) plays each attack against real clients; each test names it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_hostile_server import (
    add_device_row,
    b64,
    ghost_device,
    inject,
    kinds,
    link,
    own_account,
    real_bundle,
    run,
    serve_lookup,
    texts,
    user,
)

from conftest import HostileServer
from sealpost.client import AlarmRaised, Client, KeyChanged
from sealpost.client.futures import future as _future
from sealpost.client.rows import Outgoing
from sealpost.crypto.dh import DhPublicKey
from sealpost.crypto.sign import SigningKey
from sealpost.protocol.content import GroupUpdateContent, TextContent, encode_content
from sealpost.protocol.keys import AccountIdentity, DeviceKeys
from sealpost.protocol.sealed import seal
from sealpost.protocol.session import Session
from sealpost.protocol.wire import SenderCertificate


def first_message(
    hostile: HostileServer,
    device: DeviceKeys,
    to: Client,
    text: str,
    *,
    name: str,
    sender_cert: SenderCertificate | None = None,
) -> bytes:
    """A sealed first message (a PreKeyMessage) from ``device`` to ``to``'s device 1,
    claiming ``name``; the sender certificate is the server's (signed with its key, as
    the operator can) unless one is given."""
    bundle = real_bundle(hostile, to.account_id)
    session = Session.initiate(device, bundle, rng=os.urandom)
    content = TextContent(os.urandom(16), int(time.time() * 1000), os.urandom(32), name, text)
    inner = session.encrypt(encode_content(content), rng=os.urandom)
    if sender_cert is None:
        cert = device.certificate
        sender_cert = SenderCertificate.issue(
            hostile.server_key,
            account_id=cert.account_id,
            device_id=cert.device_id,
            signing_key=cert.signing_key,
            identity_key=cert.identity_key,
            expires=int(time.time()) + 3600,
        )
    recipient = DhPublicKey.from_public_bytes(bundle.certificate.identity_key)
    return seal(inner, sender_cert, recipient)


def sessions_with(client: Client, account_id: bytes) -> list[int]:
    rows = client.store.read().execute(
        "SELECT device_id FROM sessions WHERE account_id = ? ORDER BY device_id", (account_id,)
    )
    return [d for (d,) in rows]


# ---------------------------------------------------------------------- 1a, 1c as users see them


def cli(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"SEALPOST_PASSCODE": "passcode-" + client.username}
    command = [sys.executable, "-m", "sealpost.cli", "--profile", str(client.store.path)]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=60)


def test_ghost_device_refusal_exits_7_and_alarms_every_later_command(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """1a, from the command line: ``sealpost send`` to an account listed with a ghost that
    has no valid certificate (and is not logged) says "key transparency check failed
    (directory_mismatch)", sends nothing and exits 7; every later command shows the
    alarm on stderr until it is dismissed."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        await bob.close()  # the command line opens bob's profile itself
        try:
            doc = hostile.get(f"/v1/accounts/{alice.username}")
            ghost = ghost_device(AccountIdentity.generate(os.urandom))
            doc["devices"].append({"device_id": 9, "certificate": b64(ghost.certificate.encode())})
            serve_lookup(hostile, alice.username, doc)
            sent = cli(bob, "send", alice.username, "must not go anywhere")
            assert sent.returncode == 7, (sent.stdout, sent.stderr)
            assert "key transparency check failed (directory_mismatch)" in sent.stderr
            assert "nothing was sent" in sent.stderr
            assert sent.stdout == ""
            assert hostile.queue(alice.account_id, 1) == []
            assert hostile.queue(alice.account_id, 9) == []
            hostile.clear_rules()
            for later in (["whoami"], ["contacts"], ["receive", "--wait", "0"]):
                shown = cli(bob, *later)
                assert shown.returncode == 0, (later, shown.stderr)
                alarm_lines = [line for line in shown.stderr.splitlines() if "ALARM" in line]
                assert len(alarm_lines) == 1, (later, shown.stderr)
                assert alice.username in alarm_lines[0]
                assert "log does not hold" in alarm_lines[0]
            assert cli(bob, "alarms", "--dismiss", "all").returncode == 0
            after = cli(bob, "whoami")
            assert after.returncode == 0 and "ALARM" not in after.stderr
        finally:
            await alice.close()

    run(scenario())


def test_logged_ghost_device_alarms_every_device_on_its_next_connect(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """1c, as it happens: no explicit monitoring call. The operator logs a ghost for
    alice while her devices are offline; each device raises ``unknown_device`` (an
    :class:`AlarmRaised` event) on its next connect, from its ordinary receive."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path)
        laptop = await link(alice, tmp_path, "laptop")
        await alice.receive(wait=2)  # the laptop's announcement
        for device in (alice, laptop):
            device.monitor_grace = 0
            await device.receive(wait=0)
            assert kinds(device) == []  # connecting with no ghost: no alarm
        profiles = [(alice.store.path, "passcode-" + alice.username)]
        profiles.append((laptop.store.path, "passcode-laptop"))
        for device in (alice, laptop):
            await device.close()
        ghost = ghost_device(own_account(alice))
        add_device_row(hostile, alice.account_id, ghost.certificate.encode(), 9)
        for path, passcode in profiles:
            device = await Client.open(path, passcode)
            try:
                device.monitor_grace = 0  # the ghost is not a sibling's fresh device
                events = await device.receive(wait=0)
                raised = [e.alarm for e in events if isinstance(e, AlarmRaised)]
                assert [a.kind for a in raised] == ["unknown_device"]
                assert "device 9 is in this account's log" in raised[0].detail
            finally:
                await device.close()

    run(scenario())


# ---------------------------------------------------------------------- 2d, 2e. keys via a message


@pytest.mark.parametrize("case", ["unverified", "verified", "unlogged-sibling"])
def test_forged_key_change_via_incoming_message_is_refused(
    hostile: HostileServer, tmp_path: Path, case: str
) -> None:
    """2d: the server signs a sender certificate for alice's account around a first
    message from a ghost device: under a fresh account key it made (a key change), or
    (``unlogged-sibling``) with a real certificate of alice's key for a device the log
    does not hold. Bob's client checks the directory against the log before it accepts
    either: the message is dropped, the pinned key and devices stay, an alarm is raised,
    and later sends to alice never go to the ghost."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            await alice.send(bob.username, "the real alice")
            assert texts(await bob.receive(wait=10)) == ["the real alice"]
            if case == "verified":
                bob.verify(alice.username)
            if case == "unlogged-sibling":
                ghost = ghost_device(own_account(alice))
            else:
                forged = AccountIdentity(alice.account_id, SigningKey.generate(os.urandom))
                ghost = ghost_device(forged)
            before = {c.username: c for c in bob.contacts()}[alice.username]
            body = first_message(hostile, ghost, bob, "it is me, alice", name=alice.username)
            inject(hostile, bob.account_id, body)
            events = await bob.receive(wait=3)
            assert texts(events) == []
            assert not [e for e in events if isinstance(e, KeyChanged)]
            assert [e.alarm.kind for e in events if isinstance(e, AlarmRaised)] == [
                "directory_mismatch"
            ]
            assert kinds(bob) == ["directory_mismatch"]
            after = {c.username: c for c in bob.contacts()}[alice.username]
            assert after == before  # same account key, devices (1,), no key change
            assert after.devices == (1,) and not after.key_changed
            assert 9 not in sessions_with(bob, alice.account_id)
            assert hostile.queue(bob.account_id) == []  # dropped and acknowledged
            await bob.send(alice.username, "to the real alice only")
            assert hostile.queue(alice.account_id, 9) == []
            assert texts(await alice.receive(wait=10)) == ["to the real alice only"]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_first_message_from_an_unlogged_device_of_a_stranger_is_refused(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """2e: the same ghost, to someone who does not know alice yet: the claimed name's
    directory entry holds alice's key but not that device, so it is refused too."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            ghost = ghost_device(own_account(alice))
            body = first_message(hostile, ghost, bob, "hello from a ghost", name=alice.username)
            inject(hostile, bob.account_id, body)
            assert texts(await bob.receive(wait=3)) == []
            assert kinds(bob) == ["directory_mismatch"]
            assert alice.username not in [c.username for c in bob.contacts()]
            await alice.send(bob.username, "the real alice")
            assert texts(await bob.receive(wait=10)) == ["the real alice"]
            assert [c.devices for c in bob.contacts() if c.username == alice.username] == [(1,)]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


# ---------------------------------------------------------------------- 5b, 5c. jammed inbox


def one_time_prekeys(hostile: HostileServer, account_id: bytes) -> int:
    return hostile.db.one_time_prekeys(account_id)


def test_claimed_name_path_traversal_does_not_jam_inbox(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """5b: mallory's first messages to bob claim the names ``../keys/status`` (a path
    that answers 401 to an unsigned request) and ``../keys/<carol>/1`` (which would spend
    one of carol's one-time prekeys from bob's address). Bob looks up neither: they are
    not usernames. Both are dropped and acknowledged; what follows them is delivered."""

    async def scenario() -> None:
        alice, bob, carol, mallory = [await user(hostile, tmp_path) for _ in range(4)]
        try:
            stock = one_time_prekeys(hostile, carol.account_id)
            for name in ("../keys/status", f"../keys/{carol.account_id.hex()}/1"):
                body = first_message(
                    hostile,
                    mallory._ctx.device,
                    bob,
                    "poison",
                    name=name,
                    sender_cert=await mallory._services.sending.sender_certificate(),
                )
                inject(hostile, bob.account_id, body)
            await alice.send(bob.username, "behind the poison")
            assert texts(await bob.receive(wait=10)) == ["behind the poison"]
            assert hostile.queue(bob.account_id) == []
            assert one_time_prekeys(hostile, carol.account_id) == stock
            await alice.send(bob.username, "and the next one")
            assert texts(await bob.receive(wait=10)) == ["and the next one"]
        finally:
            for c in (alice, bob, carol, mallory):
                await c.close()

    run(scenario())


def test_group_update_with_missing_state_attachment_does_not_jam_inbox(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """5c: a group update whose state travels as an attachment that does not exist (the
    server answers 404, as it does once a genuine one expired after 30 days). It alone is
    dropped; the messages behind it arrive."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            await alice.send(bob.username, "hello")
            assert texts(await bob.receive(wait=10)) == ["hello"]
            row = await alice._services.attachments.upload_bytes(os.urandom(2000), "group-state")
            update = GroupUpdateContent(
                int(time.time() * 1000),
                alice._ctx.delivery_token,
                alice.username,
                None,
                state_pointer=row.pointer,
            )
            done: Any = await alice._services.sending.enqueue(
                Outgoing(bob.username, update, _future(), store=False)
            )
            assert done is None
            await alice.send(bob.username, "behind the update")
            hostile.rules(
                [
                    {
                        "method": "GET",
                        "path": "/v1/attachments/.*",
                        "status": 404,
                        "body": {"error": "not_found", "message": "no such attachment"},
                    }
                ]
            )
            assert texts(await bob.receive(wait=10)) == ["behind the update"]
            assert hostile.queue(bob.account_id) == []
            assert bob.groups() == []
            hostile.clear_rules()
            await alice.send(bob.username, "and the next one")
            assert texts(await bob.receive(wait=10)) == ["and the next one"]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())
