"""What docs/OPERATIONS.md ("PostgreSQL settings and why") promises of the tables a relay
writes on every message, checked on a migrated database and under a real workload (sends,
acks, multi-recipient sends, connections, purges, through several batches):

- the tables updated on every send, ack or connection (``device_queues``, ``shared_bodies``)
  have no index but their primary key, and their updates change no key column, so every
  one of them is HOT (heap-only: no index entry written, none to vacuum);
- ``queue`` rows are inserted and deleted, never updated;
- the queue tables carry the autovacuum settings and fill factors the docs give.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import asyncpg
import pytest
from test_storage_backends import _account, _env

from sealpost.server.storage.base import Envelope, SharedEnvelope
from sealpost.server.storage.postgres import PostgresStorage
from services import fresh_database

#: The tables written per message, and the reloptions the migrations give them.
HOT_QUEUE = {
    "autovacuum_vacuum_scale_factor=0.01",
    "autovacuum_vacuum_insert_scale_factor=0.01",
    "autovacuum_analyze_scale_factor=0.02",
    "autovacuum_vacuum_cost_delay=0",
}
OPTIONS = {
    "queue": HOT_QUEUE,
    "nonces": HOT_QUEUE,
    "device_queues": HOT_QUEUE | {"fillfactor=50"},
    "shared_bodies": HOT_QUEUE | {"fillfactor=70"},
}
#: Updated on every send, ack or connection: no index but the primary key.
UPDATED_PER_MESSAGE = ("device_queues", "shared_bodies")


@pytest.fixture
def dsn() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def _workload(storage: PostgresStorage) -> None:
    accounts = [await _account(storage, devices=2) for _ in range(4)]
    for round_ in range(10):
        sends: list[asyncio.Future[int]] = []
        batch: list[list[Envelope]] = []
        for a in accounts:
            envelopes = [_env(a, 1), _env(a, 2)]
            batch.append(envelopes)
            sends.append(
                storage.enqueue_nowait(
                    envelopes, exempt={}, received_at=5, expires_at=10**12, max_depth=1000
                )
            )
        shared = [SharedEnvelope(os.urandom(16), a, d) for a in accounts for d in (1, 2)]
        sends.append(
            storage.enqueue_shared_nowait(
                b"body", shared, received_at=5, expires_at=10**12, max_depth=1000
            )
        )
        await asyncio.gather(*sends)
        epochs = {a: await storage.claim_device(a, 1) for a in accounts}
        acks = [
            storage.ack_all(a, 1, [e[0].message_id, s.message_id], epoch=epochs[a])
            for a, e, s in zip(accounts, batch, shared[::2], strict=True)
        ]
        acks += [
            storage.ack_all(a, 2, [e[1].message_id, s.message_id])
            for a, e, s in zip(accounts, batch, shared[1::2], strict=True)
        ]
        assert await asyncio.gather(*acks) == [2] * 8
        if round_ % 3 == 0:  # messages that expire, and the purge that deletes them
            a = accounts[round_ % len(accounts)]
            await storage.enqueue(
                [_env(a, 1), _env(a, 2)], exempt={}, received_at=5, expires_at=6, max_depth=1000
            )
            assert (await storage.purge(7)).messages == 2


def test_per_message_tables_are_updated_hot_and_the_queue_never(dsn: str) -> None:
    async def main() -> None:
        storage = PostgresStorage(dsn, solo=False)
        await storage.open()
        try:
            await _workload(storage)
        finally:
            await storage.close()  # its connections close: their statistics are flushed
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT pg_stat_force_next_flush()")
            stats = {
                r["relname"]: r
                for r in await conn.fetch(
                    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del"
                    " FROM pg_stat_user_tables"
                )
            }
            indexes = {
                r["table"]: r["indexes"]
                for r in await conn.fetch(
                    "SELECT c.relname AS table, array_agg(i.indisprimary) AS indexes"
                    " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
                    " GROUP BY c.relname"
                )
            }
            options = {
                r["relname"]: set(r["reloptions"] or [])
                for r in await conn.fetch(
                    "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])",
                    list(OPTIONS),
                )
            }
            toast = await conn.fetchval(
                "SELECT t.reloptions FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid"
                " WHERE c.relname = 'queue'"
            )
        finally:
            await conn.close()
        queue = stats["queue"]
        assert queue["n_tup_ins"] >= 10 * 16 and queue["n_tup_del"] >= 10 * 16
        assert queue["n_tup_upd"] == 0  # inserted and deleted, never updated
        for table in UPDATED_PER_MESSAGE:
            assert indexes[table] == [True], f"{table} has an index besides its primary key"
            row = stats[table]
            assert row["n_tup_upd"] > 0, table
            assert row["n_tup_hot_upd"] == row["n_tup_upd"], f"{table}: updates that were not HOT"
        for table, wanted in OPTIONS.items():
            assert options[table] >= wanted, table
        assert set(toast or []) >= {
            "autovacuum_vacuum_scale_factor=0.01",
            "autovacuum_vacuum_cost_delay=0",
        }

    asyncio.run(main())
