"""A text written while the server is down (``send(..., queue_offline=True)``) is kept in
the profile (services/pending.py), survives the client closing and a SIGKILL at any
moment, and reaches the contact once, in order, when the server is back (a real server
process, stopped and started again on the same port); one to a contact that turns out
untrusted, or whose account was removed meanwhile, becomes ``failed`` with the reason.
Without ``queue_offline`` (the command line's ``sealpost send``) an offline send still
fails and stores nothing."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ServerProcess, unique_name
from test_client_account_removal import _remove
from test_client_e2e import texts

from sealpost.client import Client, SendFailed, ServerUnavailable
from sealpost.client.store import TEST_PARAMS

PASSCODE = "crash-test-passcode"  # client_worker.py's
WORKER = Path(__file__).with_name("client_worker.py")
KILLS = 16  # SIGKILLs of the process sending what was written offline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own on a fixed port, so profiles find it again after a restart."""
    proc = ServerProcess(
        tmp_path / "server" / "data", tmp_path / "server" / "logs",
        "--rate-per-address", "0", "--rate-sealed-per-address", "0",
        "--port", str(free_port()),
    ).start()  # fmt: skip
    yield proc
    proc.stop()


async def pair(server: ServerProcess, root: Path) -> tuple[Client, Client]:
    """alice and bob, who have exchanged a message (each knows the other)."""
    alice, bob = [
        await Client.create(
            root / name, PASSCODE, server_url=server.url, username=name, params=TEST_PARAMS
        )
        for name in (unique_name("alice"), unique_name("bob"))
    ]
    await alice.send(bob.username, "hello")
    assert texts(await bob.receive(wait=10)) == [(alice.username, "hello")]
    await bob.send(alice.username, "hi")
    await alice.receive(wait=10)
    return alice, bob


def test_a_text_written_offline_survives_the_client_and_arrives_once(
    restartable: ServerProcess, tmp_path: Path
) -> None:
    async def offline() -> tuple[str, str]:
        alice, bob = await pair(restartable, tmp_path)
        await bob.close()
        restartable.stop()
        await alice.close()  # a process started while the server is down (as the CLI's)
        alice = await Client.open(tmp_path / alice.username, PASSCODE)
        before = len(alice.history(bob.username))
        with pytest.raises(ServerUnavailable):  # the CLI's send: an error, nothing kept
            await alice.send(bob.username, "not kept")
        assert len(alice.history(bob.username)) == before
        first = await alice.send(bob.username, "written offline", queue_offline=True)
        second = await alice.send(bob.username, "and another", queue_offline=True)
        assert (first.status, second.status) == ("sending", "sending")
        shown = [(m.text, m.status) for m in alice.history(bob.username)[-2:]]
        assert shown == [("written offline", "sending"), ("and another", "sending")]
        with pytest.raises(ServerUnavailable):
            await alice.flush_outbox()  # still down: they stay
        await alice.close()
        return alice.username, bob.username

    alice_name, bob_name = asyncio.run(offline())
    restartable.start()

    async def back() -> None:
        alice = await Client.open(tmp_path / alice_name, PASSCODE)
        try:
            statuses = [m.status for m in alice.history(bob_name)[-2:]]
            assert statuses == ["sending", "sending"]  # kept in the profile
            assert await alice.flush_outbox() == 2
            assert [m.status for m in alice.history(bob_name)[-2:]] == ["sent", "sent"]
            assert await alice.flush_outbox() == 0  # nothing left to send twice
        finally:
            await alice.close()
        bob = await Client.open(tmp_path / bob_name, PASSCODE)
        try:
            got = texts(await bob.receive(wait=10))
            assert got == [(alice_name, "written offline"), (alice_name, "and another")]
            assert texts(await bob.receive(wait=1)) == []
        finally:
            await bob.close()

    asyncio.run(back())


def test_a_text_written_offline_to_a_contact_that_turns_out_untrusted_fails_with_the_reason(
    restartable: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice, bob = await pair(restartable, tmp_path)
        alice.verify(bob.username)
        restartable.stop()
        await alice.close()  # started offline: no sender certificate in memory
        alice = await Client.open(tmp_path / alice.username, PASSCODE)
        kept = await alice.send(bob.username, "to a changed key", queue_offline=True)
        # meanwhile bob's account key changes (what a lookup records: a new key pinned,
        # the old one kept, the sessions dropped); alice verified bob, so sending stops
        contact = alice._services.directory.by_name(bob.username)
        assert contact is not None
        with alice.store.unit() as repos:
            repos.contacts.change_key(
                bob.username, b"\x01" * 32, contact.account_key, contact.account_id
            )
        alice._services.directory.changed()
        restartable.start()
        assert await alice.flush_outbox() == 0
        [message] = [m for m in alice.history(bob.username) if m.id == kept.id]
        assert message.status == "failed"
        failed = [e for e in alice.take_events() if isinstance(e, SendFailed)]
        assert [(e.peer, e.message_id) for e in failed] == [(bob.username, kept.id)]
        assert "safety number" in failed[0].reason or bob.username in failed[0].reason
        assert await alice.flush_outbox() == 0  # failed for good: not tried again
        await alice.close()
        await bob.close()

    asyncio.run(scenario())


def test_a_text_written_offline_to_an_account_removed_meanwhile_fails_with_the_reason(
    restartable: ServerProcess, tmp_path: Path
) -> None:
    async def offline() -> tuple[str, str, bytes]:
        alice, bob = await pair(restartable, tmp_path)
        await bob.close()
        restartable.stop()
        await alice.close()
        alice = await Client.open(tmp_path / alice.username, PASSCODE)
        kept = await alice.send(bob.username, "to a removed account", queue_offline=True)
        await alice.close()
        return alice.username, bob.username, kept.id

    alice_name, bob_name, kept_id = asyncio.run(offline())
    _remove(restartable.data, bob_name, "--quarantine", "0")  # by the operator, meanwhile
    restartable.start()

    async def back() -> None:
        alice = await Client.open(tmp_path / alice_name, PASSCODE)
        try:
            assert await alice.flush_outbox() == 0
            [message] = [m for m in alice.history(bob_name) if m.id == kept_id]
            assert message.status == "failed"
            failed = [e for e in alice.take_events() if isinstance(e, SendFailed)]
            assert [(e.peer, e.message_id) for e in failed] == [(bob_name, kept_id)]
            assert "not_found" in failed[0].reason  # the server: no such account
            assert alice.waiting() == 0 and await alice.flush_outbox() == 0
        finally:
            await alice.close()

    asyncio.run(back())


def test_sigkill_while_sending_what_was_written_offline_loses_and_duplicates_nothing(
    restartable: ServerProcess, tmp_path: Path
) -> None:
    total = 20

    async def offline() -> tuple[str, str]:
        alice, bob = await pair(restartable, tmp_path)
        await bob.close()
        restartable.stop()
        await alice.close()
        alice = await Client.open(tmp_path / alice.username, PASSCODE)
        for i in range(total):
            await alice.send(bob.username, f"p{i:03d}", queue_offline=True)
        await alice.close()
        return alice.username, bob.username

    alice_name, bob_name = asyncio.run(offline())
    restartable.start()
    kills = 0
    for attempt in range(40):
        with (tmp_path / "flush.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), "flush", str(tmp_path / alice_name), bob_name, "0"],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert proc.stdout is not None
        opened = proc.stdout.readline() == b"open\n"  # the profile is open: sending now
        if opened and attempt < KILLS:  # killed at once, then later and later into the sends
            time.sleep(0.015 * attempt)  # (encrypted and committed, sent, answered, settled)
            proc.kill()
            kills += 1
        proc.wait()
        proc.stdout.close()
        if attempt >= KILLS and proc.returncode == 0:
            break
    assert proc.returncode == 0, (tmp_path / "flush.log").read_text()
    assert kills == KILLS

    async def check() -> None:
        alice = await Client.open(tmp_path / alice_name, PASSCODE)
        bob = await Client.open(tmp_path / bob_name, PASSCODE)
        try:
            sent = [(m.text, m.status) for m in alice.history(bob_name) if m.outgoing]
            assert sent[1:] == [(f"p{i:03d}", "sent") for i in range(total)]
            got: list[tuple[str, str]] = []
            while batch := texts(await bob.receive(wait=2)):
                got += batch
            assert got == [(alice_name, f"p{i:03d}") for i in range(total)]  # once, in order
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(check())
