"""The key-transparency log in SQLite: every change of an account's keys appends a
:class:`~sealpost.transparency.log.LogEntry` (or, for a removal, a signed
:class:`~sealpost.transparency.log.DeletionEntry`) to the ``log_entries`` table, completes
its Merkle nodes and updates the account map, in the transaction of the change itself
(:func:`log_account_state`, :func:`log_deletion`): a change is logged exactly when it
commits. :class:`SqliteLog` reads the log, its proofs and its signed tree heads; the proofs
that need one consistent state are read in one read transaction.
"""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from typing import Any

from sealpost.crypto.sign import SigningKey
from sealpost.server.storage.base import (
    AccountRecord,
    LoggedEntry,
    LogLookup,
    LogState,
    pack_list,
    unpack_list,
)
from sealpost.server.storage.sqlite_core import SqliteCore, _snapshot
from sealpost.transparency.log import (
    DeletionCause,
    DeletionEntry,
    LogEntry,
    account_map_key,
    account_map_value,
    devices_commitment,
)
from sealpost.transparency.merkle import (
    SqliteNodeStore,
    append,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
)
from sealpost.transparency.smt import SqliteMapStore, map_root, prove
from sealpost.transparency.smt import insert as map_insert

__all__ = ["SqliteLog", "log_account_state", "log_deletion"]


class SqliteLog(SqliteCore):
    """The transparency log's reads and its tree heads."""

    async def log_size(self) -> int:
        return await self._read(_log_size)

    async def log_entries(self, account_id: bytes, *, after: int = -1) -> list[LoggedEntry]:
        return await self._read(
            lambda c: [
                _logged(row)
                for row in c.execute(
                    "SELECT idx, entry, certificates, revocations FROM log_entries"
                    " WHERE account_id = ? AND idx > ? ORDER BY sequence",
                    (account_id, after),
                )
            ]
        )

    async def log_latest(self, account_id: bytes) -> LoggedEntry | None:
        def op(conn: sqlite3.Connection) -> LoggedEntry | None:
            row = conn.execute(
                "SELECT idx, entry, certificates, revocations FROM log_entries"
                " WHERE account_id = ? ORDER BY sequence DESC LIMIT 1",
                (account_id,),
            ).fetchone()
            return None if row is None else _logged(row)

        return await self._read(op)

    async def log_root(self, size: int) -> bytes:
        return await self._read(lambda c: root(SqliteNodeStore(c), size))

    async def log_inclusion(self, index: int, size: int) -> list[bytes]:
        return await self._read(lambda c: inclusion_proof(SqliteNodeStore(c), index, size))

    async def log_consistency(self, size1: int, size2: int) -> list[bytes]:
        return await self._read(lambda c: consistency_proof(SqliteNodeStore(c), size1, size2))

    async def log_state(self) -> LogState:
        def op(conn: sqlite3.Connection) -> LogState:
            size = _log_size(conn)
            return LogState(size, root(SqliteNodeStore(conn), size), map_root(SqliteMapStore(conn)))

        return await self._read(partial(_snapshot, op))

    async def log_lookup(self, username_lower: str) -> LogLookup:
        key = account_map_key(username_lower)

        def op(conn: sqlite3.Connection) -> LogLookup:
            size = _log_size(conn)
            _, proof = prove(SqliteMapStore(conn), key)
            row = conn.execute(
                "SELECT idx, entry, certificates, revocations FROM log_entries WHERE account_id ="
                " COALESCE((SELECT account_id FROM accounts WHERE username_lower = ?),"
                " (SELECT account_id FROM account_removals WHERE username_lower = ?"
                " ORDER BY seq DESC LIMIT 1))"
                " ORDER BY sequence DESC LIMIT 1",
                (username_lower, username_lower),
            ).fetchone()
            latest = None if row is None else _logged(row)
            inclusion = (
                [] if latest is None else inclusion_proof(SqliteNodeStore(conn), latest.index, size)
            )
            return LogLookup(size, latest, inclusion, proof.encode())

        return await self._read(partial(_snapshot, op))

    async def log_head(self) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT head FROM log_heads ORDER BY tree_size DESC LIMIT 1"
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._read(op)

    async def add_log_head(self, tree_size: int, timestamp: int, head: bytes) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO log_heads (tree_size, timestamp, head) VALUES (?, ?, ?)",
                (tree_size, timestamp, head),
            )
        )


def _logged(row: tuple[Any, ...]) -> LoggedEntry:
    idx, entry, certificates, revocations = row
    return LoggedEntry(
        idx, bytes(entry), unpack_list(bytes(certificates)), unpack_list(bytes(revocations))
    )


def _log_size(conn: sqlite3.Connection) -> int:
    (size,) = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries").fetchone()
    return int(size)


def log_account_state(
    conn: sqlite3.Connection, account_id: bytes, *, new: AccountRecord | None = None
) -> None:
    """Append the account's state, as the open transaction sees it, to the log: a
    :class:`LogEntry` committing to its certificates and revocations, and the Merkle
    nodes it completes. Committed (or rolled back) with the change that caused it.
    ``new``: the account was created in this transaction (its first entry; nothing to read
    back but its device)."""
    if new is not None:
        username, account_key, revocations, last = new.username.lower(), new.account_key, [], 0
    else:
        username, account_key = conn.execute(
            "SELECT username_lower, account_key FROM accounts WHERE account_id = ?",
            (account_id,),
        ).fetchone()
        revocations = sorted(
            bytes(r)
            for (r,) in conn.execute(
                "SELECT revocation FROM revocations WHERE account_id = ?", (account_id,)
            )
        )
        (last,) = conn.execute(
            "SELECT COALESCE(MAX(sequence), 0) FROM log_entries WHERE account_id = ?",
            (account_id,),
        ).fetchone()
    certificates = sorted(
        bytes(c)
        for (c,) in conn.execute(
            "SELECT certificate FROM devices WHERE account_id = ?", (account_id,)
        )
    )
    entry = LogEntry(
        account_id,
        username,
        bytes(account_key),
        devices_commitment(certificates, revocations),
        sequence=last + 1,
        timestamp=int(time.time() * 1000),
    ).encode()
    size = _log_size(conn)
    conn.execute(
        "INSERT INTO log_entries (idx, account_id, sequence, entry, certificates, revocations)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (size, account_id, last + 1, entry, pack_list(certificates), pack_list(revocations)),
    )
    append(SqliteNodeStore(conn), size, [leaf_hash(entry)])
    map_insert(
        SqliteMapStore(conn),
        [(account_map_key(username), account_map_value(size, leaf_hash(entry)))],
    )


def log_deletion(
    conn: sqlite3.Connection,
    account_id: bytes,
    username: str,
    account_key: bytes,
    *,
    log_key: SigningKey,
    cause: DeletionCause,
    now_ms: int,
    free_after: int,
) -> int:
    """Append the account's :class:`DeletionEntry` (after its last entry) and make it the
    name's value in the account map, in the open transaction; the entry's index."""
    (last,) = conn.execute(
        "SELECT COALESCE(MAX(sequence), 0) FROM log_entries WHERE account_id = ?", (account_id,)
    ).fetchone()
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
    size = _log_size(conn)
    conn.execute(
        "INSERT INTO log_entries (idx, account_id, sequence, entry, certificates, revocations)"
        " VALUES (?, ?, ?, ?, x'', x'')",
        (size, account_id, last + 1, entry),
    )
    append(SqliteNodeStore(conn), size, [leaf_hash(entry)])
    map_insert(
        SqliteMapStore(conn),
        [(account_map_key(username), account_map_value(size, leaf_hash(entry)))],
    )
    return size
