"""What one poll of a process sharing PostgreSQL costs (issue 16's ``poll_interval``), with
``--devices`` devices connected to it, before and after the poll read queue positions.

On a database of its own (created on ``--database`` and dropped after), ``--registered``
devices are registered straight into the tables (their queues' history: a ``last_seq``
each, all acked, as a device long in use has), and ``--devices`` of them connected to one
:class:`~sealpost.server.stream.StreamEndpoint` in this process: each a ``_Connection``
caught up with its queue (its ``last`` the device's ``last_seq``), its socket's frames
counted and dropped, its fanout subscription made as ``_serve`` makes it, on the shared
mode's storage (``PostgresStorage(solo=False)``: no tails, every push a read). Then
``--waiting`` of them get a message stored with no wake-up (their publish lost), and
each round times, until every pusher it started has finished:

- ``before``: the poll as it was, every local device woken (``_wake_everyone``: a pusher
  task and a queue read each);
- ``after``: :meth:`StreamEndpoint._poll`, one query of the devices' queue positions per
  :data:`~sealpost.server.stream.POLL_BATCH` devices, then a pusher and a read for those
  whose queue holds a message past the last pushed.

Each round resets the connections to where they stood (the waiting messages unpushed), so
both read the same state; the two alternate, round by round. Queries are the storage's
transactions (one statement each here: a read, or a positions query), counted as the
storage is asked; CPU is this process's.

    .venv/bin/python bench/poll_cost.py --database postgresql://postgres@127.0.0.1/postgres \\
        [--registered 100000] [--devices 10000] [--waiting 100] [--rounds 7] [--batch 2000]
        [--json bench/results/poll_cost.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from starlette.websockets import WebSocket

from sealpost.server import stream, stream_conn
from sealpost.server.connections import SEND_TEXTS
from sealpost.server.fanout.local import LocalFanout
from sealpost.server.storage.base import Envelope
from sealpost.server.storage.postgres import PostgresStorage

KINDS = ("before", "after")
KEYS = ("wall_ms", "cpu_ms", "queries", "reads")


class _Frames:
    """A socket's ``SEND_TEXTS``: takes every frame, counts it."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, texts: Sequence[str]) -> bool:
        self.count += len(texts)
        return True


async def _receive() -> Any:
    raise AssertionError("not read")


async def _send(message: Any) -> None:
    raise AssertionError("not sent by ASGI")


def _connection(address: tuple[bytes, int], frames: _Frames) -> stream_conn.Connection:
    scope = {
        "type": "websocket",
        "path": "/v1/stream",
        "headers": [],
        "client": ("127.0.0.1", 40000),
        "extensions": {SEND_TEXTS: frames},
    }
    return stream_conn.Connection(stream_conn.Socket(WebSocket(scope, _receive, _send)), 1, address)


async def _register(dsn: str, devices: int) -> list[tuple[tuple[bytes, int], int]]:
    """``devices`` accounts of one device each, straight into the tables: the device's
    queue row with a history (``last_seq``, all acked; epoch 1)."""
    rows = [((os.urandom(16), 1), 1 + i % 500) for i in range(devices)]
    for start in range(0, devices, 50_000):
        await _insert(dsn, rows[start : start + 50_000])
    return rows


async def _insert(dsn: str, rows: list[tuple[tuple[bytes, int], int]]) -> None:
    accounts = [a for (a, _), _ in rows]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO accounts (account_id, username_lower, username, account_key,"
            " delivery_token_hash, sealed_from_anyone, created)"
            " SELECT a, encode(a, 'hex'), encode(a, 'hex'), a, a, true, 0"
            " FROM unnest($1::bytea[]) AS v(a)",
            accounts,
        )
        await conn.execute(
            "INSERT INTO devices (account_id, device_id, certificate, registered)"
            " SELECT a, 1, a, 0 FROM unnest($1::bytea[]) AS v(a)",
            accounts,
        )
        await conn.execute(
            "INSERT INTO device_queues (account_id, device_id, last_seq, epoch)"
            " SELECT a, d, s, 1 FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS v(a, d, s)",
            [a for (a, _), _ in rows],
            [d for (_, d), _ in rows],
            [s for _, s in rows],
        )
        await conn.execute("ANALYZE accounts, devices, device_queues")
    finally:
        await conn.close()


class _Endpoint:
    """The endpoint, its connections and the counts of what the storage is asked."""

    def __init__(self, storage: PostgresStorage, rows: list[tuple[tuple[bytes, int], int]]):
        class Ctx:
            fanout = LocalFanout()

        Ctx.storage = storage  # type: ignore[attr-defined]
        self.ctx = Ctx()
        endpoint: Any = object.__new__(stream.StreamEndpoint)
        endpoint._ctx = self.ctx
        endpoint._pushed = 0
        endpoint._current = {}
        self.endpoint = endpoint
        self.frames = _Frames()
        self.start = dict(rows)  # each device's last pushed, where a round begins
        self.conns: list[stream_conn.Connection] = []
        for address, _ in rows:
            conn = _connection(address, self.frames)
            endpoint._current[address] = conn
            Ctx.fanout.subscribe(address, partial(endpoint._wake, conn, address))  # as _serve
            self.conns.append(conn)
        self.queries = 0
        self.reads = 0
        tx, fetch = storage._tx, storage.fetch

        async def counted_tx(fn: Callable[[Any], Awaitable[Any]], **kw: Any) -> Any:
            self.queries += 1
            return await tx(fn, **kw)

        async def counted_fetch(*args: Any, **kw: Any) -> Any:
            self.reads += 1
            return await fetch(*args, **kw)

        storage._tx = counted_tx  # type: ignore[method-assign]
        storage.fetch = counted_fetch  # type: ignore[method-assign]

    def reset(self) -> None:
        for conn in self.conns:
            assert conn.address is not None and conn.pusher is None
            conn.last = self.start[conn.address]
            conn.seen = 0
            conn.idle = True

    async def settled(self) -> None:
        while any(conn.pusher is not None for conn in self.conns):
            await asyncio.sleep(0.001)

    async def round(self, kind: str) -> dict[str, float]:
        self.reset()
        self.queries = self.reads = 0
        frames = self.frames.count
        cpu, wall = time.process_time(), time.perf_counter()
        if kind == "before":
            self.ctx.fanout._wake_everyone()  # the poll as it was: fanout/redis.py _poller
        else:
            await self.endpoint._poll()
        await self.settled()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert self.frames.count > frames  # the waiting messages went out
        return {
            "wall_ms": wall * 1e3,
            "cpu_ms": cpu * 1e3,
            "queries": self.queries,
            "reads": self.reads,
        }


async def run(
    admin: str, registered: int, devices: int, waiting: int, rounds: int
) -> dict[str, Any]:
    name = "sealpost_bench_" + secrets.token_hex(6)
    server = await asyncpg.connect(admin)
    await server.execute(f"CREATE DATABASE {name}")
    dsn = urlsplit(admin)._replace(path="/" + name).geturl()
    try:
        storage = PostgresStorage(dsn, solo=False)
        await storage.open()
        try:
            rows = (await _register(dsn, registered))[:devices]
            for (account_id, device_id), _ in rows[:: max(1, devices // waiting)][:waiting]:
                await storage.enqueue(
                    [Envelope(os.urandom(16), account_id, device_id, os.urandom(200))],
                    exempt={},
                    received_at=1,
                    expires_at=2**40,
                    max_depth=1000,
                )
            bench = _Endpoint(storage, rows)
            results: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
            for r in range(rounds + 1):
                for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
                    measured = await bench.round(kind)
                    if r:  # the first round warms the caches and the pool
                        results[kind].append(measured)
        finally:
            await storage.close()
    finally:
        await server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await server.close()
    medians = {
        k: {key: statistics.median(m[key] for m in results[k]) for key in KEYS} for k in KINDS
    }
    return {
        "registered": registered,
        "devices": devices,
        "waiting": waiting,
        "poll_batch": stream.POLL_BATCH,
        "rounds": rounds,
        "medians": medians,
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database", required=True, help="a PostgreSQL URL to create a database on"
    )
    parser.add_argument("--registered", type=int, default=100_000, help="devices in the database")
    parser.add_argument("--devices", type=int, default=10_000, help="of them, connected here")
    parser.add_argument("--waiting", type=int, default=100, help="devices with a message")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--batch", type=int, default=stream.POLL_BATCH, help="devices a positions query"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/poll_cost.json"))
    args = parser.parse_args()
    stream.POLL_BATCH = args.batch
    document = asyncio.run(
        run(args.database, args.registered, args.devices, args.waiting, args.rounds)
    )
    medians = document["medians"]
    print(
        f"one poll, {args.devices} of {args.registered} devices connected here,"
        f" {args.waiting} with a message (median of {args.rounds} rounds):"
    )
    print(f"  {'':8}{'wall ms':>10}{'CPU ms':>10}{'queries':>10}{'reads':>8}")
    for kind in KINDS:
        m = medians[kind]
        print(
            f"  {kind:8}{m['wall_ms']:10.1f}{m['cpu_ms']:10.1f}{m['queries']:10.0f}"
            f"{m['reads']:8.0f}"
        )
    before, after = medians["before"], medians["after"]
    print(
        f"  after/before: wall {after['wall_ms'] / before['wall_ms']:.3f}x,"
        f" CPU {after['cpu_ms'] / before['cpu_ms']:.3f}x,"
        f" queries {after['queries'] / before['queries']:.4f}x"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
