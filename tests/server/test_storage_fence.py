"""Sends are fenced as acks are (issue 16), on every backend: a send carrying the epoch of
a connection that a newer connection of the same device replaced (``fence``) raises
:class:`StaleEpoch` and stores nothing; with the device's current epoch it is stored. The
epoch is checked when the send is stored, in its place among the writes: a claim that
returned before then fences off a send queued before it (SQLite: the epochs in memory,
read by the operation as it runs; PostgreSQL: read in the batch's transaction after the
sender's ``device_queues`` row is locked, so a claim committing while the batch waits for
that row is seen). In a group commit a stale send fails alone, the others are stored, and
it counts against no quota and shadows no message id."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from test_storage_backends import _account, _env, _run
from test_storage_idempotent import _rows

from sealpost.server.storage.base import (
    Envelope,
    Fence,
    QueueFull,
    StaleEpoch,
    Storage,
)
from sealpost.server.storage.postgres import PostgresStorage
from sealpost.server.storage.sqlite import SqliteStorage
from services import MakeStorage, fresh_database


def _send(
    storage: Storage,
    envelopes: list[Envelope],
    fence: Fence | None,
    *,
    exempt: dict[bytes, int] | None = None,
    depth: int = 100,
) -> asyncio.Future[int]:
    """A send queued now (as the stream's are), from ``fence``'s device if given."""
    if exempt is None:
        exempt = {} if fence is None else {fence.account_id: fence.device_id}
    return storage.enqueue_nowait(
        envelopes, exempt=exempt, received_at=5, expires_at=1000, max_depth=depth, fence=fence
    )


async def _queued(storage: Storage, account_id: bytes, device_id: int) -> list[bytes]:
    return [
        m.message_id for m in await storage.fetch(account_id, device_id, after_seq=0, limit=100)
    ]


def _batches(storage: Storage) -> tuple[int, int]:
    """(group commits, batches that fell back to one operation at a time; SQLite: 0)."""
    if isinstance(storage, PostgresStorage):
        return storage.writes.batches, storage.writes.fallbacks
    assert isinstance(storage, SqliteStorage)
    return storage.commits, 0


def test_a_send_with_a_stale_fence_raises_stale_epoch_and_stores_nothing(
    backend: MakeStorage,
) -> None:
    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=2)  # device 1 sends its copy to device 2
        old = await storage.claim_device(a, 1)
        new = await storage.claim_device(a, 1)
        assert new > old
        with pytest.raises(StaleEpoch):
            await _send(storage, [_env(a, 2)], Fence(a, 1, old))
        assert await _queued(storage, a, 2) == []
        assert (await _rows(storage, a))[0] == 0  # the database, not a cache
        # the current epoch stores, and so does a send on no connection (sealed, HTTP)
        current = _env(a, 2)
        assert await _send(storage, [current], Fence(a, 1, new)) == 1
        unfenced = _env(a, 2)
        assert await _send(storage, [unfenced], None, exempt={a: 1}) == 1
        assert await _queued(storage, a, 2) == [current.message_id, unfenced.message_id]
        # the epoch is the sending device's: device 2 connecting does not fence device 1
        await storage.claim_device(a, 2)
        assert await _send(storage, [_env(a, 2)], Fence(a, 1, new)) == 1
        # and a stale send refused changed nothing: its resend on the new connection stores
        resent = _env(a, 2)
        with pytest.raises(StaleEpoch):
            await _send(storage, [resent], Fence(a, 1, old))
        assert await _send(storage, [resent], Fence(a, 1, new)) == 1
        assert (await _rows(storage, a))[0] == 4

    _run(backend, body)


def test_in_a_group_commit_a_stale_send_fails_alone(backend: MakeStorage) -> None:
    """Sends and acks of several devices in one group commit, one of them a stale send:
    it raises StaleEpoch, every other one is stored or applied, in one commit (no batch
    run again operation by operation). The stale send counts against no quota (a send
    after it fills the queue it would have passed) and its message ids are not taken (a
    later send in the batch with the same id is stored)."""

    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=2)
        b = await _account(storage, devices=2)
        c = await _account(storage)
        stale = Fence(a, 1, await storage.claim_device(a, 1))
        current = Fence(a, 1, await storage.claim_device(a, 1))
        b_epoch = await storage.claim_device(b, 2)
        await _send(storage, [_env(b, 2)], Fence(b, 1, await storage.claim_device(b, 1)))
        (acked,) = await _queued(storage, b, 2)
        refused = _env(a, 2)
        same_id = Envelope(refused.message_id, a, 2, b"the same id, on the new connection")
        before = _batches(storage)
        # the ack first, so that it is queued in this loop iteration with the sends
        ack = asyncio.ensure_future(storage.ack_all(b, 2, [acked], epoch=b_epoch))
        await asyncio.sleep(0)
        results = await asyncio.gather(
            _send(storage, [_env(a, 2)], current, depth=2),
            _send(storage, [refused], stale, depth=2),  # would fill a's device 2
            _send(storage, [same_id], current, depth=2),  # fits only without the stale one
            _send(storage, [_env(c, 1)], None),  # a sealed send
            return_exceptions=True,
        )
        assert await ack == 1
        assert isinstance(results[1], StaleEpoch)
        assert [results[0], results[2], results[3]] == [1, 1, 1]
        commits, fallbacks = _batches(storage)
        assert (commits - before[0], fallbacks - before[1]) == (1, 0)
        queued = await storage.fetch(a, 2, after_seq=0, limit=10)
        assert len(queued) == 2
        assert queued[1].message_id == same_id.message_id
        assert queued[1].body == same_id.body  # the new connection's, not the stale one's
        assert len(await _queued(storage, c, 1)) == 1
        assert await _queued(storage, b, 2) == []
        assert await _rows(storage, a) == (2, 0)

    _run(backend, body)


def test_a_stale_send_in_a_batch_run_again_one_by_one_still_fails_alone(
    backend: MakeStorage,
) -> None:
    """A send over its quota makes the batch run each operation on its own (PostgreSQL:
    each its own sealpost_batch; SQLite: savepoints): the stale send is refused there too,
    the full one alone is QueueFull, the others are stored."""

    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=2)
        b = await _account(storage)
        await _send(storage, [_env(b, 1)], None)  # b's queue holds one: full at depth 1
        stale = Fence(a, 1, await storage.claim_device(a, 1))
        current = Fence(a, 1, await storage.claim_device(a, 1))
        results = await asyncio.gather(
            _send(storage, [_env(a, 2)], stale),
            _send(storage, [_env(b, 1)], None, depth=1),
            _send(storage, [_env(a, 2)], current),
            return_exceptions=True,
        )
        assert isinstance(results[0], StaleEpoch)
        assert isinstance(results[1], QueueFull)
        assert results[2] == 1
        assert len(await _queued(storage, a, 2)) == 1
        assert len(await _queued(storage, b, 1)) == 1
        assert (await _rows(storage, a))[0] == 1

    _run(backend, body)


def test_sqlite_a_claim_after_a_send_was_queued_fences_it(tmp_path: Path) -> None:
    """The epoch is read when the operation runs, in the write order, not when it was
    queued: a claim between the two (the new connection's, on the same event loop) wins."""

    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            a = await _account(storage, devices=2)
            epoch = await storage.claim_device(a, 1)
            queued = _send(storage, [_env(a, 2)], Fence(a, 1, epoch))
            assert not queued.done()
            await storage.claim_device(a, 1)  # before the batch runs
            with pytest.raises(StaleEpoch):
                await queued
            assert await _rows(storage, a) == (0, 0)
        finally:
            await storage.close()

    asyncio.run(main())


def test_sqlite_bulk_batches_honour_the_fence(tmp_path: Path) -> None:
    """A batch of sends and acks that passes its checks on memory runs in bulk on the
    commit thread (:mod:`.sqlite_bulk`), without the operations' own code: a fence with
    the device's epoch keeps a send in bulk, a stale one sends its batch operation by
    operation, where it alone is refused, even with every other check known to pass."""

    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            a = await _account(storage, devices=2)
            old = Fence(a, 1, await storage.claim_device(a, 1))
            await _send(storage, [_env(a, 2)], old)  # device ids and depth now in memory
            bulk = storage.bulk_commits
            sends = [_send(storage, [_env(a, 2)], old) for _ in range(5)]
            assert await asyncio.gather(*sends) == [1] * 5
            assert storage.bulk_commits == bulk + 1  # the current epoch: in bulk
            queued = [_send(storage, [_env(a, 2)], old) for _ in range(3)]
            new = Fence(a, 1, await storage.claim_device(a, 1))  # before the batch starts
            mixed = [*queued, _send(storage, [_env(a, 2)], new)]
            results = await asyncio.gather(*mixed, return_exceptions=True)
            assert all(isinstance(r, StaleEpoch) for r in results[:3])
            assert results[3] == 1
            assert storage.bulk_commits == bulk + 1  # that batch ran operation by operation
            assert await _rows(storage, a) == (7, 0)
        finally:
            await storage.close()

    asyncio.run(main())


@pytest.fixture
def dsn() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.mark.parametrize("solo", [False, True])
def test_postgres_a_claim_committed_while_the_batch_waits_for_the_sender_fences_it(
    dsn: str, solo: bool
) -> None:
    """Another process's claim holds the sending device's ``device_queues`` row (its
    UPDATE, not yet committed) when the batch comes: the batch waits for that row, and
    once the claim commits it reads the new epoch and refuses the send. (Were the sender's
    row not locked by the batch, it would read the old epoch and store the send, after
    the claim had committed.) The destination is another device, whose row is free."""

    async def main() -> None:
        storage = PostgresStorage(dsn, solo=solo)
        await storage.open()
        other = await asyncpg.connect(dsn)
        try:
            a = await _account(storage, devices=2)
            epoch = await storage.claim_device(a, 1)
            claim = other.transaction()
            await claim.start()
            new = await other.fetchval(
                "UPDATE device_queues SET epoch = epoch + 1 WHERE account_id = $1"
                " AND device_id = 1 RETURNING epoch",
                a,
            )
            assert new == epoch + 1
            pid = other.get_server_pid()
            sent = _send(storage, [_env(a, 2)], Fence(a, 1, epoch))
            await _until_waiting_on(dsn, pid)
            assert not sent.done()
            await claim.commit()
            with pytest.raises(StaleEpoch):
                await asyncio.wait_for(sent, 10)
            assert await _rows(storage, a) == (0, 0)
            assert await _send(storage, [_env(a, 2)], Fence(a, 1, new)) == 1
        finally:
            await other.close()
            await storage.close()

    asyncio.run(main())


async def _until_waiting_on(dsn: str, pid: int) -> None:
    """Until some backend waits for a lock that backend ``pid`` holds."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(500):
            blocked = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))",
                pid,
            )
            if blocked:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the batch never waited for the claim's row")
    finally:
        await conn.close()
