"""The key-transparency account map (:mod:`sealpost.transparency.smt`) in PostgreSQL.

The map's functions are synchronous and read their store in a few dependent steps (the
neighbours of a key, then the nodes on its path), so, as for the log's Merkle tree
(:mod:`.pg_log`), they run against a :class:`_Prefetch` store: a run stops at the first
read it lacks, that read is fetched, and the run starts again, until it completes (two or
three runs). Its writes are then upserted in the caller's transaction. Map updates happen
inside the log append, under its advisory lock, so they are serialized; reads that must see
one instant (:meth:`PostgresStorage.log_state`, ``log_lookup``) run in a ``REPEATABLE READ``
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias, TypeVar

import asyncpg

from sealpost.transparency.smt import MapNodeKey, Pair

__all__ = ["run_map"]

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection


#: Most runs of one map operation (each fetches what the previous one lacked).
_RUNS = 8


class _NeedAround(Exception):
    def __init__(self, key: bytes) -> None:
        super().__init__("neighbours to fetch")
        self.key = key


class _NeedNodes(Exception):
    def __init__(self, keys: list[MapNodeKey]) -> None:
        super().__init__("nodes to fetch")
        self.keys = keys


def _prefix(depth: int, prefix: int) -> bytes:
    return prefix.to_bytes((depth + 7) // 8, "big")


class _Prefetch:
    def __init__(self) -> None:
        self.arounds: dict[bytes, tuple[bytes | None, Pair | None, Pair | None]] = {}
        self.queried: set[MapNodeKey] = set()
        self.found: dict[MapNodeKey, bytes] = {}
        self.pairs: list[Pair] = []
        self.writes: list[tuple[MapNodeKey, bytes]] = []

    def around(self, key: bytes) -> tuple[bytes | None, Pair | None, Pair | None]:
        if key not in self.arounds:
            raise _NeedAround(key)
        return self.arounds[key]

    def nodes(self, keys: Sequence[MapNodeKey]) -> dict[MapNodeKey, bytes]:
        missing = [k for k in keys if k not in self.queried]
        if missing:
            raise _NeedNodes(missing)
        return {k: self.found[k] for k in keys if k in self.found}

    def put(self, pairs: Sequence[Pair], nodes: Sequence[tuple[MapNodeKey, bytes]]) -> None:
        self.pairs.extend(pairs)
        self.writes.extend(nodes)


async def _around(conn: Conn, key: bytes) -> tuple[bytes | None, Pair | None, Pair | None]:
    own = await conn.fetchval("SELECT value FROM kt_map_leaves WHERE key = $1", key)
    below = await conn.fetchrow(
        "SELECT key, value FROM kt_map_leaves WHERE key < $1 ORDER BY key DESC LIMIT 1", key
    )
    above = await conn.fetchrow(
        "SELECT key, value FROM kt_map_leaves WHERE key > $1 ORDER BY key LIMIT 1", key
    )
    return (
        None if own is None else bytes(own),
        None if below is None else (bytes(below[0]), bytes(below[1])),
        None if above is None else (bytes(above[0]), bytes(above[1])),
    )


async def run_map(conn: Conn, fn: Callable[[_Prefetch], T], *, write: bool = False) -> T:
    """Run ``fn`` on the stored map; with ``write``, store what it wrote (in the caller's
    transaction)."""
    store = _Prefetch()
    for _ in range(_RUNS):
        store.pairs, store.writes = [], []
        try:
            result = fn(store)
        except _NeedAround as need:
            store.arounds[need.key] = await _around(conn, need.key)
            continue
        except _NeedNodes as need:
            wanted = {(d, _prefix(d, p)): (d, p) for d, p in need.keys}
            rows = await conn.fetch(
                "SELECT n.depth, n.prefix, n.hash FROM kt_map_nodes n"
                " JOIN unnest($1::int[], $2::bytea[]) AS k(depth, prefix)"
                " ON n.depth = k.depth AND n.prefix = k.prefix",
                [d for d, _ in wanted],
                [p for _, p in wanted],
            )
            for row in rows:
                store.found[wanted[(row[0], bytes(row[1]))]] = bytes(row[2])
            store.queried.update(need.keys)
            continue
        if write:
            await _store(conn, store.pairs, store.writes)
        return result
    raise RuntimeError("a map operation needed more reads than any should")


async def _store(
    conn: Conn, pairs: Sequence[Pair], nodes: Sequence[tuple[MapNodeKey, bytes]]
) -> None:
    if pairs:
        latest = dict(pairs)  # a later pair for a key wins
        await conn.execute(
            "INSERT INTO kt_map_leaves SELECT * FROM unnest($1::bytea[], $2::bytea[])"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            list(latest),
            list(latest.values()),
        )
    if nodes:
        latest_nodes = {(d, _prefix(d, p)): h for (d, p), h in nodes}
        await conn.execute(
            "INSERT INTO kt_map_nodes SELECT * FROM unnest($1::int[], $2::bytea[], $3::bytea[])"
            " ON CONFLICT (depth, prefix) DO UPDATE SET hash = EXCLUDED.hash",
            [d for d, _ in latest_nodes],
            [p for _, p in latest_nodes],
            list(latest_nodes.values()),
        )
