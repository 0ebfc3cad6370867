"""Several processes' storages on one PostgreSQL database (each a PostgresStorage with a
pool of its own, as a process has): one process without Redis is alone or refused, one
leader at a time and a new one when it goes, prekeys and log appends shared correctly,
migrations applied once and a newer schema refused, dropped connections answered
with StorageUnavailable and then recovered from, a reader of a queue that several
processes write never sees a gap, a process that loses its lock to another stops
serving for good, and one that takes it again reads again what it kept in memory, ends
its own old backend if PostgreSQL kept it (a connection cut on one side only), gives up a
lock connection that answers nothing, and lets no transaction in flight commit after the
loss."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from sealpost.server.storage.base import (
    AccountRecord,
    DeviceRecord,
    Envelope,
    MismatchedDevices,
    PreKeyUpload,
    StorageUnavailable,
)
from sealpost.server.storage.pg_cluster import CHECK_TIMEOUT, RETAKE_WAIT, ClusterError, migrate
from sealpost.server.storage.pg_schema import LOCK_PROCESSES, MIGRATIONS
from sealpost.server.storage.postgres import PostgresStorage
from sealpost.transparency.merkle import leaf_hash, verify_consistency, verify_inclusion
from services import fresh_database


@pytest.fixture
def dsn() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _record() -> AccountRecord:
    account_id = os.urandom(16)
    return AccountRecord(account_id, account_id.hex()[:12], os.urandom(32), b"h" * 32, True, 0)


async def _register(storage: PostgresStorage, prekeys: PreKeyUpload | None = None) -> bytes:
    record = _record()
    await storage.create_account(
        record, DeviceRecord(record.account_id, 1, b"cert", 0), prekeys or PreKeyUpload()
    )
    return record.account_id


def test_a_process_without_redis_is_alone_on_its_database(dsn: str) -> None:
    async def main() -> None:
        solo = PostgresStorage(dsn, solo=True)
        await solo.open()
        try:
            with pytest.raises(ClusterError, match="--redis"):
                await PostgresStorage(dsn, solo=True).open()
            with pytest.raises(ClusterError, match="without --redis"):
                await PostgresStorage(dsn, solo=False).open()
        finally:
            await solo.close()
        shared = [PostgresStorage(dsn, solo=False) for _ in range(2)]
        for storage in shared:
            await storage.open()
        try:
            with pytest.raises(ClusterError):
                await PostgresStorage(dsn, solo=True).open()
        finally:
            for storage in shared:
                await storage.close()

    asyncio.run(main())


def test_one_leader_at_a_time_and_another_takes_over(dsn: str) -> None:
    async def main() -> None:
        a, b = PostgresStorage(dsn, solo=False), PostgresStorage(dsn, solo=False)
        await a.open()
        await asyncio.sleep(0.2)
        await b.open()
        try:
            for _ in range(30):
                await asyncio.sleep(0.1)
                assert not (a.leader() and b.leader())
            assert a.leader() and not b.leader()
            await a.close()
            for _ in range(50):
                if b.leader():
                    break
                await asyncio.sleep(0.1)
            assert b.leader(), "no process took over within 5 s"
        finally:
            await b.close()

    asyncio.run(main())


def test_processes_share_prekeys_once_and_one_log(dsn: str) -> None:
    prekeys = PreKeyUpload(
        signed_prekey=(1, b"spk"), one_time=[(i, b"otk-%d" % i) for i in range(50)]
    )

    async def main() -> None:
        stores = [PostgresStorage(dsn, solo=False, pool_size=5) for _ in range(3)]
        for storage in stores:
            await storage.open()
        try:
            account_id = await _register(stores[0], prekeys)
            bundles = await asyncio.gather(
                *(stores[i % 3].take_bundle(account_id, 1) for i in range(60))
            )
            keys = [b.one_time for b in bundles if b is not None and b.one_time is not None]
            assert len(keys) == len(set(keys)) and 40 <= len(keys) <= 50
            # registrations through all three at once: one log, indexes 0..n-1, no fork
            await asyncio.gather(*(_register(stores[i % 3]) for i in range(30)))
            size = await stores[1].log_size()
            assert size == 31
            roots = {await s.log_root(size) for s in stores}
            assert len(roots) == 1
            (head,) = roots
            for storage in stores:
                for index in (0, 7, 30):
                    entries = await storage.log_entries(await _account_at(storage, index))
                    item = next(e for e in entries if e.index == index)
                    proof = await storage.log_inclusion(index, size)
                    verify_inclusion(leaf_hash(item.entry), index, size, proof, head)
            old = await stores[2].log_root(10)
            verify_consistency(10, size, old, head, await stores[0].log_consistency(10, size))
        finally:
            for storage in stores:
                await storage.close()

    asyncio.run(main())


async def _account_at(storage: PostgresStorage, index: int) -> bytes:
    pool = storage._pool
    assert pool is not None
    value = await pool.fetchval("SELECT account_id FROM log_entries WHERE idx = $1", index)
    return bytes(value)


def test_migrations_run_once_and_a_newer_schema_is_refused(dsn: str) -> None:
    async def main() -> None:
        assert await migrate(dsn) == [v for v, _ in MIGRATIONS] == list(range(1, 9))
        assert await migrate(dsn) == []
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (999)")
        finally:
            await conn.close()
        with pytest.raises(ClusterError, match="newer"):
            await PostgresStorage(dsn).open()
        with pytest.raises(ClusterError, match="schema versions"):  # sealpost admin's view
            await PostgresStorage(dsn, admin=True).open()

    asyncio.run(main())


def test_dropped_connections_are_unavailable_then_recovered(dsn: str) -> None:
    async def main() -> None:
        storage = PostgresStorage(dsn, solo=False)
        await storage.open()
        try:
            account_id = await _register(storage)

            async def slow(conn: asyncpg.Connection) -> None:
                await conn.execute("SELECT pg_sleep(10)")

            in_flight = asyncio.ensure_future(storage._tx(slow))
            await asyncio.sleep(0.3)
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await admin.close()
            with pytest.raises(StorageUnavailable):  # the request in flight: a 503
                await in_flight
            # once it holds its lock again (a connection of its own, made at once), the
            # next ones find (or make) a working connection by themselves
            for _ in range(50):
                with contextlib.suppress(StorageUnavailable):
                    assert len(await storage.devices(account_id)) == 1
                    break
                await asyncio.sleep(0.1)
            assert len(await storage.devices(account_id)) == 1
            for _ in range(50):  # the cluster connection comes back too
                if storage.leader():
                    break
                await asyncio.sleep(0.1)
            assert storage.leader()
        finally:
            await storage.close()

    asyncio.run(main())


def test_a_reader_never_sees_a_gap_while_processes_send_to_one_device(dsn: str) -> None:
    """Three processes' storages send to one device at once, group-committed, while a
    fourth reads its queue after the last sequence number it saw, as a stream's pusher
    does: each read continues exactly where the previous one ended (a sequence number
    is committed only after every smaller one), so nothing is skipped, and every
    message arrives once, each process's in the order it sent them."""

    async def main() -> None:
        stores = [PostgresStorage(dsn, solo=False, pool_size=4) for _ in range(4)]
        for storage in stores:
            await storage.open()
        try:
            a = await _register(stores[0])
            reader, writers = stores[0], stores[1:]
            sent: list[list[bytes]] = [[] for _ in writers]

            async def write(i: int) -> None:
                for _ in range(20):  # three sends in flight at a time: batches of several
                    envelopes = [Envelope(os.urandom(16), a, 1, b"m") for _ in range(3)]
                    sent[i] += [e.message_id for e in envelopes]
                    await asyncio.gather(
                        *(
                            writers[i].enqueue_nowait(
                                [e], exempt={}, received_at=5, expires_at=10**12, max_depth=10**4
                            )
                            for e in envelopes
                        )
                    )

            seen: list[tuple[int, bytes]] = []
            reads = 0  # reads that found messages while the writers were still writing
            writing = asyncio.gather(*(write(i) for i in range(len(writers))))
            while True:
                done = writing.done()
                after = seen[-1][0] if seen else 0
                batch = await reader.fetch(a, 1, after_seq=after, limit=50)
                if batch:
                    assert batch[0].seq == after + 1, f"skipped {after + 1}..{batch[0].seq - 1}"
                    assert [m.seq for m in batch] == list(range(after + 1, after + 1 + len(batch)))
                    seen += [(m.seq, m.message_id) for m in batch]
                    reads += 0 if done else 1
                elif done:
                    break
                await asyncio.sleep(0.001)
            await writing
            assert reads >= 3  # the reader did read beside the writers
            ids = [m for _, m in seen]
            assert len(ids) == len(set(ids)) == 3 * 60
            for mine in sent:
                assert [m for m in ids if m in set(mine)] == mine
        finally:
            for storage in stores:
                await storage.close()

    asyncio.run(main())


async def _refused_within(storage: PostgresStorage, account_id: bytes, seconds: float) -> bool:
    """Whether the storage answers StorageUnavailable within ``seconds``."""
    for _ in range(int(seconds * 20)):
        try:
            await storage.devices(account_id)
        except StorageUnavailable:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("solo", [True, False])
def test_a_process_that_loses_its_lock_to_another_stops_serving(dsn: str, solo: bool) -> None:
    """Audit 16 (/tmp/audit16/solo_race.py): the process's lock connection is terminated
    and, before it can take the lock again, a process without Redis takes it (here the
    test's own connection, waiting on the lock, is granted it the moment PostgreSQL
    releases it). The first process may no longer serve: the new one believes it is
    alone, keeps its tails and device lists in memory and tells no one of its sends. So
    every operation of the first is refused from then on, nothing is answered from
    memory, and it says why (``stopped``), for good: not even once the other has gone."""

    async def main() -> None:
        a = PostgresStorage(dsn, solo=solo)
        await a.open()
        try:
            account_id = await _register(a)
            await a.fetch(account_id, 1, after_seq=0, limit=100)  # solo: the tail is known
            await a.enqueue(
                [Envelope(os.urandom(16), account_id, 1, b"m1")],
                exempt={},
                received_at=5,
                expires_at=10**12,
                max_depth=100,
            )
            assert a.stopped() is None
            conn = a.cluster._conn
            assert conn is not None
            other = await asyncpg.connect(dsn)
            try:
                await other.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
                await other.execute("SELECT pg_advisory_lock($1)", LOCK_PROCESSES)
                assert await _refused_within(a, account_id, 3)
                assert a.fetch_known(account_id, 1, after_seq=0, limit=100) is None
                with pytest.raises(StorageUnavailable):
                    await a.fetch(account_id, 1, after_seq=0, limit=100)
                with pytest.raises(StorageUnavailable):
                    await a.enqueue(
                        [Envelope(os.urandom(16), account_id, 1, b"m2")],
                        exempt={},
                        received_at=5,
                        expires_at=10**12,
                        max_depth=100,
                    )
                for _ in range(60):
                    if a.stopped() is not None:
                        break
                    await asyncio.sleep(0.05)
                reason = a.stopped()
                assert reason is not None and "lost the database to another process" in reason
                assert not a.leader()
            finally:
                await other.close()  # the other process goes: its lock is free again
            b = PostgresStorage(dsn, solo=True)
            await b.open()  # a process without Redis is admitted: the first one is out
            try:
                await asyncio.sleep(1.5)  # past the first one's retry interval
                assert await _refused_within(a, account_id, 0.1)
                assert a.stopped() == reason
            finally:
                await b.close()
        finally:
            await a.close()

    asyncio.run(main())


def test_a_process_alone_that_takes_its_lock_again_reads_again_what_it_kept(dsn: str) -> None:
    """A process without Redis whose lock connection dropped takes the lock again by
    itself; another process may have written meanwhile (here ``sealpost admin``'s
    storage, which takes no lock, adds a device and queues a message), so the queue
    tails and device lists it kept are read again from the database: the message is
    fetched and a send that names the old device list is refused."""

    async def main() -> None:
        a = PostgresStorage(dsn, solo=True)
        await a.open()
        writer = PostgresStorage(dsn, admin=True)
        await writer.open()
        try:
            account_id = await _register(a)
            assert await a.fetch(account_id, 1, after_seq=0, limit=100) == []
            first = Envelope(os.urandom(16), account_id, 1, b"first")
            await a.enqueue([first], exempt={}, received_at=5, expires_at=10**12, max_depth=100)
            # behind its back, as another process would while it did not hold the lock
            await writer.add_device(
                DeviceRecord(account_id, 2, b"cert-2", 0), PreKeyUpload(), max_devices=5
            )
            behind = Envelope(os.urandom(16), account_id, 1, b"behind")
            await writer.enqueue(
                [behind, Envelope(os.urandom(16), account_id, 2, b"behind")],
                exempt={},
                received_at=5,
                expires_at=10**12,
                max_depth=100,
            )
            conn = a.cluster._conn
            assert conn is not None
            old = conn.get_server_pid()
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", old)
            finally:
                await admin.close()
            for _ in range(100):  # it notices, and takes the lock again
                conn = a.cluster._conn
                if conn is not None and not conn.is_closed() and conn.get_server_pid() != old:
                    break
                await asyncio.sleep(0.05)
            assert conn is not None and conn.get_server_pid() != old
            assert a.stopped() is None
            queued = None
            for _ in range(60):
                try:
                    queued = await a.fetch(account_id, 1, after_seq=0, limit=100)
                    break
                except StorageUnavailable:
                    await asyncio.sleep(0.05)
            assert queued is not None
            assert [m.message_id for m in queued] == [first.message_id, behind.message_id]
            with pytest.raises(MismatchedDevices):
                await a.enqueue(
                    [Envelope(os.urandom(16), account_id, 1, b"stale list")],
                    exempt={},
                    received_at=5,
                    expires_at=10**12,
                    max_depth=100,
                )
        finally:
            await writer.close()
            await a.close()

    asyncio.run(main())


class Proxy:
    """A TCP proxy in front of PostgreSQL that can cut one connection on the client side
    only (the backend behind it lives on, as behind a NAT or proxy that dropped one side)
    or freeze it (nothing passes either way, nothing is closed: a host gone silent)."""

    def __init__(self, dsn: str) -> None:
        self._upstream = urlsplit(dsn)
        self._pairs: dict[int, tuple[asyncio.StreamWriter, asyncio.Event]] = {}
        self._cut: set[asyncio.Event] = set()  # the pairs whose server side is kept open
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.dsn = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Proxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.dsn = self._upstream._replace(netloc=f"postgres@127.0.0.1:{port}").geturl()
        try:
            yield self
        finally:
            self._server.close()
            for writer in self._held:
                writer.close()
            for task in self._tasks:
                task.cancel()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, port = self._upstream.hostname or "127.0.0.1", self._upstream.port or 5432
        server_r, server_w = await asyncio.open_connection(host, port)
        flowing = asyncio.Event()
        flowing.set()
        # keyed by the port PostgreSQL sees as the client's (pg_stat_activity.client_port)
        self._pairs[server_w.get_extra_info("sockname")[1]] = (client_w, flowing)
        self._held += [client_w, server_w]
        for r, w in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.ensure_future(self._pipe(r, w, flowing))
            self._tasks.add(task)

    async def _pipe(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, flowing: asyncio.Event
    ) -> None:
        try:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    await flowing.wait()
                    w.write(data)
                    await w.drain()
        finally:
            if flowing not in self._cut:  # the other end closed: so does this one
                w.close()

    async def _pair(self, backend: int) -> tuple[asyncio.StreamWriter, asyncio.Event]:
        conn = await asyncpg.connect(self._upstream.geturl())
        try:
            port = await conn.fetchval(
                "SELECT client_port FROM pg_stat_activity WHERE pid = $1", backend
            )
        finally:
            await conn.close()
        return self._pairs[port]

    async def cut_client_side(self, backend: int) -> None:
        client_w, flowing = await self._pair(backend)
        self._cut.add(flowing)
        client_w.transport.abort()

    async def freeze(self, backend: int) -> None:
        _, flowing = await self._pair(backend)
        flowing.clear()


async def _alive(dsn: str, pid: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        )
    finally:
        await conn.close()


async def _serves_again(
    storage: PostgresStorage, account_id: bytes, old: int, seconds: float
) -> None:
    """Waits until the storage holds its lock on a connection other than ``old`` and
    answers again."""
    for _ in range(int(seconds * 20)):
        conn = storage.cluster._conn
        if conn is not None and not conn.is_closed() and conn.get_server_pid() != old:
            with contextlib.suppress(StorageUnavailable):
                await storage.devices(account_id)
                return
        assert storage.stopped() is None, storage.stopped()
        await asyncio.sleep(0.05)
    raise AssertionError(f"not serving again within {seconds} s")


@pytest.mark.parametrize("solo", [True, False])
def test_a_lock_connection_cut_on_its_side_only_ends_its_own_backend_and_serves(
    dsn: str, solo: bool
) -> None:
    """Review (/tmp/rv/zombie.py): the process's side of its lock connection drops while
    the backend behind it lives on, holding the lock. Taking the lock again, the process
    finds it held, by its own old backend: it ends that one and takes it, and serves on
    (the leader too), instead of taking itself for the loser to another process and
    stopping for good."""

    async def main() -> None:
        async with Proxy(dsn).running() as proxy:
            a = PostgresStorage(proxy.dsn, solo=solo)
            await a.open()
            try:
                account_id = await _register(a)
                for _ in range(40):
                    if a.leader():
                        break
                    await asyncio.sleep(0.05)
                assert a.leader()
                conn = a.cluster._conn
                assert conn is not None
                old = conn.get_server_pid()
                await proxy.cut_client_side(old)
                assert await _refused_within(a, account_id, 2)
                await _serves_again(a, account_id, old, RETAKE_WAIT + 3)
                assert a.stopped() is None
                assert not await _alive(dsn, old)
                for _ in range(60):  # the leader lock, which the old backend held, too
                    if a.leader():
                        break
                    await asyncio.sleep(0.05)
                assert a.leader()
            finally:
                await a.close()

    asyncio.run(main())


def test_a_lock_connection_that_answers_nothing_is_given_up(dsn: str) -> None:
    """The lock connection's host goes silent (a failover whose old primary sends no
    reset): the leader's check times out within :data:`CHECK_TIMEOUT`, so it stops
    leading and refuses, rather than leading on while another process might lead on the
    new primary; then it takes its lock again (ending its own old backend) and serves."""

    async def main() -> None:
        async with Proxy(dsn).running() as proxy:
            a = PostgresStorage(proxy.dsn, solo=True)
            await a.open()
            try:
                account_id = await _register(a)
                for _ in range(40):
                    if a.leader():
                        break
                    await asyncio.sleep(0.05)
                assert a.leader()
                conn = a.cluster._conn
                assert conn is not None
                old = conn.get_server_pid()
                await proxy.freeze(old)
                assert await _refused_within(a, account_id, CHECK_TIMEOUT + 2)
                assert not a.leader()
                await _serves_again(a, account_id, old, RETAKE_WAIT + 3)
                assert a.stopped() is None
            finally:
                await a.close()

    asyncio.run(main())


def test_a_transaction_in_flight_when_the_lock_is_lost_does_not_commit(dsn: str) -> None:
    """A transaction that began while the process held its lock and would commit after
    the loss: its connection is ended at the loss, so it rolls back and its caller gets
    StorageUnavailable, not a success."""

    async def main() -> None:
        a = PostgresStorage(dsn, solo=True)
        await a.open()
        try:
            await _register(a)

            async def slow(conn: asyncpg.Connection) -> None:
                await conn.execute("SELECT pg_sleep(1)")
                await conn.execute("CREATE TABLE written_after_the_loss ()")

            in_flight = asyncio.ensure_future(a._tx(slow))
            await asyncio.sleep(0.3)
            conn = a.cluster._conn
            assert conn is not None
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
                with pytest.raises(StorageUnavailable):
                    await in_flight
                await asyncio.sleep(1)
                assert await admin.fetchval("SELECT to_regclass('written_after_the_loss')") is None
            finally:
                await admin.close()
        finally:
            await a.close()

    asyncio.run(main())
