"""SQLite storage: group commit batches concurrent writes, and a failing operation in a
batch rolls back alone; the write path's memory (queue tails, device lists, queue-depth
bounds) stays exactly the database, through refused operations, failed commits, acks and
purges; a large purge goes in steps; close() lets queued writes finish."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sealpost.server.storage import (
    AccountRecord,
    DeviceRecord,
    Envelope,
    MismatchedDevices,
    PreKeyUpload,
    QueuedMessage,
    QueueFull,
    SharedEnvelope,
    SqliteStorage,
    sqlite_core,
    sqlite_upkeep,
)
from sealpost.server.storage import sqlite as sqlite_module
from sealpost.server.storage.base import DeviceAcks, StaleEpoch
from sealpost.server.storage.tail import QueueTails


async def _with_account(storage: SqliteStorage, devices: int = 1) -> bytes:
    account_id = os.urandom(16)
    await storage.create_account(
        AccountRecord(account_id, account_id.hex()[:12], os.urandom(32), b"h" * 32, True, 0),
        DeviceRecord(account_id, 1, b"cert-1", 0),
        PreKeyUpload(),
    )
    for device_id in range(2, devices + 1):
        await storage.add_device(
            DeviceRecord(account_id, device_id, b"cert-%d" % device_id, 0),
            PreKeyUpload(),
            max_devices=100,
        )
    return account_id


def _env(account_id: bytes, device_id: int = 1) -> Envelope:
    return Envelope(os.urandom(16), account_id, device_id, os.urandom(32))


def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            account_id = await _with_account(storage)
            before = storage.commits
            await asyncio.gather(
                *(
                    storage.enqueue(
                        [_env(account_id)], exempt={}, received_at=1, expires_at=9, max_depth=500
                    )
                    for _ in range(200)
                )
            )
            assert storage.commits - before < 200  # batched
            queued = await storage.fetch(account_id, 1, after_seq=0, limit=1000)
            assert len(queued) == 200
            assert [m.seq for m in queued] == sorted(m.seq for m in queued)
        finally:
            await storage.close()

    asyncio.run(main())


def test_a_failing_operation_rolls_back_alone(tmp_path: Path) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            account_id = await _with_account(storage, devices=2)
            good = storage.enqueue(
                [_env(account_id, 1), _env(account_id, 2)],
                exempt={},
                received_at=1,
                expires_at=9,
                max_depth=5,
            )
            bad = storage.enqueue(
                [_env(account_id, 1)], exempt={}, received_at=1, expires_at=9, max_depth=5
            )
            results = await asyncio.gather(good, bad, return_exceptions=True)
            assert results[0] == 2  # envelopes stored
            assert isinstance(results[1], MismatchedDevices)
            assert results[1].accounts == {account_id: ([2], [])}
            assert len(await storage.fetch(account_id, 1, after_seq=0, limit=10)) == 1
            # the queue limit refuses the whole send, including envelopes that would fit
            with pytest.raises(QueueFull):
                await storage.enqueue(
                    [_env(account_id, 1), _env(account_id, 2)],
                    exempt={},
                    received_at=1,
                    expires_at=9,
                    max_depth=1,
                )
            assert len(await storage.fetch(account_id, 2, after_seq=0, limit=10)) == 1
            purged = await storage.purge(now=9)
            assert purged.messages == 2
        finally:
            await storage.close()

    asyncio.run(main())


# ---------------------------------------------------------------------- the write path


def _run(tmp_path: Path, body: Callable[[SqliteStorage], Awaitable[None]]) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            await body(storage)
        finally:
            await storage.close()

    asyncio.run(main())


def _enqueue(
    storage: SqliteStorage, envelopes: list[Envelope], *, expires_at: int = 1000, depth: int = 50
) -> Awaitable[None]:
    return storage.enqueue(
        envelopes, exempt={}, received_at=1, expires_at=expires_at, max_depth=depth
    )


def _truth(path: Path, account_id: bytes, device_id: int, after_seq: int) -> list[QueuedMessage]:
    """The queue as the database file has it, read by a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT message_id, seq, body, received_at FROM queue"
            " WHERE account_id = ? AND device_id = ? AND seq > ? ORDER BY seq",
            (account_id, device_id, after_seq),
        ).fetchall()
    finally:
        conn.close()
    return [QueuedMessage(bytes(m), s, bytes(b), r) for m, s, b, r in rows]


class _FailingCommits:
    """Makes the next ``count`` commits fail as a full disk would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = sqlite_core._commit

        def commit(conn: sqlite3.Connection) -> None:
            if self.count:
                self.count -= 1
                raise sqlite3.OperationalError("database or disk is full")
            real(conn)

        monkeypatch.setattr(sqlite_core, "_commit", commit)  # where the commit path looks it up


def test_a_known_tail_is_read_from_memory_and_matches_the_database(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        assert await storage.fetch(account_id, 1, after_seq=0, limit=100) == []  # sets it
        envelopes = [_env(account_id) for _ in range(3)]
        await asyncio.gather(*(_enqueue(storage, [e]) for e in envelopes))
        ops = storage.committed_ops
        queued = await storage.fetch(account_id, 1, after_seq=0, limit=100)
        assert storage.committed_ops == ops  # no database read
        assert queued == _truth(tmp_path / "db", account_id, 1, 0)
        assert [m.message_id for m in queued] == [e.message_id for e in envelopes]
        assert await storage.fetch(account_id, 1, after_seq=queued[0].seq, limit=1) == [queued[1]]
        assert await storage.ack_all(account_id, 1, [queued[0].message_id, os.urandom(16)]) == 1
        assert await storage.fetch(account_id, 1, after_seq=0, limit=100) == queued[1:]
        assert _truth(tmp_path / "db", account_id, 1, 0) == queued[1:]

    _run(tmp_path, body)


def test_a_partial_read_does_not_pass_for_the_whole_queue(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        for _ in range(5):
            await _enqueue(storage, [_env(account_id)])
        first = await storage.fetch(account_id, 1, after_seq=0, limit=2)
        assert len(first) == 2
        assert await storage.fetch(account_id, 1, after_seq=0, limit=10) == _truth(
            tmp_path / "db", account_id, 1, 0
        )
        rest = await storage.fetch(account_id, 1, after_seq=first[-1].seq, limit=10)
        assert len(rest) == 3

    _run(tmp_path, body)


def test_a_one_envelope_send_in_bulk_names_every_device_less_the_exempt_one(
    tmp_path: Path,
) -> None:
    """The bulk batch's check from memory of a send of one envelope (its own short path):
    it passes, in bulk, only when that envelope is all the account's devices less the
    exempt one; otherwise the batch runs operation by operation and the send is refused
    there, storing nothing."""

    def send(storage: SqliteStorage, env: Envelope, exempt: dict[bytes, int]) -> Any:
        return storage.enqueue_nowait(
            [env], exempt=exempt, received_at=1, expires_at=1000, max_depth=50
        )

    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage, devices=2)
        for device_id, other in ((1, 2), (2, 1)):  # device ids and depth bounds now known
            await send(storage, _env(account_id, device_id), {account_id: other})
        refused = [
            (_env(account_id, 2), {account_id: 2}),  # the exempt device named, 1 left out
            (_env(account_id, 2), {}),  # device 1 left out
            (_env(account_id, 1), {}),  # device 2 left out
        ]
        for env, exempt in refused:
            # A refusal empties the device lists (a rollback): read again by this send.
            await send(storage, _env(account_id, 2), {account_id: 1})
            bulk = storage.bulk_commits
            assert await send(storage, _env(account_id, 2), {account_id: 1}) == 1
            assert storage.bulk_commits == bulk + 1  # checked from memory, in bulk
            with pytest.raises(MismatchedDevices):
                await send(storage, env, exempt)
            assert storage.bulk_commits == bulk + 1
        assert len(await storage.fetch(account_id, 1, after_seq=0, limit=10)) == 1
        assert len(await storage.fetch(account_id, 2, after_seq=0, limit=10)) == 7

    _run(tmp_path, body)


def test_a_refused_send_in_a_batch_never_reaches_the_tail(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage, devices=2)
        for device_id in (1, 2):
            await storage.fetch(account_id, device_id, after_seq=0, limit=100)
        good = _enqueue(storage, [_env(account_id, 1), _env(account_id, 2)])
        bad = _enqueue(storage, [_env(account_id, 1)])  # names one device of two
        results = await asyncio.gather(good, bad, return_exceptions=True)
        assert results[0] == 2 and isinstance(results[1], MismatchedDevices)
        for device_id in (1, 2):
            memory = await storage.fetch(account_id, device_id, after_seq=0, limit=100)
            assert memory == _truth(tmp_path / "db", account_id, device_id, 0)
            assert len(memory) == 1

    _run(tmp_path, body)


def test_an_operation_that_fails_after_recording_an_effect_has_none(tmp_path: Path) -> None:
    """The machinery itself (private): effects of a rolled-back operation are dropped, and
    those of the others in its batch are applied once they are committed."""
    applied: list[str] = []

    async def body(storage: SqliteStorage) -> None:
        def op(name: str, fail: bool) -> Callable[[sqlite3.Connection], None]:
            def run(conn: sqlite3.Connection) -> None:
                storage._effects.append(lambda: applied.append(name))
                if fail:
                    raise ValueError(name)

            return run

        results = await asyncio.gather(
            storage._write(op("a", False)),
            storage._write(op("b", True)),
            storage._write(op("c", False)),
            return_exceptions=True,
        )
        assert results[0] is None and isinstance(results[1], ValueError) and results[2] is None
        assert applied == ["a", "c"]

    _run(tmp_path, body)


def test_a_failed_commit_changes_neither_the_database_nor_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = _FailingCommits(monkeypatch)

    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        await storage.fetch(account_id, 1, after_seq=0, limit=100)
        await _enqueue(storage, [_env(account_id)])
        failing.count = 1
        with pytest.raises(sqlite3.OperationalError):
            await _enqueue(storage, [_env(account_id)])
        memory = await storage.fetch(account_id, 1, after_seq=0, limit=100)
        assert len(memory) == 1
        assert memory == _truth(tmp_path / "db", account_id, 1, 0)
        await _enqueue(storage, [_env(account_id)])  # and the next commit works
        assert len(await storage.fetch(account_id, 1, after_seq=0, limit=100)) == 2

    _run(tmp_path, body)


def test_the_device_list_cache_is_never_ahead_of_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = _FailingCommits(monkeypatch)

    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        await _enqueue(storage, [_env(account_id, 1)])  # caches the device list {1}
        # A second device, and a send naming both, in one batch whose commit fails: the
        # send saw device 2 inside the transaction, but the database never got it.
        failing.count = 1
        added = storage.add_device(
            DeviceRecord(account_id, 2, b"cert-2", 0), PreKeyUpload(), max_devices=100
        )
        both = _enqueue(storage, [_env(account_id, 1), _env(account_id, 2)])
        results = await asyncio.gather(added, both, return_exceptions=True)
        assert all(isinstance(r, sqlite3.OperationalError) for r in results)
        with pytest.raises(MismatchedDevices) as refused:
            await _enqueue(storage, [_env(account_id, 1), _env(account_id, 2)])
        assert refused.value.accounts == {account_id: ([], [2])}
        await _enqueue(storage, [_env(account_id, 1)])
        # Once the device really exists, the cached list follows.
        await storage.add_device(
            DeviceRecord(account_id, 2, b"cert-2", 0), PreKeyUpload(), max_devices=100
        )
        with pytest.raises(MismatchedDevices):
            await _enqueue(storage, [_env(account_id, 1)])
        await _enqueue(storage, [_env(account_id, 1), _env(account_id, 2)])

    _run(tmp_path, body)


def test_the_queue_limit_holds_after_acks(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        for _ in range(3):
            await _enqueue(storage, [_env(account_id)], depth=3)
        with pytest.raises(QueueFull):
            await _enqueue(storage, [_env(account_id)], depth=3)
        first = (await storage.fetch(account_id, 1, after_seq=0, limit=1))[0]
        assert await storage.ack(account_id, 1, first.message_id)
        await _enqueue(storage, [_env(account_id)], depth=3)  # room again: counted anew
        with pytest.raises(QueueFull):
            await _enqueue(storage, [_env(account_id)], depth=3)
        assert len(_truth(tmp_path / "db", account_id, 1, 0)) == 3

    _run(tmp_path, body)


def test_purge_drops_expired_messages_from_memory(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        await storage.fetch(account_id, 1, after_seq=0, limit=100)
        await _enqueue(storage, [_env(account_id)], expires_at=10)
        await _enqueue(storage, [_env(account_id)], expires_at=20)
        assert (await storage.purge(now=15)).messages == 1
        memory = await storage.fetch(account_id, 1, after_seq=0, limit=100)
        assert memory == _truth(tmp_path / "db", account_id, 1, 0)
        assert len(memory) == 1

    _run(tmp_path, body)


def test_a_purge_larger_than_one_step_takes_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_upkeep, "PURGE_STEP", 3)  # where purge() looks it up

    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        await storage.fetch(account_id, 1, after_seq=0, limit=100)
        for _ in range(7):
            await _enqueue(storage, [_env(account_id)], expires_at=10)
        await _enqueue(storage, [_env(account_id)], expires_at=20)
        for _ in range(4):
            assert await storage.use_nonce(os.urandom(16), expires_at=10)
        commits = storage.commits
        purged = await storage.purge(now=15)
        assert (purged.messages, purged.nonces) == (7, 4)
        assert storage.commits - commits >= 3 + 2
        memory = await storage.fetch(account_id, 1, after_seq=0, limit=100)
        assert len(memory) == 1 and memory == _truth(tmp_path / "db", account_id, 1, 0)

    _run(tmp_path, body)


def test_close_lets_queued_writes_finish(tmp_path: Path) -> None:
    async def main() -> tuple[bytes, asyncio.Task[None]]:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        account_id = await _with_account(storage)
        pending = asyncio.ensure_future(_enqueue(storage, [_env(account_id)]))
        await asyncio.sleep(0)  # submitted, not yet committed
        await storage.close()
        return account_id, pending

    account_id, pending = asyncio.run(main())
    assert pending.done() and pending.exception() is None
    assert len(_truth(tmp_path / "db", account_id, 1, 0)) == 1


def test_tails_have_bounded_memory() -> None:
    tails = QueueTails(max_bytes=10_000, max_messages=3)
    a, b = (b"a" * 16, 1), (b"b" * 16, 1)
    tails.known(a, 0, [])
    tails.known(b, 0, [])

    def message(seq: int, size: int = 10) -> tuple[tuple[bytes, int], QueuedMessage]:
        return a, QueuedMessage(os.urandom(16), seq, b"x" * size, 0)

    tails.added([message(1), message(2), message(3)])
    assert [m.seq for m in tails.fetch(a, 0, 10) or []] == [1, 2, 3]
    tails.added([message(4)])  # past max_messages: forgotten, read from the db again
    assert tails.fetch(a, 0, 10) is None
    assert tails.fetch(b, 0, 10) == []
    tails.known(a, 4, [])
    tails.added([message(5, size=20_000)])  # past max_bytes: dropped, oldest first
    assert tails.fetch(a, 4, 10) is None and tails.fetch(b, 0, 10) is None
    assert len(tails) == 0


@pytest.mark.parametrize("seed", range(4))
def test_random_traffic_keeps_memory_equal_to_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Sends (some resent), acks, purges, reads at random positions and failed commits, in
    batches of concurrent operations: every fetch answers exactly what the database
    holds."""
    failing = _FailingCommits(monkeypatch)
    rng = random.Random(seed)

    async def body(storage: SqliteStorage) -> None:
        accounts = [await _with_account(storage, devices=rng.randint(1, 2)) for _ in range(3)]
        devices = {a: len(await storage.devices(a)) for a in accounts}
        addresses = [(a, d) for a in accounts for d in range(1, devices[a] + 1)]
        for now in range(1, 121):
            batch: list[Awaitable[Any]] = []
            for _ in range(rng.randint(1, 6)):
                kind = rng.random()
                account_id = rng.choice(accounts)
                if kind < 0.5:
                    named = list(range(1, devices[account_id] + 1))
                    if rng.random() < 0.1:
                        named = named[:1] if len(named) > 1 else [1, 2]  # refused
                    envelopes = [_env(account_id, d) for d in named]
                    queued = _truth(tmp_path / "db", account_id, named[0], 0)
                    if queued and rng.random() < 0.2:  # a resend of a queued message
                        old = rng.choice(queued).message_id
                        envelopes[0] = Envelope(old, account_id, named[0], envelopes[0].body)
                    expires = now + rng.randint(1, 30)
                    batch.append(_enqueue(storage, envelopes, expires_at=expires, depth=8))
                elif kind < 0.75:
                    address = rng.choice(addresses)
                    queued = _truth(tmp_path / "db", *address, 0)
                    ids = [m.message_id for m in queued if rng.random() < 0.6]
                    batch.append(storage.ack_all(*address, [*ids, os.urandom(16)]))
                elif kind < 0.8:
                    batch.append(storage.purge(now))
                else:
                    address = rng.choice(addresses)
                    queued = _truth(tmp_path / "db", *address, 0)
                    after = rng.choice([0, *(m.seq for m in queued)])
                    batch.append(storage.fetch(*address, after_seq=after, limit=100))
            failing.count = 1 if rng.random() < 0.1 else 0
            await asyncio.gather(*batch, return_exceptions=True)
            failing.count = 0
            for address in addresses:
                truth = _truth(tmp_path / "db", *address, 0)
                for after in {0, *(m.seq for m in truth[:2])}:
                    expected = [m for m in truth if m.seq > after][:5]
                    assert await storage.fetch(*address, after_seq=after, limit=5) == expected

    _run(tmp_path, body)


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "db"

    async def make(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        await _enqueue(storage, [Envelope(b"m" * 16, account_id, 1, b"old body")])

    _run(tmp_path, make)
    conn = sqlite3.connect(path)  # back to version 1's shape
    conn.executescript(
        "DROP TRIGGER queue_unref; DROP INDEX attachments_by_owner; DROP TABLE shared_bodies;"
        " ALTER TABLE queue DROP COLUMN body_ref; ALTER TABLE queue DROP COLUMN size;"
        " ALTER TABLE attachments DROP COLUMN owner; PRAGMA user_version=1;"
    )
    (account_id,) = conn.execute("SELECT account_id FROM accounts").fetchone()
    conn.close()

    async def check(storage: SqliteStorage) -> None:
        (message,) = await storage.fetch(bytes(account_id), 1, after_seq=0, limit=9)
        assert message.body == b"old body"
        with pytest.raises(QueueFull):  # its size was counted
            await storage.enqueue(
                [_env(bytes(account_id))],
                exempt={},
                received_at=1,
                expires_at=9,
                max_depth=50,
                max_bytes=len(b"old body") + 31,
            )
        await storage.enqueue_shared(
            b"new",
            [SharedEnvelope(os.urandom(16), bytes(account_id), 1)],
            received_at=1,
            expires_at=9,
            max_depth=50,
        )

    _run(tmp_path, check)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (sqlite_module.SCHEMA_VERSION,)
    conn.close()


# ---------------------------------------------------------------------- bulk batches


async def _warm(storage: SqliteStorage, account_id: bytes, devices: int = 1) -> None:
    """What a connected device's traffic leaves in memory: its queue tail (read once),
    its account's device list and its queue depth bound (one send, acked)."""
    for device_id in range(1, devices + 1):
        await storage.fetch(account_id, device_id, after_seq=0, limit=100)
    envelopes = [_env(account_id, d) for d in range(1, devices + 1)]
    await _enqueue(storage, envelopes)
    for env in envelopes:
        assert await storage.ack(account_id, env.device_id, env.message_id)


def _seqs_in_order(path: Path, message_ids: list[bytes]) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        seq = dict(conn.execute("SELECT message_id, seq FROM queue").fetchall())
    finally:
        conn.close()
    return [seq[m] for m in message_ids]


def test_a_batch_of_sends_and_acks_runs_in_bulk_and_keeps_memory_exact(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage) -> None:
        accounts = [await _with_account(storage, devices=2) for _ in range(3)]
        for account_id in accounts:
            await _warm(storage, account_id, devices=2)
            await asyncio.gather(
                *(_enqueue(storage, [_env(account_id, 1), _env(account_id, 2)]) for _ in range(3))
            )
        queued = {a: _truth(tmp_path / "db", a, 1, 0) for a in accounts}
        bulk, commits = storage.bulk_commits, storage.commits
        sends = [[_env(a, 1), _env(a, 2)] for _ in range(40) for a in accounts]
        futures = [_enqueue(storage, e) for e in sends]  # all submitted in one iteration
        acks = [
            storage.ack_all(accounts[0], 1, [m.message_id for m in queued[accounts[0]]]),
            storage.ack_all(accounts[1], 1, [queued[accounts[1]][0].message_id] * 2),
            storage.ack_all(accounts[2], 1, [queued[accounts[2]][1].message_id, os.urandom(16)]),
            # another device's message: not this device's to delete
            storage.ack_all(accounts[0], 2, [queued[accounts[1]][1].message_id]),
        ]
        results = await asyncio.gather(*futures, *acks)
        assert storage.commits == commits + 1 and storage.bulk_commits == bulk + 1
        assert results[: len(sends)] == [2] * len(sends)  # envelopes stored
        assert results[len(sends) :] == [3, 1, 1, 0]
        message_ids = [e.message_id for envelopes in sends for e in envelopes]
        seqs = _seqs_in_order(tmp_path / "db", message_ids)
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # the order submitted
        for account_id in accounts:
            for device_id in (1, 2):
                truth = _truth(tmp_path / "db", account_id, device_id, 0)
                assert await storage.fetch(account_id, device_id, after_seq=0, limit=200) == truth
        assert [len(_truth(tmp_path / "db", a, 1, 0)) for a in accounts] == [40, 42, 42]

    _run(tmp_path, body)


def test_one_send_over_its_queue_quota_in_a_bulk_batch_is_refused_alone(
    tmp_path: Path,
) -> None:
    async def body(storage: SqliteStorage) -> None:
        full, other = await _with_account(storage), await _with_account(storage)
        await _warm(storage, full)
        await _warm(storage, other)
        for _ in range(4):
            await _enqueue(storage, [_env(full)], depth=5)
        sends = [_env(other), _env(full), _env(other), _env(full), _env(other)]
        results = await asyncio.gather(
            *(
                storage.enqueue_nowait([e], exempt={}, received_at=1, expires_at=9, max_depth=5)
                for e in sends
            ),
            return_exceptions=True,
        )
        assert results[:3] == [1, 1, 1] and results[4] == 1  # envelopes stored
        assert isinstance(results[3], QueueFull)  # the sixth for a queue of five
        stored = [e.message_id for i, e in enumerate(sends) if i != 3]
        seqs = _seqs_in_order(tmp_path / "db", stored)
        assert seqs == sorted(seqs)
        assert sends[3].message_id not in {
            m.message_id for m in _truth(tmp_path / "db", full, 1, 0)
        }
        for account_id in (full, other):
            truth = _truth(tmp_path / "db", account_id, 1, 0)
            assert await storage.fetch(account_id, 1, after_seq=0, limit=100) == truth
        assert [len(_truth(tmp_path / "db", a, 1, 0)) for a in (full, other)] == [5, 3]

    _run(tmp_path, body)


def test_a_message_id_twice_in_one_batch_is_stored_once(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        await _warm(storage, account_id)
        queued = _env(account_id)
        await _enqueue(storage, [queued])
        sent = [queued]
        # a resend of a queued message among new ones: the bulk insert finds it, gives up
        # (rolled back) and the batch runs operation by operation
        bulk, commits = storage.bulk_commits, storage.commits
        batch = [_env(account_id), queued, _env(account_id)]
        stored = await asyncio.gather(*(_enqueue(storage, [e]) for e in batch))
        assert stored == [1, 0, 1]
        assert storage.commits == commits + 1 and storage.bulk_commits == bulk
        sent += batch
        # one id twice in one batch, the first copy new
        again = _env(account_id)
        batch = [_env(account_id), again, _env(account_id), again, _env(account_id)]
        stored = await asyncio.gather(*(_enqueue(storage, [e]) for e in batch))
        assert stored == [1, 1, 1, 0, 1]
        sent += batch
        truth = _truth(tmp_path / "db", account_id, 1, 0)
        firsts = list(dict.fromkeys(e.message_id for e in sent))
        assert [m.message_id for m in truth] == firsts  # each once, in the order first sent
        assert await storage.fetch(account_id, 1, after_seq=0, limit=100) == truth
        await _enqueue(storage, [_env(account_id)])  # and the next batch runs in bulk again
        assert storage.bulk_commits == bulk + 1

    _run(tmp_path, body)


@pytest.mark.parametrize("bulk", [True, False])
def test_the_acks_of_many_devices_are_one_operation_and_a_stale_one_is_refused_alone(
    tmp_path: Path, bulk: bool
) -> None:
    """ack_each_nowait queues one operation for every device whose epoch holds (with the
    load spread over many devices each acks about one message a commit: an operation, a
    future and an effect each cost more than the delete): in bulk beside sends, or, in a
    batch that cannot run in bulk, operation by operation; each device's own acks only,
    the queue tails exact, a stale device refused and deleting nothing."""

    async def body(storage: SqliteStorage) -> None:
        accounts = [await _with_account(storage, devices=2) for _ in range(4)]
        queued = {}
        for account_id in accounts:
            await _warm(storage, account_id, devices=2)
            await _enqueue(storage, [_env(account_id, 1), _env(account_id, 1), _env(account_id, 2)])
            queued[account_id] = _truth(tmp_path / "db", account_id, 1, 0)
            await storage.claim_device(account_id, 1)
        stale = accounts[3]
        await storage.claim_device(stale, 1)  # a newer connection of it: epoch 2
        acks = [DeviceAcks(a, 1, [m.message_id for m in queued[a]], 1) for a in accounts[:2]] + [
            # one of its two, and another device's message (not this device's to delete)
            DeviceAcks(accounts[2], 2, [queued[accounts[2]][0].message_id], None),
            DeviceAcks(accounts[2], 1, [queued[accounts[2]][1].message_id], 1),
            DeviceAcks(stale, 1, [m.message_id for m in queued[stale]], 1),
        ]
        other = await _with_account(storage)
        await _warm(storage, other)
        ops, commits, bulk_commits = storage.committed_ops, storage.commits, storage.bulk_commits
        sent = [_env(other)] + ([] if bulk else [_env(other, 2)])  # no such device 2
        sends = [  # all in one iteration: one batch
            storage.enqueue_nowait([e], exempt={}, received_at=1, expires_at=9, max_depth=50)
            for e in sent
        ]
        outcome = storage.ack_each_nowait(acks)
        results = await asyncio.gather(outcome, *sends, return_exceptions=True)
        assert storage.commits - commits == 1
        assert storage.committed_ops - ops == 1 + len(sends)  # the acks: one operation
        assert storage.bulk_commits - bulk_commits == int(bulk)
        assert results[0][:4] == [None] * 4
        assert isinstance(results[0][4], StaleEpoch)
        left = {a: [m.message_id for m in _truth(tmp_path / "db", a, 1, 0)] for a in accounts}
        assert left[accounts[0]] == left[accounts[1]] == []
        assert left[accounts[2]] == [queued[accounts[2]][0].message_id]
        assert left[stale] == [m.message_id for m in queued[stale]]
        for account_id in accounts:
            for device_id in (1, 2):
                truth = _truth(tmp_path / "db", account_id, device_id, 0)
                assert await storage.fetch(account_id, device_id, after_seq=0, limit=99) == truth

    _run(tmp_path, body)


def test_the_streams_acks_are_deleted_in_bulk_uncounted_and_ack_all_still_counts(
    tmp_path: Path,
) -> None:
    """In a bulk batch, ack_each_nowait's acks (whose counts nobody reads) go straight to
    the commit thread's DELETE, with no counting SELECT on the loop; an ack_all beside them
    is still counted (its own rows only), and both delete what they name."""

    async def body(storage: SqliteStorage) -> None:
        first, second = await _with_account(storage), await _with_account(storage)
        for account_id in (first, second):
            await _warm(storage, account_id)
            await _enqueue(storage, [_env(account_id), _env(account_id)])
        ids = {a: [m.message_id for m in _truth(tmp_path / "db", a, 1, 0)] for a in (first, second)}
        statements: list[str] = []
        assert storage._write_conn is not None
        storage._write_conn.set_trace_callback(statements.append)
        bulk = storage.bulk_commits
        outcome = storage.ack_each_nowait([DeviceAcks(first, 1, ids[first], None)])
        assert await outcome == [None]
        assert storage.bulk_commits == bulk + 1
        assert not any("group_concat" in sql for sql in statements)
        assert _truth(tmp_path / "db", first, 1, 0) == []
        statements.clear()
        # one batch: the task's first step (its submit) runs before the batch starts
        counted = asyncio.ensure_future(storage.ack_all(second, 1, [*ids[second], b"y" * 16]))
        each = storage.ack_each_nowait([DeviceAcks(first, 1, [b"x" * 16], None)])
        assert await asyncio.gather(each, counted) == [[None], 2]
        assert storage.bulk_commits == bulk + 2
        assert sum("group_concat" in sql for sql in statements) == 1
        assert _truth(tmp_path / "db", second, 1, 0) == []
        storage._write_conn.set_trace_callback(None)

    _run(tmp_path, body)


def test_an_ack_and_a_send_of_one_message_in_a_batch_run_in_order(tmp_path: Path) -> None:
    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        await _warm(storage, account_id)
        first, second = _env(account_id), _env(account_id)
        await _enqueue(storage, [first])
        # acked, then sent again (stored anew); sent, then acked (gone)
        results = await asyncio.gather(
            storage.ack_all(account_id, 1, [first.message_id]),
            _enqueue(storage, [first]),
            _enqueue(storage, [second]),
            storage.ack_all(account_id, 1, [second.message_id]),
        )
        assert results == [1, 1, 1, 1]  # acked, stored, stored, acked
        truth = _truth(tmp_path / "db", account_id, 1, 0)
        assert [m.message_id for m in truth] == [first.message_id]
        assert await storage.fetch(account_id, 1, after_seq=0, limit=100) == truth

    _run(tmp_path, body)


def test_a_long_batch_that_cannot_run_in_bulk_runs_in_order_in_smaller_ones(
    tmp_path: Path,
) -> None:
    async def body(storage: SqliteStorage) -> None:
        account_id = await _with_account(storage)
        await _warm(storage, account_id)
        sends = [[_env(account_id)] for _ in range(sqlite_module.MAX_BATCH * 3)]
        sends[sqlite_module.MAX_BATCH * 2][0] = _env(account_id, 2)  # no such device
        commits = storage.commits
        results = await asyncio.gather(
            *(_enqueue(storage, e, depth=10_000) for e in sends), return_exceptions=True
        )
        assert storage.commits - commits == 3  # operation by operation: MAX_BATCH at a time
        refused = [i for i, r in enumerate(results) if isinstance(r, Exception)]
        assert refused == [sqlite_module.MAX_BATCH * 2]
        assert isinstance(results[refused[0]], MismatchedDevices)
        truth = _truth(tmp_path / "db", account_id, 1, 0)
        stored = [e[0].message_id for i, e in enumerate(sends) if i not in refused]
        assert [m.message_id for m in truth] == stored  # in the order submitted
        assert await storage.fetch(account_id, 1, after_seq=0, limit=1000) == truth

    _run(tmp_path, body)
