"""The key-transparency log in PostgreSQL: appends serialized by a transaction-level
advisory lock (one log, never a fork, whichever process appends), and the Merkle functions
of :mod:`sealpost.transparency.merkle` run against the ``log_nodes`` table.

Those functions are synchronous and each reads the store once (one
:meth:`~sealpost.transparency.merkle.NodeStore.get_many`) and writes it at most once. So
they run against a :class:`_Prefetch` store: the first run stops at the read and names the
keys it needs, they are fetched in one query, and the second run completes from memory; its
writes are collected and inserted in the caller's transaction. Nodes are written once and
never change, so fetched ones are kept in a bounded cache shared by all callers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import asyncpg

from sealpost.crypto.sign import SigningKey
from sealpost.server.storage.base import AccountRecord, LoggedEntry, pack_list, unpack_list
from sealpost.server.storage.pg_map import run_map
from sealpost.server.storage.pg_schema import LOCK_LOG
from sealpost.transparency.log import (
    DeletionCause,
    DeletionEntry,
    LogEntry,
    account_map_key,
    account_map_value,
    devices_commitment,
)
from sealpost.transparency.merkle import LogStoreError, NodeKey, append, leaf_hash
from sealpost.transparency.smt import insert as map_insert

__all__ = ["NodeCache", "log_account_state", "log_deletion", "logged", "merkle"]

T = TypeVar("T")

#: Merkle nodes kept in memory (about 100 bytes each).
NODE_CACHE: Final = 100_000


class _Missing(Exception):
    def __init__(self, keys: list[NodeKey]) -> None:
        super().__init__("nodes to fetch")
        self.keys = keys


class _Prefetch:
    def __init__(self, known: dict[NodeKey, bytes]) -> None:
        self.known = known
        self.written: list[tuple[NodeKey, bytes]] = []
        self.fetched = False

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        missing = [key for key in keys if key not in self.known]
        if missing:
            if self.fetched:
                raise LogStoreError(f"no node {missing[0]} in the store")
            raise _Missing(missing)
        return [self.known[key] for key in keys]

    def put_many(self, items: Sequence[tuple[NodeKey, bytes]]) -> None:
        self.written.extend(items)


class NodeCache:
    """Complete subtrees' hashes read or written before (they never change)."""

    def __init__(self, size: int = NODE_CACHE) -> None:
        self._size = size
        self._nodes: OrderedDict[NodeKey, bytes] = OrderedDict()

    def get(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        return {key: self._nodes[key] for key in keys if key in self._nodes}

    def put(self, items: Sequence[tuple[NodeKey, bytes]]) -> None:
        self._nodes.update(items)
        while len(self._nodes) > self._size:
            self._nodes.popitem(last=False)


async def merkle(
    conn: asyncpg.Connection, cache: NodeCache, fn: Callable[[_Prefetch], T]
) -> tuple[T, list[tuple[NodeKey, bytes]]]:
    """Run ``fn`` on the stored nodes; its result and the nodes it wrote (not yet stored:
    the caller inserts them, in its transaction, with :func:`store_nodes`)."""
    store = _Prefetch({})
    try:
        return fn(store), store.written
    except _Missing as missing:
        keys = missing.keys
    store.known.update(cache.get(keys))
    needed = [key for key in keys if key not in store.known]
    if needed:
        rows = await conn.fetch(
            "SELECT n.level, n.idx, n.hash FROM log_nodes n"
            " JOIN unnest($1::int[], $2::bigint[]) AS k(level, idx)"
            " ON n.level = k.level AND n.idx = k.idx",
            [k[0] for k in needed],
            [k[1] for k in needed],
        )
        found = [((r[0], r[1]), bytes(r[2])) for r in rows]
        store.known.update(found)
        cache.put(found)
    store.fetched = True
    store.written = []
    return fn(store), store.written


async def store_nodes(conn: asyncpg.Connection, items: Sequence[tuple[NodeKey, bytes]]) -> None:
    await conn.execute(
        "INSERT INTO log_nodes (level, idx, hash)"
        " SELECT * FROM unnest($1::int[], $2::bigint[], $3::bytea[])",
        [k[0] for k, _ in items],
        [k[1] for k, _ in items],
        [h for _, h in items],
    )


def logged(row: asyncpg.Record) -> LoggedEntry:
    return LoggedEntry(
        row["idx"],
        bytes(row["entry"]),
        unpack_list(bytes(row["certificates"])),
        unpack_list(bytes(row["revocations"])),
    )


async def log_size(conn: asyncpg.Connection) -> int:
    size = await conn.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries")
    return int(size)


async def log_account_state(
    conn: asyncpg.Connection,
    cache: NodeCache,
    account_id: bytes,
    *,
    new: AccountRecord | None = None,
) -> None:
    """Append the account's state as this transaction sees it (see the SQLite backend's
    function of the same name). Waits for any other process's append to commit first."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_LOG)
    if new is not None:
        username, account_key = new.username.lower(), new.account_key
        revocations: list[bytes] = []
        last = 0
    else:
        row = await conn.fetchrow(
            "SELECT username_lower, account_key FROM accounts WHERE account_id = $1", account_id
        )
        assert row is not None
        username, account_key = row[0], bytes(row[1])
        revocations = sorted(
            bytes(r[0])
            for r in await conn.fetch(
                "SELECT revocation FROM revocations WHERE account_id = $1", account_id
            )
        )
        last = await conn.fetchval(
            "SELECT COALESCE(MAX(sequence), 0) FROM log_entries WHERE account_id = $1",
            account_id,
        )
    certificates = sorted(
        bytes(r[0])
        for r in await conn.fetch(
            "SELECT certificate FROM devices WHERE account_id = $1", account_id
        )
    )
    entry = LogEntry(
        account_id,
        username,
        account_key,
        devices_commitment(certificates, revocations),
        sequence=last + 1,
        timestamp=int(time.time() * 1000),
    ).encode()
    size = await log_size(conn)
    await conn.execute(
        "INSERT INTO log_entries (idx, account_id, sequence, entry, certificates, revocations)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        size,
        account_id,
        last + 1,
        entry,
        pack_list(certificates),
        pack_list(revocations),
    )
    _, written = await merkle(conn, cache, lambda s: append(s, size, [leaf_hash(entry)]))
    await store_nodes(conn, written)
    pair = (account_map_key(username), account_map_value(size, leaf_hash(entry)))
    await run_map(conn, lambda m: map_insert(m, [pair]), write=True)


async def log_deletion(
    conn: asyncpg.Connection,
    cache: NodeCache,
    account_id: bytes,
    username: str,
    account_key: bytes,
    *,
    log_key: SigningKey,
    cause: DeletionCause,
    now_ms: int,
    free_after: int,
) -> int:
    """Append the account's signed :class:`DeletionEntry` and make it the name's map value
    (see the SQLite backend's function of the same name); the entry's index."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_LOG)
    last = await conn.fetchval(
        "SELECT COALESCE(MAX(sequence), 0) FROM log_entries WHERE account_id = $1", account_id
    )
    entry = DeletionEntry.sign(
        log_key,
        account_id=account_id,
        username=username,
        account_key=account_key,
        sequence=last + 1,
        timestamp=now_ms,
        cause=cause,
        free_after=free_after,
    ).encode()
    size = await log_size(conn)
    await conn.execute(
        "INSERT INTO log_entries (idx, account_id, sequence, entry, certificates, revocations)"
        " VALUES ($1, $2, $3, $4, ''::bytea, ''::bytea)",
        size,
        account_id,
        last + 1,
        entry,
    )
    _, written = await merkle(conn, cache, lambda s: append(s, size, [leaf_hash(entry)]))
    await store_nodes(conn, written)
    pair = (account_map_key(username), account_map_value(size, leaf_hash(entry)))
    await run_map(conn, lambda m: map_insert(m, [pair]), write=True)
    return size
