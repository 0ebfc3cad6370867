"""What fencing sends costs the PostgreSQL group commit (migration 6, :mod:`.pg_batch`).

One ``sealpost_batch`` statement of B sends (one envelope each, device 1 of account i to
its device 2, as a device's copies to its own other devices go), timed three ways in
alternating rounds on one database:

- ``v5``: the 14-argument function every batch ran before migration 6 (the baseline);
- ``unfenced``: the new function with no fence (sealed and HTTP sends: NULL fences);
- ``fenced``: the new function with each send's current epoch (the sender's row locked
  in the sorted pass, its epoch read).

Each statement runs in a transaction that is rolled back, so every round sees the same
tables and only the statement is timed (not its commit's WAL flush, which it shares with
the whole batch and which dominates a real one).

    .venv/bin/python bench/fence_cost.py --database postgresql://USER@HOST/postgres \\
        [--batch 256] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from sealpost.server.storage.base import AccountRecord, DeviceRecord, PreKeyUpload
from sealpost.server.storage.postgres import PostgresStorage

V5 = (
    "SELECT status FROM sealpost_batch($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[],"
    " $5::int[], $6::bigint[], $7::bigint[], $8::int, $9::bigint,"
    " '{}'::int[], '{}'::bytea[], '{}'::bigint[], '{}'::bytea[], '{}'::bigint[])"
)
V6 = (
    "SELECT status FROM sealpost_batch($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[],"
    " $5::int[], $6::bigint[], $7::bigint[], $8::bytea[], $9::bigint[], $10::bigint[],"
    " $11::int, $12::bigint,"
    " '{}'::int[], '{}'::bytea[], '{}'::bigint[], '{}'::bytea[], '{}'::bigint[])"
)


async def _accounts(dsn: str, n: int) -> list[tuple[bytes, int]]:
    """``n`` accounts of two devices each, device 1 connected; (account id, its epoch)."""
    storage = PostgresStorage(dsn, solo=False)
    await storage.open()
    try:
        out = []
        for _ in range(n):
            account_id = os.urandom(16)
            record = AccountRecord(
                account_id, account_id.hex()[:12], os.urandom(32), b"h" * 32, True, 7
            )
            await storage.create_account(
                record, DeviceRecord(account_id, 1, b"c1", 0), PreKeyUpload()
            )
            await storage.add_device(
                DeviceRecord(account_id, 2, b"c2", 0), PreKeyUpload(), max_devices=5
            )
            out.append((account_id, await storage.claim_device(account_id, 1)))
        return out
    finally:
        await storage.close()


def _args(kind: str, senders: list[tuple[bytes, int]], batch: int) -> tuple[str, list[Any]]:
    chosen = [senders[i % len(senders)] for i in range(batch)]
    body = os.urandom(200)
    rows: list[Any] = [
        [a for a, _ in chosen],
        [2] * batch,
        [os.urandom(16) for _ in chosen],
        [body] * batch,
        [len(body)] * batch,
        [5] * batch,
        [10**12] * batch,
    ]
    limits = [10**6, 0]
    if kind == "v5":
        return V5, rows + limits
    if kind == "unfenced":
        return V6, [*rows, [None] * batch, [None] * batch, [None] * batch, *limits]
    fences = [[a for a, _ in chosen], [1] * batch, [e for _, e in chosen]]
    return V6, rows + fences + limits


async def _time(conn: asyncpg.Connection, sql: str, args: list[Any]) -> float:
    tx = conn.transaction()
    await tx.start()
    try:
        start = time.perf_counter()
        assert await conn.fetchval(sql, *args) == 0
        return time.perf_counter() - start
    finally:
        await tx.rollback()


async def run(admin: str, batch: int, rounds: int) -> None:
    name = "sealpost_bench_" + secrets.token_hex(6)
    server = await asyncpg.connect(admin)
    await server.execute(f"CREATE DATABASE {name}")
    dsn = urlsplit(admin)._replace(path="/" + name).geturl()
    try:
        senders = await _accounts(dsn, 100)
        conn = await asyncpg.connect(dsn)
        try:
            kinds = ("v5", "unfenced", "fenced")
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for r in range(rounds + 2):
                for kind in kinds if r % 2 == 0 else kinds[::-1]:
                    elapsed = await _time(conn, *_args(kind, senders, batch))
                    if r >= 2:  # the first two rounds warm the caches
                        times[kind].append(elapsed)
        finally:
            await conn.close()
    finally:
        await server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await server.close()
    base = statistics.median(times["v5"])
    print(f"sealpost_batch of {batch} sends, median of {rounds} rounds (us per send):")
    for kind in kinds:
        median = statistics.median(times[kind])
        print(f"  {kind:9} {median / batch * 1e6:7.2f}  ({median / base:.2f}x v5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database", required=True, help="a PostgreSQL URL to create a database on"
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(run(args.database, args.batch, args.rounds))


if __name__ == "__main__":
    main()
