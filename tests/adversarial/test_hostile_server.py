"""The hostile-server suite (DESIGN.md section 4, promise P4; issue 6).

Each test plays an operator who misbehaves, under a court order or as an attacker inside
the server: it edits the server's database, signs with the server's keys, answers requests
in the server's place (for one user or for all), or injects envelopes. Each shows that the
attack is detected (which alarm, on which device) or is harmless. docs/THREAT_MODEL.md has
the table of these scenarios with what the user sees.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import HostileServer, b64, unb64
from sealpost.client import (
    AlarmRaised,
    Client,
    KeyChanged,
    MessageReceived,
    ServerUnavailable,
    TransparencyFailure,
    UnknownContact,
)
from sealpost.client.store import TEST_PARAMS
from sealpost.crypto.dh import DhPublicKey
from sealpost.crypto.sign import SigningKey
from sealpost.protocol.content import TextContent, encode_content
from sealpost.protocol.keys import AccountIdentity, DeviceKeys
from sealpost.protocol.sealed import seal
from sealpost.protocol.session import Session
from sealpost.protocol.wire import PreKeyBundle, SenderCertificate
from sealpost.transparency.log import (
    LogEntry,
    SignedTreeHead,
    account_map_key,
    account_map_value,
    devices_commitment,
)
from sealpost.transparency.merkle import (
    MemoryNodeStore,
    append,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
)
from sealpost.transparency.smt import EMPTY_MAP_ROOT, MemoryMapStore, insert, map_root, prove

_names = iter(range(10**6))


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def unique() -> str:
    return f"u{os.getpid() % 10000}x{next(_names)}"


async def user(hostile: HostileServer, root: Path, view: str | None = None) -> Client:
    name = unique()
    return await Client.create(
        root / name,
        "passcode-" + name,
        server_url=hostile.url(view),
        username=name,
        params=TEST_PARAMS,
    )


async def link(existing: Client, root: Path, name: str) -> Client:
    shown: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    task = asyncio.create_task(
        Client.link_new(
            root / f"{existing.username}-{name}",
            "passcode-" + name,
            server_url=existing.server_url,
            device_name=name,
            show=lambda code, confirmation: shown.put_nowait((code, confirmation)),
            params=TEST_PARAMS,
        )
    )
    code, _ = await asyncio.wait_for(shown.get(), 20)
    await existing.link_accept(code, lambda _name, _digits: True)
    return await asyncio.wait_for(task, 30)


def texts(events: list[Any]) -> list[str]:
    return [e.message.text for e in events if isinstance(e, MessageReceived)]


def kinds(client: Client) -> list[str]:
    return [a.kind for a in client.alarms()]


def ghost_device(account: AccountIdentity, device_id: int = 9) -> DeviceKeys:
    return DeviceKeys.generate(account, device_id, now=int(time.time()), rng=os.urandom)


def add_device_row(hostile: HostileServer, account_id: bytes, cert: bytes, device_id: int) -> None:
    """The operator adds a device to an account in its storage, and logs it."""
    hostile.db.add_device(account_id, device_id, cert)


def serve_lookup(hostile: HostileServer, name: str, doc: dict[str, Any]) -> None:
    hostile.rules([{"method": "GET", "path": f"/v1/accounts/{name}", "body": doc}])


def inject(hostile: HostileServer, account_id: bytes, body: bytes) -> None:
    """Queue ``body`` for device 1 of the account, as a sealed send from anyone."""
    httpx.put(
        hostile.url() + "/v1/messages",
        json={"messages": [{"account_id": account_id.hex(), "device_id": 1, "body": b64(body)}]},
        timeout=20,
    ).raise_for_status()


def real_bundle(hostile: HostileServer, account_id: bytes) -> PreKeyBundle:
    return PreKeyBundle.decode(unb64(hostile.get(f"/v1/keys/{account_id.hex()}/1")["bundle"]))


def serve_bundle(hostile: HostileServer, account_id: bytes, bundle: PreKeyBundle) -> None:
    """The operator answers bundle fetches for device 1 of the account with ``bundle``."""
    body = {"bundle": b64(bundle.encode()), "one_time_prekey": bundle.one_time_prekey is not None}
    hostile.rules([{"method": "GET", "path": f"/v1/keys/{account_id.hex()}/1", "body": body}])


def log_entries(hostile: HostileServer) -> list[bytes]:
    return hostile.db.log_entries()


def forked_tree(entries: list[bytes]) -> MemoryNodeStore:
    store = MemoryNodeStore()
    append(store, 0, [leaf_hash(e) for e in entries])
    return store


def sign_head(
    hostile: HostileServer, store: MemoryNodeStore, size: int, map_root: bytes = EMPTY_MAP_ROOT
) -> bytes:
    return SignedTreeHead.sign(
        hostile.log_key,
        tree_size=size,
        timestamp=int(time.time() * 1000),
        root=root(store, size),
        map_root=map_root,
    ).encode()


def forged_map(names: dict[str, tuple[int, bytes]]) -> MemoryMapStore:
    """A map the operator makes up: each name to (index, entry bytes)."""
    store = MemoryMapStore()
    insert(
        store,
        [(account_map_key(n), account_map_value(i, leaf_hash(e))) for n, (i, e) in names.items()],
    )
    return store


def map_proof_of(store: MemoryMapStore, name: str) -> str:
    return b64(prove(store, account_map_key(name))[1].encode())


def own_account(client: Client) -> AccountIdentity:
    """The account key (the test plays the operator who obtained a certificate for a
    device it controls, e.g. by phishing a link; the server cannot make one itself)."""
    return client._ctx.account


# ---------------------------------------------------------------------- 1. ghost devices


def test_ghost_device_without_certificate_shown_to_a_sender_is_refused(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """1a: the server adds a device the account key never certified, and lists it for
    the account without logging it: the sender refuses to send and raises an alarm."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            await bob.send(alice.username, "before")
            doc = hostile.get(f"/v1/accounts/{alice.username}")
            ghost = ghost_device(AccountIdentity.generate(os.urandom))
            doc["devices"].append({"device_id": 9, "certificate": b64(ghost.certificate.encode())})
            hostile.rules(
                [{"method": "GET", "path": f"/v1/accounts/{alice.username}", "body": doc}]
            )
            with pytest.raises(TransparencyFailure) as refused:
                await bob.lookup(alice.username)
            assert refused.value.kind == "directory_mismatch"
            assert kinds(bob) == ["directory_mismatch"]
            assert [c.devices for c in bob.contacts() if c.username == alice.username] == [(1,)]
            assert hostile.queue(alice.account_id, 9) == []
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_ghost_device_with_certificate_not_in_the_log_is_refused(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """1b: a device with a valid certificate, in the server's storage and directory but not
    in its log: senders check the directory against the log and refuse."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            ghost = ghost_device(own_account(alice))
            hostile.db.add_device(alice.account_id, 9, ghost.certificate.encode(), logged=False)
            doc = hostile.get(f"/v1/accounts/{alice.username}")
            doc["devices"].append({"device_id": 9, "certificate": b64(ghost.certificate.encode())})
            hostile.rules(
                [{"method": "GET", "path": f"/v1/accounts/{alice.username}", "body": doc}]
            )
            with pytest.raises(TransparencyFailure):
                await bob.send(alice.username, "must not reach the ghost")
            assert kinds(bob) == ["directory_mismatch"]
            assert hostile.queue(alice.account_id, 9) == []
            assert hostile.queue(alice.account_id, 1) == []
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_logged_ghost_device_alarms_every_device_of_the_account(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """1c: the server adds a device with a valid certificate and logs it, so senders
    accept it: each of the account's own devices finds it when it monitors its log."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path)
        laptop = await link(alice, tmp_path, "laptop")
        bob = await user(hostile, tmp_path)
        try:
            await alice.receive(wait=2)  # the laptop's announcement
            for device in (alice, laptop):
                device.monitor_grace = 0
                await device.monitor()
                assert kinds(device) == []  # both devices are known: no false alarm
            ghost = ghost_device(own_account(alice))
            add_device_row(hostile, alice.account_id, ghost.certificate.encode(), 9)
            contact = await bob.lookup(alice.username)
            assert 9 in contact.devices  # logged and certified: senders would use it
            for device in (alice, laptop):
                await device.monitor()
                assert kinds(device) == ["unknown_device"]
                assert "device 9" in device.alarms()[0].detail
        finally:
            for c in (alice, laptop, bob):
                await c.close()

    run(scenario())


def test_logged_ghost_waits_for_a_grace_period_then_alarms(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """A device a sibling just linked may be in the log before its announcement arrives:
    an unknown device is an alarm once the grace period has passed, and stays checked."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path)
        try:
            ghost = ghost_device(own_account(alice))
            add_device_row(hostile, alice.account_id, ghost.certificate.encode(), 7)
            alice.monitor_grace = 3600
            await alice.monitor()
            assert kinds(alice) == []
            alice.monitor_grace = 0
            await alice.monitor()  # the entry was left unchecked: checked again now
            assert kinds(alice) == ["unknown_device"]
        finally:
            await alice.close()

    run(scenario())


def test_a_listening_client_monitors_its_log_while_connected(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """A device that stays connected (``events()``, ``sealpost listen``) checks its log
    when monitoring is due, without waiting for a message: the alarm arrives as an event."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path)
        try:
            alice.monitor_grace = 0
            alice.monitor_interval = 2  # instead of 300 s
            events = alice.events()

            async def first_alarm() -> AlarmRaised:
                async for event in events:
                    if isinstance(event, AlarmRaised):
                        return event
                raise AssertionError("events() ended")

            waiting = asyncio.create_task(first_alarm())
            await asyncio.sleep(1)  # connected, checked its log once, now idle
            assert kinds(alice) == [] and not waiting.done()
            ghost = ghost_device(own_account(alice)).certificate.encode()
            add_device_row(hostile, alice.account_id, ghost, 9)
            raised = await asyncio.wait_for(waiting, 20)
            assert raised.alarm.kind == "unknown_device"
            await events.aclose()
        finally:
            await alice.close()

    run(scenario())


# ---------------------------------------------------------------------- 2. key substitution


def test_substituted_account_key_not_in_the_log_is_refused(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """2a: the directory answers with an account key and device the server holds."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            doc = hostile.get(f"/v1/accounts/{alice.username}")
            fake = AccountIdentity.generate(os.urandom)
            device = DeviceKeys.generate(fake, 1, now=int(time.time()), rng=os.urandom)
            doc["account_key"] = b64(fake.public_key().public_bytes_raw())
            doc["devices"] = [{"device_id": 1, "certificate": b64(device.certificate.encode())}]
            hostile.rules(
                [{"method": "GET", "path": f"/v1/accounts/{alice.username}", "body": doc}]
            )
            with pytest.raises(TransparencyFailure):
                await bob.send(alice.username, "not to the server's key")
            assert kinds(bob) == ["directory_mismatch"]
            assert hostile.queue(alice.account_id) == []
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_logged_key_substitution_warns_the_sender_and_alarms_the_owner(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """2b: the server swaps the account key and devices in storage and logs it: a sender
    that verified the contact is blocked (safety number changed); the owner's device
    finds an identity key that is not its own in its log."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            await bob.send(alice.username, "verified")
            bob.verify(alice.username)
            await alice.monitor()
            fake = AccountIdentity.generate(os.urandom)
            device = DeviceKeys.generate(fake, 1, now=int(time.time()), rng=os.urandom)
            hostile.db.substitute_account(
                alice.account_id, fake.public_key().public_bytes_raw(), device.certificate.encode()
            )
            hostile.restart()  # the server caches account records
            await bob.lookup(alice.username)
            assert KeyChanged(alice.username, True) in bob.take_events()
            from sealpost.client import UntrustedContact

            with pytest.raises(UntrustedContact):
                await bob.send(alice.username, "not until verified again")
            await alice.monitor()
            assert "account_key_changed" in kinds(alice)
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_substituted_prekeys_in_a_bundle_are_refused(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """2c: the bundle's prekeys replaced with the server's: not signed by the device."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            real = real_bundle(hostile, alice.account_id)
            server_device = DeviceKeys.generate(
                AccountIdentity.generate(os.urandom), 1, now=int(time.time()), rng=os.urandom
            )
            spk = server_device.new_signed_prekey(1, now=int(time.time()), rng=os.urandom)
            forged = PreKeyBundle(real.certificate, spk.public, None, real.kem_prekey)
            serve_bundle(hostile, alice.account_id, forged)
            with pytest.raises(Exception) as refused:
                await bob.send(alice.username, "not to the server's prekey")
            assert "Signature" in type(refused.value).__name__
            assert hostile.queue(alice.account_id) == []
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


# ---------------------------------------------------------------------- 3. split view


def test_split_view_is_caught_when_the_two_users_exchange_a_message(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """3: the server shows alice a log in which bob has a ghost device (signed with its
    log key, consistent with what alice saw before) and shows bob the real log. Alice's
    next message to bob carries her head; bob's client cannot get it proven consistent
    with his own: an alarm on bob's device."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path, view="alice")
        bob = await user(hostile, tmp_path, view="bob")
        try:
            await alice.send(bob.username, "hello")
            assert texts(await bob.receive(wait=10)) == ["hello"]
            await bob.send(alice.username, "hi")
            await alice.receive(wait=10)
            # the fork: the real log so far, then an entry giving bob a ghost device
            entries = log_entries(hostile)
            n = len(entries)
            doc = hostile.get(f"/v1/accounts/{bob.username}")
            ghost = ghost_device(AccountIdentity.generate(os.urandom))
            certs = [unb64(d["certificate"]) for d in doc["devices"]] + [ghost.certificate.encode()]
            real = LogEntry.decode(unb64(doc["transparency"]["entry"]))
            fake = LogEntry(
                real.account_id,
                real.username,
                real.account_key,
                devices_commitment(certs, []),
                real.sequence + 1,
                int(time.time() * 1000),
            ).encode()
            fork = forked_tree([*entries, fake])
            fork_map = forged_map({bob.username: (n, fake)})
            head = sign_head(hostile, fork, n + 1, map_root(fork_map))
            alice_size = alice.log_head()["tree_size"]  # type: ignore[index]
            doc["devices"].append({"device_id": 9, "certificate": b64(ghost.certificate.encode())})
            doc["transparency"] = {
                "head": b64(head),
                "index": n,
                "entry": b64(fake),
                "proof": [b64(h) for h in inclusion_proof(fork, n, n + 1)],
                "map_proof": map_proof_of(fork_map, bob.username),
            }
            proof = consistency_proof(fork, alice_size, n + 1)
            hostile.rules(
                [
                    {
                        "view": "alice",
                        "method": "GET",
                        "path": f"/v1/accounts/{bob.username}",
                        "body": doc,
                    },
                    {
                        "view": "alice",
                        "method": "GET",
                        "path": "/v1/log/consistency",
                        "body": {"proof": [b64(h) for h in proof]},
                    },
                ]
            )
            contact = await alice.lookup(bob.username)
            assert kinds(alice) == []  # alice alone cannot tell: her view is consistent
            assert contact.devices == (1,)  # (the ghost has no valid certificate anyway)
            await user(hostile, tmp_path)  # the real log grows past the fork point
            await alice.send(bob.username, "does your log look like mine?")
            assert texts(await bob.receive(wait=10)) == ["does your log look like mine?"]
            assert kinds(bob) == ["log_inconsistent"]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


# ---------------------------------------------------------------------- 4. log rewrite


def test_rewritten_log_is_caught_by_the_auditor_and_by_clients(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """4: a tree head that does not extend the previous one (an old entry rewritten)."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path)
        state = tmp_path / "audit"
        audit = [sys.executable, "-m", "sealpost.cli", "audit", "--server", hostile.url()]
        audit += ["--state", str(state), "--json"]
        try:
            first = subprocess.run(audit, capture_output=True, text=True, timeout=60)
            assert first.returncode == 0, first.stderr
            await user(hostile, tmp_path)  # the log grows honestly
            second = subprocess.run(audit, capture_output=True, text=True, timeout=60)
            assert second.returncode == 0, second.stderr
            assert '"consistent": true' in second.stdout
            await alice.monitor()
            entries = log_entries(hostile)
            rewritten = [
                entries[0][:-1] + b"x" if entries[0][-1:] != b"x" else entries[0][:-1] + b"y"
            ]
            tree = forked_tree(rewritten + entries[1:] + [entries[-1]])
            head = sign_head(hostile, tree, len(entries) + 1)
            hostile.rules(
                [
                    {"method": "GET", "path": "/v1/log/head", "body": {"head": b64(head)}},
                    {
                        "method": "GET",
                        "path": f"/v1/log/accounts/{alice.account_id.hex()}",
                        "body": {"head": b64(head), "entries": [], "more": False},
                    },
                ]
            )
            third = subprocess.run(audit, capture_output=True, text=True, timeout=60)
            assert third.returncode == 8, (third.stdout, third.stderr)
            assert "AUDIT FAILED" in third.stderr
            with pytest.raises(TransparencyFailure):
                await alice.monitor()
            assert kinds(alice) == ["log_inconsistent"]
            # the alarm stays, and every command shows it until it is dismissed
            cli = [sys.executable, "-m", "sealpost.cli", "--profile", str(alice.store.path)]
            env = os.environ | {"SEALPOST_PASSCODE": "passcode-" + alice.username}
            await alice.close()  # the CLI opens the profile itself (one process at a time)
            shown = subprocess.run(
                [*cli, "whoami"], capture_output=True, text=True, timeout=60, env=env
            )
            assert "ALARM" in shown.stderr and "log_inconsistent" not in shown.stdout

            def cli_run(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [*cli, *args], capture_output=True, text=True, timeout=60, env=env
                )

            listed = cli_run("alarms", "--json")
            assert listed.returncode == 0, listed.stderr
            alarms = [json.loads(line) for line in listed.stdout.splitlines()]
            assert [a["kind"] for a in alarms] == ["log_inconsistent"]
            assert cli_run("alarms", "--dismiss", str(alarms[0]["id"])).returncode == 0
            after = cli_run("whoami")
            assert after.returncode == 0 and "ALARM" not in after.stderr
            assert '"dismissed": true' in cli_run("alarms", "--all", "--json").stdout
        finally:
            await alice.close()

    run(scenario())


# ---------------------------------------------------------------------- 5. stored messages


def test_replayed_reordered_dropped_and_duplicated_messages(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """5: the operator reorders the queue, drops a message, duplicates one, and later
    replays one already delivered. Each message shows once; the dropped one is never
    marked delivered on the sender's side; nothing replayed shows again."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            for text in ("one", "two", "three"):
                await alice.send(bob.username, text)
            queued = hostile.queue(bob.account_id)
            assert len(queued) == 3
            (_, _, body1), _, (_, _, body3) = queued
            hostile.stop()  # (the server keeps the queue's tail in memory)
            # reordered, "two" dropped, "one" twice
            assert hostile.db.replace_queue(bob.account_id, 1, [body3, body1, body1]) == 3
            hostile.start()
            got = texts(await bob.receive(wait=5))
            assert sorted(got) == ["one", "three"]
            await bob.close()
            bob = await Client.open(bob.store.path, "passcode-" + bob.username)
            # the replay of a message already delivered and acknowledged
            inject(hostile, bob.account_id, body1)
            assert texts(await bob.receive(wait=2)) == []
            assert sorted(m.text for m in bob.history(alice.username)) == ["one", "three"]
            await alice.receive(wait=5)  # delivery receipts
            status = {m.text: m.status for m in alice.history(bob.username)}
            assert status["two"] == "sent"  # never delivered: the user can tell
            assert status["one"] == status["three"] == "delivered"
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


# ---------------------------------------------------------------------- 6. downgrade


def test_bundle_stripped_of_its_post_quantum_prekey_is_refused(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """6: the server strips the ML-KEM prekey so that PQXDH falls back to X25519 only."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            real = real_bundle(hostile, alice.account_id)
            stripped = PreKeyBundle(
                real.certificate, real.signed_prekey, real.one_time_prekey, None
            )
            serve_bundle(hostile, alice.account_id, stripped)
            with pytest.raises(Exception) as refused:
                await bob.send(alice.username, "only post-quantum")
            assert type(refused.value).__name__ == "NotPostQuantum"
            assert hostile.queue(alice.account_id) == []
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


# ---------------------------------------------------------------------- 7. sender certificates


def test_forged_sender_certificates_are_dropped(
    hostile: HostileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """7: a sealed envelope whose sender certificate is signed by another key than the
    pinned server key; and one with a certificate the server really signed, naming alice,
    around a message from another account's device (mallory's). Both are dropped."""

    async def scenario() -> None:
        alice, bob, mallory = [await user(hostile, tmp_path) for _ in range(3)]
        try:
            bob_doc = hostile.get(f"/v1/keys/{bob.account_id.hex()}/1")
            bundle = PreKeyBundle.decode(unb64(bob_doc["bundle"]))
            session = Session.initiate(mallory._ctx.device, bundle, rng=os.urandom)
            content = TextContent(
                os.urandom(16),
                int(time.time() * 1000),
                os.urandom(32),
                alice.username,
                "it is me, alice",
            )
            inner = session.encrypt(encode_content(content), rng=os.urandom)
            cert = alice._ctx.device.certificate
            recipient = DhPublicKey.from_public_bytes(bundle.certificate.identity_key)
            forgeries = []
            for signer in (SigningKey.generate(os.urandom), hostile.server_key):
                sender = SenderCertificate.issue(
                    signer,
                    account_id=alice.account_id,
                    device_id=1,
                    signing_key=cert.signing_key,
                    identity_key=cert.identity_key,
                    expires=int(time.time()) + 3600,
                )
                forgeries.append(seal(inner, sender, recipient))
            for body in forgeries:
                inject(hostile, bob.account_id, body)
            with caplog.at_level(logging.WARNING, logger="sealpost.client"):
                assert texts(await bob.receive(wait=2)) == []
            drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
            assert len(drops) == 2, drops  # the forged signature; the mismatched sender
            assert "BadSignature" in drops[0]
            assert alice.username not in [c.username for c in bob.contacts()]
            await alice.send(bob.username, "the real alice")
            assert texts(await bob.receive(wait=10)) == ["the real alice"]
        finally:
            for c in (alice, bob, mallory):
                await c.close()

    run(scenario())


# ---------------------------------------------------------------------- 8. group fan-out


def test_removed_member_readded_to_the_fanout_reads_nothing(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """8: after carol's removal the server also delivers the group's messages to her."""

    async def scenario() -> None:
        alice, bob, carol = [await user(hostile, tmp_path) for _ in range(3)]
        try:
            await alice.create_group("club", [bob.username, carol.username])
            await alice.send("#club", "before")
            assert texts(await bob.receive(wait=10)) == ["before"]
            assert texts(await carol.receive(wait=10)) == ["before"]
            await alice.group_remove("club", [carol.username])
            await bob.receive(wait=5)
            await carol.receive(wait=5)
            await alice.send("#club", "after carol left")
            copies = hostile.queue(bob.account_id)
            # the new chain's distribution (sealed to bob) and the group-sealed message
            assert b"\x01\x23" in {body[:2] for _, _, body in copies}
            for _, _, body in copies:  # the operator fans bob's copy out to carol too
                httpx.put(
                    hostile.url() + "/v1/messages",
                    json={
                        "messages": [
                            {
                                "account_id": carol.account_id.hex(),
                                "device_id": 1,
                                "body": b64(body),
                            }
                        ]
                    },
                    timeout=20,
                ).raise_for_status()
            assert texts(await carol.receive(wait=2)) == []
            assert "after carol left" not in [m.text for m in carol.history("#club")]
            assert texts(await bob.receive(wait=10)) == ["after carol left"]
        finally:
            for c in (alice, bob, carol):
                await c.close()

    run(scenario())


# ---------------------------------------------------------------------- 9. revoked devices


def test_replayed_revoked_device_certificate(hostile: HostileServer, tmp_path: Path) -> None:
    """9: the server puts back a device the account revoked (its old certificate, which
    the account key did sign) and drops the revocation, in storage and in the log."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path)
        laptop = await link(alice, tmp_path, "laptop")
        bob = await user(hostile, tmp_path)
        try:
            await alice.receive(wait=2)
            old_cert = laptop._ctx.device.certificate.encode()
            await bob.lookup(alice.username)
            await alice.remove_device(laptop.device_id)
            await bob.lookup(alice.username)  # bob learns of the revocation
            alice.monitor_grace = 0
            await alice.monitor()
            assert kinds(alice) == []
            hostile.db.restore_device(alice.account_id, laptop.device_id, old_cert)
            contact = await bob.lookup(alice.username)
            assert laptop.device_id not in contact.devices  # bob never encrypts to it again
            await alice.monitor()
            assert set(kinds(alice)) == {"revoked_device_returned"}
        finally:
            for c in (alice, laptop, bob):
                await c.close()

    run(scenario())


# ---------------------------------------------------------------------- 7. stale directory


def _fork_with(
    hostile: HostileServer, names: dict[str, tuple[int, bytes]]
) -> tuple[MemoryNodeStore, MemoryMapStore, int, bytes]:
    """The operator's forged next state: the real log plus one entry (so that the head is
    new and provably extends every real one), and a map it made up. (log, map, size, head)"""
    entries = log_entries(hostile)
    fork = forked_tree([*entries, entries[-1]])
    fake_map = forged_map(names)
    size = len(entries) + 1
    return fork, fake_map, size, sign_head(hostile, fork, size, map_root(fake_map))


def _consistency_rule(fork: MemoryNodeStore, client: Client, size: int) -> dict[str, Any]:
    held = client.log_head()["tree_size"]  # type: ignore[index]
    proof = consistency_proof(fork, held, size)
    return {
        "method": "GET",
        "path": "/v1/log/consistency",
        "body": {"proof": [b64(h) for h in proof]},
    }


def test_stale_lookup_replayed_after_revocation_is_refused(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """The operator saves alice's lookup while she has a laptop, she revokes it, and the
    saved answer is replayed: (a) to bob, whose newest head already covers the revocation
    (the answer is proven at an older head: a replay); (b) to carol, who has seen alice's
    newer entry, under a freshly signed head whose made-up map calls the old entry newest
    (her pin refuses an entry that goes back). Neither encrypts to the laptop."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path)
        laptop = await link(alice, tmp_path, "laptop")
        bob = await user(hostile, tmp_path)
        carol = await user(hostile, tmp_path)
        try:
            await alice.receive(wait=2)
            saved = hostile.get(f"/v1/accounts/{alice.username}")
            assert [d["device_id"] for d in saved["devices"]] == [1, 2]
            saved_size = SignedTreeHead.decode(unb64(saved["transparency"]["head"])).tree_size
            await alice.remove_device(2)
            await bob.monitor()  # any answer since: bob holds a head that covers it
            assert bob.log_head()["tree_size"] > saved_size  # type: ignore[index]
            honest = await carol.lookup(alice.username)
            assert honest.devices == (1,)
            # (a) the saved answer, as it was
            serve_lookup(hostile, alice.username, saved)
            with pytest.raises(TransparencyFailure) as refused:
                await bob.lookup(alice.username)
            assert refused.value.kind == "stale_lookup"
            assert kinds(bob) == ["stale_lookup"]
            assert [c for c in bob.contacts() if c.username == alice.username] == []
            # (b) under a new head whose map the operator made up
            index = saved["transparency"]["index"]
            entry = unb64(saved["transparency"]["entry"])
            fork, fake_map, size, head = _fork_with(hostile, {alice.username: (index, entry)})
            doc = dict(saved)
            doc["transparency"] = {
                "head": b64(head),
                "index": index,
                "entry": b64(entry),
                "proof": [b64(h) for h in inclusion_proof(fork, index, size)],
                "map_proof": map_proof_of(fake_map, alice.username),
            }
            hostile.rules(
                [
                    {"method": "GET", "path": f"/v1/accounts/{alice.username}", "body": doc},
                    _consistency_rule(fork, carol, size),
                ]
            )
            with pytest.raises(TransparencyFailure) as rolled_back:
                await carol.lookup(alice.username)
            assert rolled_back.value.kind == "stale_lookup"
            assert kinds(carol) == ["stale_lookup"]
            assert [c.devices for c in carol.contacts() if c.username == alice.username] == [(1,)]
        finally:
            for client in (alice, laptop, bob, carol):
                await client.close()

    run(scenario())


def test_hidden_revocation_reaches_contacts(hostile: HostileServer, tmp_path: Path) -> None:
    """Alice revokes her laptop while the operator keeps showing bob the lookup from before
    (and so never answers him ``mismatched_devices``): alice's devices send bob the account
    key's signed revocation, bob drops the laptop at once, and nothing of his reaches it."""

    async def scenario() -> None:
        alice = await user(hostile, tmp_path)
        laptop = await link(alice, tmp_path, "laptop")
        bob = await user(hostile, tmp_path)
        try:
            await alice.receive(wait=2)
            await bob.send(alice.username, "hello both")
            assert [c.devices for c in bob.contacts() if c.username == alice.username] == [(1, 2)]
            await alice.receive(wait=5)  # alice now knows bob
            serve_lookup(hostile, alice.username, hostile.get(f"/v1/accounts/{alice.username}"))
            await alice.remove_device(2)
            await bob.receive(wait=5)
            assert [c.devices for c in bob.contacts() if c.username == alice.username] == [(1,)]
            # (bob's periodic re-check of his contacts, if it ran, caught the replay too)
            assert set(kinds(bob)) <= {"stale_lookup"}
            await laptop.close()
            before = len(hostile.queue(alice.account_id, 2))
            await bob.send(alice.username, "only to the phone")
            assert len(hostile.queue(alice.account_id, 2)) == before == 0
            assert texts(await alice.receive(wait=5)) == ["only to the phone"]
        finally:
            for client in (alice, laptop, bob):
                await client.close()

    run(scenario())


def test_absent_account_proof(hostile: HostileServer, tmp_path: Path) -> None:
    """ "No such account" must come with the map's proof of absence: an unknown name
    has one; a hidden account (a bare 404, another name's proof, or a made-up map that
    leaves the name out, shown to a client that has seen the account) is refused."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            nobody = unique()
            with pytest.raises(UnknownContact):
                await bob.lookup(nobody)
            assert kinds(bob) == []
            absent = httpx.get(hostile.url() + f"/v1/accounts/{nobody}", timeout=20)
            assert absent.status_code == 404 and absent.json()["error"] == "not_found"
            assert set(absent.json()["transparency"]) == {"head", "map_proof"}
            for body in (
                {"error": "not_found", "message": "no such account"},  # no proof at all
                absent.json(),  # the proof for another name
            ):
                hostile.rules(
                    [
                        {
                            "method": "GET",
                            "path": f"/v1/accounts/{alice.username}",
                            "status": 404,
                            "body": body,
                        }
                    ]
                )
                with pytest.raises(TransparencyFailure) as refused:
                    await bob.lookup(alice.username)
                assert refused.value.kind == "directory_mismatch"
            assert set(kinds(bob)) == {"directory_mismatch"} and len(kinds(bob)) == 2
            # bob has seen alice's account; a new head's map without her is a signed lie
            hostile.clear_rules()
            await bob.lookup(alice.username)
            fork, fake_map, size, head = _fork_with(hostile, {})
            hidden = {
                "error": "not_found",
                "message": "no such account",
                "transparency": {
                    "head": b64(head),
                    "map_proof": map_proof_of(fake_map, alice.username),
                },
            }
            hostile.rules(
                [
                    {
                        "method": "GET",
                        "path": f"/v1/accounts/{alice.username}",
                        "status": 404,
                        "body": hidden,
                    },
                    _consistency_rule(fork, bob, size),
                ]
            )
            with pytest.raises(TransparencyFailure) as lied:
                await bob.lookup(alice.username)
            assert lied.value.kind == "stale_lookup"
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


# ---------------------------------------------------------------------- 8. gossip


def test_server_refusing_consistency_proof_raises_alarm(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Bob gets a head from alice's message that is newer than his, and the server hangs up
    on every request for the consistency proof: the head is kept and tried again at each
    monitoring pass (a server that comes back proves it, no alarm); one still unproven
    after the deadline is a ``consistency_refused`` alarm."""

    async def newer_gossip(alice: Client, bob: Client, text: str) -> None:
        newcomer = await user(hostile, tmp_path)  # the log grows
        await alice.lookup(newcomer.username)  # alice's head is now newer than bob's
        await newcomer.close()
        await alice.send(bob.username, text)
        assert texts(await bob.receive(wait=10)) == [text]

    async def scenario() -> None:
        alice = await user(hostile, tmp_path, view="alice")
        bob = await user(hostile, tmp_path, view="bob")
        hang_up = [{"view": "bob", "method": "GET", "path": "/v1/log/consistency", "hang_up": True}]
        try:
            await alice.lookup(bob.username)
            await bob.lookup(alice.username)
            kt = await bob._services.monitoring.transparency()
            # 1. the server hangs up, then answers again: proven on the next pass
            hostile.rules(hang_up)
            await newer_gossip(alice, bob, "first")
            assert kinds(bob) == []
            with pytest.raises(ServerUnavailable):
                await bob.monitor()  # it hangs up on bob's own monitoring too
            assert kinds(bob) == []  # within the deadline: tried again later
            hostile.clear_rules()
            await bob.monitor()
            assert kinds(bob) == [] and await kt.retry_gossip() == 0
            # 2. the server keeps hanging up past the deadline
            hostile.rules(hang_up)
            await newer_gossip(alice, bob, "second")
            kt.gossip_deadline = 0.0
            with pytest.raises(ServerUnavailable):
                await bob.monitor()
            assert kinds(bob) == ["consistency_refused"]
            assert "would not prove" in bob.alarms()[0].detail
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def _as_first_format(head: SignedTreeHead, root_: bytes, log_key: SigningKey) -> bytes:
    """The head a client kept before heads committed to the map (``0x01 0x31``)."""
    body = b"\x01\x31" + head.tree_size.to_bytes(8, "big") + head.timestamp.to_bytes(8, "big")
    body += root_
    return body + log_key.sign(b"sealpost/v1/tree-head\x00" + body)


def test_a_head_kept_in_the_first_format_must_be_extended(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """A profile that kept a head of the first format (no map root) still holds the server
    to it: the first new head must be proven to extend it. Honest: no alarm, and the new
    head is kept; a server whose log does not extend it: ``log_inconsistent``."""

    async def scenario() -> None:
        for honest in (True, False):
            alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
            await alice.lookup(bob.username)
            kept = SignedTreeHead.decode(unb64(hostile.get("/v1/log/head")["head"]))
            old_root = kept.root if honest else hashlib.sha256(b"another history").digest()
            with alice.store.transaction() as conn:
                alice.store.set_meta(
                    conn, "log_head", _as_first_format(kept, old_root, hostile.log_key)
                )
            path, passcode = alice.store.path, "passcode-" + alice.username
            await alice.close()
            await user(hostile, tmp_path)  # the log grows
            alice = await Client.open(path, passcode)
            try:
                assert alice.log_head() is None  # only the anchor
                if honest:
                    await alice.lookup(bob.username)
                    assert kinds(alice) == []
                    assert alice.log_head()["tree_size"] > kept.tree_size  # type: ignore[index]
                else:
                    with pytest.raises(TransparencyFailure):
                        await alice.lookup(bob.username)
                    assert kinds(alice) == ["log_inconsistent"]
            finally:
                await alice.close()
                await bob.close()

    run(scenario())


async def _register_and_close(hostile: HostileServer, root_: Path) -> None:
    await (await user(hostile, root_)).close()


def test_an_auditor_state_of_the_first_format_must_be_extended(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """``sealpost audit`` kept a head of the first format: the next run proves the new head
    extends it (honest), or fails (a server whose log does not)."""
    from sealpost.client.audit import STATE_FILE

    for honest in (True, False):
        state = tmp_path / f"audit-{honest}"
        audit = [sys.executable, "-m", "sealpost.cli", "audit", "--server", hostile.url()]
        audit += ["--state", str(state), "--json"]
        first = subprocess.run(audit, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        doc = json.loads((state / STATE_FILE).read_text())
        kept = SignedTreeHead.decode(unb64(doc["head"]))
        old_root = kept.root if honest else hashlib.sha256(b"another history").digest()
        doc["head"] = b64(_as_first_format(kept, old_root, hostile.log_key))
        (state / STATE_FILE).write_text(json.dumps(doc))
        run(_register_and_close(hostile, tmp_path))  # the log grows
        second = subprocess.run(audit, capture_output=True, text=True, timeout=60)
        if honest:
            assert second.returncode == 0, second.stderr
            assert '"consistent": true' in second.stdout
        else:
            assert second.returncode == 8, (second.stdout, second.stderr)
