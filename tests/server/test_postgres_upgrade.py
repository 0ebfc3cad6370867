"""A PostgreSQL database of schema version 4 with messages queued, upgraded to this
server's schema (migration 5 replaced ``sealpost_enqueue`` and ``sealpost_batch``, the
functions every send goes through): the old messages are delivered in the order they were
queued, and after them the new ones; acks, epochs, quotas, shared bodies and idempotent
sends work on the rows written before the upgrade.

A database of version 5 with a device connected (its epoch claimed) is upgraded to fence
sends (migration 6, a new ``sealpost_batch`` overload): the connection from before the
upgrade sends on until a newer one claims the device, and then is refused; a process of
version 5 still running meanwhile (the 14-argument ``sealpost_batch``) still stores.

The old databases are made by this code with :data:`~.pg_schema.MIGRATIONS` cut at 4 or
5: what writes a queue is the database's own functions (the old ones then), called as the
old server called them (:func:`_old_batch`: the 14-argument ``sealpost_batch`` of
migrations 4 and 5, which this server no longer calls), so its rows are what an old
server wrote. Released migrations are never edited, so the cut is that schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import pytest
from test_storage_backends import _account, _env

from sealpost.protocol.send_id import queued_message_id
from sealpost.server.storage import pg_cluster
from sealpost.server.storage.base import (
    Envelope,
    Fence,
    QueueFull,
    SharedEnvelope,
    StaleEpoch,
)
from sealpost.server.storage.pg_schema import MIGRATIONS
from sealpost.server.storage.postgres import PostgresStorage
from services import fresh_database

OLD = 4


@pytest.fixture
def dsn() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _send(
    storage: PostgresStorage, envelopes: list[Envelope], depth: int = 100
) -> asyncio.Future[int]:
    return storage.enqueue_nowait(
        envelopes, exempt={}, received_at=5, expires_at=10**12, max_depth=depth
    )


async def _old_batch(storage: PostgresStorage, envelopes: list[Envelope]) -> list[int]:
    """Queue envelopes as a server of version 4 or 5 did: one call of the 14-argument
    ``sealpost_batch`` (one batch, one transaction; no fence); their sequence numbers."""
    pool = storage._pool
    assert pool is not None
    n = len(envelopes)
    record = await pool.fetchrow(
        "SELECT status, seqs FROM sealpost_batch($1::bytea[], $2::bigint[], $3::bytea[],"
        " $4::bytea[], $5::int[], $6::bigint[], $7::bigint[], $8::int, $9::bigint,"
        " '{}'::int[], '{}'::bytea[], '{}'::bigint[], '{}'::bytea[], '{}'::bigint[])",
        [e.account_id for e in envelopes],
        [e.device_id for e in envelopes],
        [e.message_id for e in envelopes],
        [e.body for e in envelopes],
        [len(e.body) for e in envelopes],
        [5] * n,
        [10**12] * n,
        100,
        0,
    )
    assert record["status"] == 0
    return list(record["seqs"])


def _multi(storage: PostgresStorage, shared: list[SharedEnvelope]) -> asyncio.Future[int]:
    return storage.enqueue_shared_nowait(
        b"shared body", shared, received_at=5, expires_at=10**12, max_depth=100
    )


async def _queues(dsn: str) -> dict[tuple[bytes, int], tuple[int, int, int, int]]:
    """Per device: (depth, bytes) as ``device_queues`` keeps them, (rows, sizes) as
    counted in ``queue``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT d.account_id, d.device_id, d.depth, d.bytes, count(q.seq),"
            " COALESCE(sum(q.size), 0) FROM device_queues d LEFT JOIN queue q"
            " ON q.account_id = d.account_id AND q.device_id = d.device_id"
            " GROUP BY 1, 2, 3, 4"
        )
    finally:
        await conn.close()
    return {(bytes(r[0]), r[1]): (r[2], r[3], r[4], int(r[5])) for r in rows}


async def _scalar(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize("solo", [False, True])
def test_a_version_4_database_with_messages_queued_is_upgraded(
    dsn: str, solo: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def at_version_4() -> tuple[
        bytes, bytes, list[Envelope], list[Envelope], list[SharedEnvelope], int
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(pg_cluster, "MIGRATIONS", MIGRATIONS[:OLD])
            storage = PostgresStorage(dsn, solo=False)
            await storage.open()
            try:
                a = await _account(storage, devices=2)
                b = await _account(storage)
                to_a = [[_env(a, 1), _env(a, 2)] for _ in range(4)]
                to_b = [[_env(b)] for _ in range(4)]
                shared = [SharedEnvelope(os.urandom(16), x, d) for x, d in ((a, 1), (a, 2), (b, 1))]
                await _old_batch(storage, [e for s in to_a[:2] + to_b[:2] for e in s])
                await _multi(storage, shared)  # sealpost_enqueue: called as version 4 did
                await _old_batch(storage, [e for s in to_a[2:] + to_b[2:] for e in s])
                epoch = await storage.claim_device(b, 1)  # b's connection before the upgrade
            finally:
                await storage.close()
        versions = await _scalar(
            dsn, "SELECT array_agg(version ORDER BY version) FROM schema_migrations"
        )
        assert versions == list(range(1, OLD + 1))
        flat_a = [e for s in to_a for e in s]
        flat_b = [e for s in to_b for e in s]
        return a, b, flat_a, flat_b, shared, epoch

    async def upgraded() -> None:
        a, b, old_a, old_b, shared, old_epoch = await at_version_4()
        storage = PostgresStorage(dsn, solo=solo)
        await storage.open()  # what the server does at start-up: the migrations after 4
        try:
            versions = await _scalar(
                dsn, "SELECT array_agg(version ORDER BY version) FROM schema_migrations"
            )
            assert versions == [v for v, _ in MIGRATIONS]

            # the old messages, in the order they were queued (the shared one in its place)
            def expected(device: tuple[bytes, int], old: list[Envelope]) -> list[bytes]:
                mine = [e.message_id for e in old if (e.account_id, e.device_id) == device]
                (own,) = [s.message_id for s in shared if (s.account_id, s.device_id) == device]
                return [*mine[:2], own, *mine[2:]]

            for device, old in (((a, 1), old_a), ((a, 2), old_a), ((b, 1), old_b)):
                queued = await storage.fetch(*device, after_seq=0, limit=100)
                assert [m.message_id for m in queued] == expected(device, old)
                assert queued[2].body == b"shared body"
                seqs = [m.seq for m in queued]
                assert seqs == list(range(1, len(seqs) + 1))

            # a resend of messages queued before the upgrade stores nothing, alone or in a
            # batch, and neither does a resent multi send (its new body row is dropped)
            first_a = old_a[:2]  # a's first send, to its two devices
            assert await _send(storage, first_a) == 0
            assert await asyncio.gather(_send(storage, first_a), _multi(storage, shared)) == [0, 0]
            assert await _scalar(dsn, "SELECT count(*) FROM shared_bodies") == 1

            # new sends go after the old ones, idempotent on their send ids
            send_id = os.urandom(16)
            new_b = Envelope(queued_message_id(send_id, b, 1), b, 1, b"new")
            assert await asyncio.gather(_send(storage, [new_b]), _send(storage, [new_b])) == [1, 0]
            assert await _send(storage, [new_b]) == 0
            queued_b = await storage.fetch(b, 1, after_seq=0, limit=100)
            assert [m.message_id for m in queued_b] == [*expected((b, 1), old_b), new_b.message_id]
            assert queued_b[-1].seq == len(queued_b)

            # the depth counted before the upgrade still bounds the queue
            depth = len(queued_b)
            with pytest.raises(QueueFull):
                await _send(storage, [_env(b)], depth=depth)

            # b's connection from before the upgrade is fenced off by a newer one
            new_epoch = await storage.claim_device(b, 1)
            assert new_epoch > old_epoch
            with pytest.raises(StaleEpoch):
                await storage.ack_all(b, 1, [old_b[0].message_id], epoch=old_epoch)
            assert (
                await storage.ack_all(b, 1, [m.message_id for m in queued_b], epoch=new_epoch)
                == depth
            )

            # a's old messages acked (beside a send, in one batch), the shared body with them
            new_a = [_env(a, 1), _env(a, 2)]
            acks = [storage.ack_all(a, d, expected((a, d), old_a)) for d in (1, 2)]
            results = await asyncio.gather(*acks, _send(storage, new_a))
            assert results == [5, 5, 2]
            assert await _scalar(dsn, "SELECT count(*) FROM shared_bodies") == 0
            for d, env in zip((1, 2), new_a, strict=True):
                queued = await storage.fetch(a, d, after_seq=0, limit=100)
                assert [(m.message_id, m.seq) for m in queued] == [(env.message_id, 6)]
        finally:
            await storage.close()
        # the counts kept per device are what the queue holds
        for depth_kept, bytes_kept, rows, sizes in (await _queues(dsn)).values():
            assert (depth_kept, bytes_kept) == (rows, sizes)

    asyncio.run(upgraded())


@pytest.mark.parametrize("solo", [False, True])
def test_a_version_5_database_is_upgraded_to_fence_sends(
    dsn: str, solo: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device 1 of account a is connected before the upgrade (its epoch claimed at version
    5) and sends its copies to device 2. After the upgrade its sends carrying that epoch
    are stored, in order after the old ones, until a newer connection claims the device:
    then they raise StaleEpoch and store nothing, and the new connection's are stored.
    A version-5 process still running calls the 14-argument sealpost_batch, which stays
    and still stores (unfenced, as version 5 did)."""

    async def at_version_5() -> tuple[bytes, list[Envelope], int]:
        with monkeypatch.context() as patch:
            patch.setattr(pg_cluster, "MIGRATIONS", MIGRATIONS[:5])
            storage = PostgresStorage(dsn, solo=False)
            await storage.open()
            try:
                a = await _account(storage, devices=2)
                epoch = await storage.claim_device(a, 1)
                old = [_env(a, 2) for _ in range(3)]
                assert await _old_batch(storage, old) == [1, 2, 3]
            finally:
                await storage.close()
        versions = await _scalar(
            dsn, "SELECT array_agg(version ORDER BY version) FROM schema_migrations"
        )
        assert versions == [1, 2, 3, 4, 5]
        return a, old, epoch

    async def upgraded() -> None:
        a, old, epoch = await at_version_5()
        storage = PostgresStorage(dsn, solo=solo)
        await storage.open()
        try:
            versions = await _scalar(
                dsn, "SELECT array_agg(version ORDER BY version) FROM schema_migrations"
            )
            assert versions == [v for v, _ in MIGRATIONS] and 6 in versions

            def send(env: Envelope, fence: Fence) -> asyncio.Future[int]:
                return storage.enqueue_nowait(
                    [env],
                    exempt={a: 1},
                    received_at=5,
                    expires_at=10**12,
                    max_depth=100,
                    fence=fence,
                )

            # the connection from before the upgrade is still the device's: it sends on
            first = _env(a, 2)
            assert await send(first, Fence(a, 1, epoch)) == 1
            # a newer connection claims the device: the old one's sends are refused
            new_epoch = await storage.claim_device(a, 1)
            assert new_epoch == epoch + 1
            refused = _env(a, 2)
            with pytest.raises(StaleEpoch):
                await send(refused, Fence(a, 1, epoch))
            newer = _env(a, 2)
            assert await send(newer, Fence(a, 1, new_epoch)) == 1
            # a version-5 process still running stores through the old function
            from_old_process = _env(a, 2)
            assert await _old_batch(storage, [from_old_process]) == [6]
            queued = await storage.fetch(a, 2, after_seq=0, limit=100)
            assert [m.message_id for m in queued] == [
                *(e.message_id for e in old),
                first.message_id,
                newer.message_id,
                from_old_process.message_id,
            ]
            assert [m.seq for m in queued] == [1, 2, 3, 4, 5, 6]
        finally:
            await storage.close()
        for depth_kept, bytes_kept, rows, sizes in (await _queues(dsn)).values():
            assert (depth_kept, bytes_kept) == (rows, sizes)

    asyncio.run(upgraded())


def test_server_migrate_upgrades_a_version_4_database_and_then_finds_it_up_to_date(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sealpost server migrate`` (a process of its own, as an operator runs it before
    starting the new servers) applies what version 4 lacks, once."""
    with monkeypatch.context() as patch:
        patch.setattr(pg_cluster, "MIGRATIONS", MIGRATIONS[:OLD])
        assert asyncio.run(pg_cluster.migrate(dsn)) == list(range(1, OLD + 1))
    run = [sys.executable, "-m", "sealpost.cli", "server", "migrate", "--database", dsn]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    first = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    newer = ", ".join(str(v) for v, _ in MIGRATIONS if v > OLD)
    assert first.stdout == f"applied migrations: {newer}\n"
    again = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert (again.returncode, again.stdout) == (0, "applied migrations: none (up to date)\n")
