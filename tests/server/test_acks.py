"""The process's ack collector (:mod:`sealpost.server.acks`) on every backend: the acks of
many connections received in one event-loop iteration are one group commit; a stale epoch
fails its own connection alone and deletes nothing of it; a connection that ends has what
it holds committed with its fence as it is then, and ends only once every batch of its
acks is done (also when a later one is refused at once before an earlier one is
committed); a connection past its bound of uncommitted acks waits for room; the metric
counts what was committed."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from sealpost.server.acks import MAX_PENDING_ACKS, AckCommitter
from sealpost.server.fanout.base import DeviceAddress
from sealpost.server.metrics import Metrics
from sealpost.server.storage.base import (
    AccountRecord,
    DeviceRecord,
    Envelope,
    PreKeyUpload,
    StaleEpoch,
    Storage,
    StorageUnavailable,
    each_outcome,
)
from sealpost.server.storage.postgres import PostgresStorage
from sealpost.server.storage.sqlite import SqliteStorage
from services import MakeStorage

ACKED = "sealpost_messages_acked_total"


class _Conn:
    """A stream connection as the collector sees it (:class:`~.acks.Acking`)."""

    def __init__(self, address: DeviceAddress, fence: int | None) -> None:
        self.address: DeviceAddress | None = address
        self.fence = fence
        self.acks: list[bytes] = []
        self.pending = 0
        self.committing: asyncio.Future[Any] | None = None
        self.failures: list[BaseException] = []

    def ack_failed(self, exc: BaseException) -> None:
        self.failures.append(exc)


def _run(make: MakeStorage, body: object) -> None:
    async def main() -> None:
        storage = make()
        await storage.open()
        try:
            await body(storage)  # type: ignore[operator]
        finally:
            await storage.close()

    asyncio.run(main())


async def _device_with_queue(storage: Storage, messages: int) -> tuple[DeviceAddress, list[bytes]]:
    account_id = os.urandom(16)
    await storage.create_account(
        AccountRecord(account_id, account_id.hex()[:12], os.urandom(32), b"h" * 32, True, 0),
        DeviceRecord(account_id, 1, b"cert-1", 0),
        PreKeyUpload(),
    )
    for _ in range(messages):
        await storage.enqueue(
            [Envelope(os.urandom(16), account_id, 1, os.urandom(32))],
            exempt={},
            received_at=1,
            expires_at=10**10,
            max_depth=10_000,
        )
    queued = await storage.fetch(account_id, 1, after_seq=0, limit=10_000)
    return (account_id, 1), [m.message_id for m in queued]


def _hold_commits(storage: SqliteStorage) -> threading.Event:
    """Keep the storage's commit thread busy, as a slow disk would, until the event is set:
    the next batch is written and waits there for its commit."""
    gate = threading.Event()
    thread = storage._committer
    assert thread is not None
    thread.submit(gate.wait, 10)
    return gate


def _commits(storage: Storage) -> int:
    if isinstance(storage, SqliteStorage):
        return storage.commits
    assert isinstance(storage, PostgresStorage)
    return storage.writes.batches


def test_acks_of_many_connections_in_one_iteration_are_one_group_commit(
    backend: MakeStorage,
) -> None:
    async def body(storage: Storage) -> None:
        metrics = Metrics()
        committer = AckCommitter(storage, metrics)
        devices = [await _device_with_queue(storage, 2) for _ in range(20)]
        conns = []
        for address, _ids in devices:
            conns.append(_Conn(address, await storage.claim_device(*address)))
        before = _commits(storage)
        for conn, (_address, ids) in zip(conns, devices, strict=True):
            for message_id in ids:  # all in one iteration, as parsed from many sockets
                committer.add(conn, message_id)
        assert all(c.pending == 2 for c in conns)
        await asyncio.sleep(0)  # the iteration ends: the collector queues them all
        assert all(c.acks == [] and c.committing is not None for c in conns)
        for conn in conns:
            await committer.drain(conn)
        assert _commits(storage) - before == 1
        for conn, (address, _ids) in zip(conns, devices, strict=True):
            assert conn.failures == [] and conn.pending == 0 and conn.committing is None
            assert await storage.fetch(*address, after_seq=0, limit=10) == []
        assert f"{ACKED}{{}} 40" in metrics.render()

    _run(backend, body)


def test_a_stale_epoch_fails_its_own_connection_alone(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        metrics = Metrics()
        committer = AckCommitter(storage, metrics)
        (old_address, old_ids), (address, ids) = [
            await _device_with_queue(storage, 1) for _ in range(2)
        ]
        displaced = _Conn(old_address, await storage.claim_device(*old_address))
        await storage.claim_device(*old_address)  # a newer connection of that device
        current = _Conn(address, await storage.claim_device(*address))
        committer.add(displaced, old_ids[0])
        committer.add(current, ids[0])
        await asyncio.sleep(0)  # both queued by the collector, as one operation
        assert displaced.committing is current.committing is not None
        await committer.drain(displaced)
        await committer.drain(current)
        assert [type(e) for e in displaced.failures] == [StaleEpoch]
        assert current.failures == []
        assert [m.message_id for m in await storage.fetch(*old_address, after_seq=0, limit=9)] == (
            old_ids
        )
        assert await storage.fetch(*address, after_seq=0, limit=9) == []
        assert f"{ACKED}{{}} 1\n" in metrics.render()  # only what was committed

    _run(backend, body)


def test_what_a_connection_holds_when_it_ends_is_committed_with_its_fence_then(
    backend: MakeStorage,
) -> None:
    """The client closed (its fence dropped) in the iteration that received its ack: the
    ack is its own although a newer connection (on another process) claimed the device."""

    async def body(storage: Storage) -> None:
        committer = AckCommitter(storage, Metrics())
        address, ids = await _device_with_queue(storage, 1)
        conn = _Conn(address, await storage.claim_device(*address))
        await storage.claim_device(*address)
        committer.add(conn, ids[0])
        conn.fence = None
        await committer.drain(conn)  # before the iteration's end
        assert conn.failures == []
        assert await storage.fetch(*address, after_seq=0, limit=9) == []

    _run(backend, body)


def test_a_connection_past_its_bound_of_uncommitted_acks_waits_for_room(
    backend: MakeStorage,
) -> None:
    async def body(storage: Storage) -> None:
        committer = AckCommitter(storage, Metrics())
        address, ids = await _device_with_queue(storage, 1)
        conn = _Conn(address, await storage.claim_device(*address))
        for _ in range(MAX_PENDING_ACKS):  # the same id again and again: still acks
            committer.add(conn, ids[0])
        assert conn.pending == MAX_PENDING_ACKS
        waiting = asyncio.create_task(committer.room(conn))
        await asyncio.sleep(0)
        assert not waiting.done()  # held until the commit
        await asyncio.wait_for(waiting, 10)
        assert conn.pending == 0 and conn.failures == []
        await committer.room(conn)  # under the bound: no wait
        assert await storage.fetch(*address, after_seq=0, limit=9) == []

    _run(backend, body)


def test_each_outcome_waits_for_every_device_whatever_the_order() -> None:
    """Storage's helper for ack_each_nowait: each device's StaleEpoch or None once all are
    done (even if they finish out of order, or the last is refused at once); the first
    other error fails it whole."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        stale: asyncio.Future[Any] = loop.create_future()
        stale.set_exception(StaleEpoch("newer"))
        outcome = each_outcome([first, second, stale])
        second.set_result(1)
        await asyncio.sleep(0)
        assert not outcome.done()  # the first is still in flight
        first.set_result(2)
        results = await asyncio.wait_for(outcome, 1)
        assert results[:2] == [None, None] and isinstance(results[2], StaleEpoch)
        failing, ok = loop.create_future(), loop.create_future()
        failed = each_outcome([failing, ok])
        failing.set_exception(StorageUnavailable("down"))
        ok.set_result(0)
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(failed, 1)
        assert await each_outcome([]) == []

    asyncio.run(run())


def test_acks_queued_to_a_closed_storage_fail_their_connections_and_settle() -> None:
    """ack_each_nowait raising at once (the storage is closed: shutting down) fails every
    connection whose acks were queued, once each; their counts settle, nothing is left
    committing, and drain returns; a connection holding nothing is left out."""

    class Closed:
        def ack_each_nowait(self, acks: object) -> asyncio.Future[Any]:
            raise StorageUnavailable("closed")

    async def run() -> None:
        committer = AckCommitter(Closed(), Metrics())  # type: ignore[arg-type]
        one, two, idle = (_Conn((os.urandom(16), 1), 1) for _ in range(3))
        committer.add_all(one, [b"a" * 16, b"b" * 16])
        committer.add(two, b"c" * 16)
        committer._held.append(idle)  # as if its acks had gone out through drain already
        await asyncio.sleep(0)
        for conn in (one, two):
            assert conn.pending == 0 and conn.committing is None and conn.acks == []
            assert [type(e) for e in conn.failures] == [StorageUnavailable]
        assert idle.failures == [] and idle.committing is None
        await asyncio.wait_for(committer.drain(one), 1)

    asyncio.run(run())


def test_a_displaced_connection_drains_its_acks_still_committing_past_those_refused(
    tmp_path: Path,
) -> None:
    """Acks queued while the connection held the device are still committing when a newer
    connection claims it; the next ones are refused at once (StaleEpoch), their batch done
    first. drain waits for the earlier batch all the same: the acks the connection received
    reach the database before it ends."""

    async def run() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        gate = threading.Event()
        try:
            metrics = Metrics()
            committer = AckCommitter(storage, metrics)
            address, ids = await _device_with_queue(storage, 2)
            conn = _Conn(address, await storage.claim_device(*address))
            gate = _hold_commits(storage)
            committer.add(conn, ids[0])
            await asyncio.sleep(0)  # queued: its commit waits for the disk
            earlier = conn.committing
            assert earlier is not None
            await storage.claim_device(*address)  # a newer connection of the device
            committer.add(conn, ids[1])
            for _ in range(5):  # queued and refused at once
                await asyncio.sleep(0)
            assert [type(e) for e in conn.failures] == [StaleEpoch]
            assert not earlier.done() and conn.pending == 1
            draining = asyncio.create_task(committer.drain(conn))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not draining.done()  # the first batch is still committing
            gate.set()
            await asyncio.wait_for(draining, 10)
            assert earlier.done() and conn.pending == 0 and conn.committing is None
            left = await storage.fetch(*address, after_seq=0, limit=9)
            assert [m.message_id for m in left] == [ids[1]]  # the first committed; not the refused
            assert f"{ACKED}{{}} 1\n" in metrics.render()
        finally:
            gate.set()
            await storage.close()

    asyncio.run(run())


def test_drain_waits_for_an_earlier_batch_when_the_storage_refuses_a_later_one_at_once() -> None:
    """ack_each_nowait raising at once (the storage closing) for a later batch while an
    earlier one of the same connection is still committing: the later fails the connection
    and settles its count, and drain (and room) still wait for the earlier one."""

    class Closing:
        def __init__(self) -> None:
            self.first: asyncio.Future[list[StaleEpoch | None]] | None = None

        def ack_each_nowait(self, acks: object) -> asyncio.Future[Any]:
            if self.first is not None:
                raise StorageUnavailable("closed")
            self.first = asyncio.get_running_loop().create_future()
            return self.first

    async def run() -> None:
        storage = Closing()
        committer = AckCommitter(storage, Metrics())  # type: ignore[arg-type]
        conn = _Conn((os.urandom(16), 1), 1)
        committer.add_all(conn, [b"a" * 16] * MAX_PENDING_ACKS)
        await asyncio.sleep(0)  # the first batch: committing
        committer.add(conn, b"b" * 16)
        await asyncio.sleep(0)  # the second: refused at once
        assert [type(e) for e in conn.failures] == [StorageUnavailable]
        assert conn.pending == MAX_PENDING_ACKS
        waiting = [
            asyncio.create_task(committer.drain(conn)),
            asyncio.create_task(committer.room(conn)),
        ]
        for _ in range(5):
            await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        assert storage.first is not None
        storage.first.set_result([None])
        await asyncio.wait_for(asyncio.gather(*waiting), 1)
        assert conn.pending == 0 and conn.committing is None
        assert len(conn.failures) == 1

    asyncio.run(run())
