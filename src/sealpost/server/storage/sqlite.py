"""SQLite storage: WAL journal, group commit, reader threads, on one file held by one
process. :class:`SqliteStorage` is the :class:`~sealpost.server.storage.base.Storage` of
that file; this module opens and closes it, and composes the storage from one module per
concept, each a mixin of :class:`~.sqlite_core.SqliteCore`:

- :mod:`.sqlite_core`: the write machinery (group commit, the write path's memory, reader
  threads), which every other module's methods go through;
- :mod:`.sqlite_schema`: the tables and the migrations from older schema versions;
- :mod:`.sqlite_accounts`: accounts, devices, revocations and removals;
- :mod:`.sqlite_log`: the key-transparency log, appended in each change's transaction;
- :mod:`.sqlite_prekeys`: prekeys and bundles;
- :mod:`.sqlite_queue`: sends, fetches, acks and the connection epochs;
- :mod:`.sqlite_attachments`: attachment records;
- :mod:`.sqlite_admission`: request nonces and invites;
- :mod:`.sqlite_upkeep`: statistics and the purge of what expired;
- :mod:`.sqlite_bulk`: the statements a batch of sends and acks runs as on the commit thread.

Durability. ``journal_mode=WAL`` with ``synchronous=FULL``: every commit fsyncs the WAL, so
a transaction that returned survives a process kill *and* a power cut. (``NORMAL`` in WAL
mode survives a process kill but may lose the last commits on power loss; a relay that has
told a sender "stored" must not, so we keep FULL and pay for it once per batch, not once per
message.)

``secure_delete=ON`` overwrites deleted rows (acknowledged messages, used prekeys) with
zeros in the database file instead of leaving them in free pages.

A PostgreSQL backend needs none of this machinery: asyncpg with ``SERIALIZABLE`` or
row locks (``DELETE ... RETURNING`` with ``FOR UPDATE SKIP LOCKED`` for prekeys) gives the
same per-method guarantees; see :mod:`.base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sealpost.server.storage.account_cache import ACCOUNT_CACHE as ACCOUNT_CACHE
from sealpost.server.storage.sqlite_accounts import SqliteAccounts
from sealpost.server.storage.sqlite_admission import SqliteAdmission
from sealpost.server.storage.sqlite_attachments import SqliteAttachments
from sealpost.server.storage.sqlite_core import MAX_BATCH as MAX_BATCH
from sealpost.server.storage.sqlite_core import MAX_BULK as MAX_BULK
from sealpost.server.storage.sqlite_core import TAIL_BYTES as TAIL_BYTES
from sealpost.server.storage.sqlite_core import TAIL_MESSAGES as TAIL_MESSAGES
from sealpost.server.storage.sqlite_core import WRITE_CACHE as WRITE_CACHE
from sealpost.server.storage.sqlite_log import SqliteLog, log_account_state, log_deletion
from sealpost.server.storage.sqlite_prekeys import KEM_LAST_RESORT as KEM_LAST_RESORT
from sealpost.server.storage.sqlite_prekeys import KEM_ONE_TIME as KEM_ONE_TIME
from sealpost.server.storage.sqlite_prekeys import SqlitePrekeys
from sealpost.server.storage.sqlite_queue import SqliteQueue
from sealpost.server.storage.sqlite_schema import (
    _MIGRATIONS,
    _SCHEMA,
    _SCHEMA_AFTER_MIGRATIONS,
    SCHEMA_VERSION,
    _log_unlogged_accounts,
    _migrate,
)
from sealpost.server.storage.sqlite_upkeep import PURGE_STEP as PURGE_STEP
from sealpost.server.storage.sqlite_upkeep import SqliteUpkeep
from sealpost.transparency.merkle import LOG_NODES_SCHEMA
from sealpost.transparency.smt import MAP_SCHEMA

__all__ = ["SqliteStorage", "log_account_state", "log_deletion"]


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SqliteStorage(
    SqliteAccounts,
    SqliteLog,
    SqlitePrekeys,
    SqliteQueue,
    SqliteAttachments,
    SqliteAdmission,
    SqliteUpkeep,
):
    """:class:`~sealpost.server.storage.base.Storage` on one SQLite file (WAL mode)."""

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self._path)
        conn.executescript(_SCHEMA)
        conn.execute(LOG_NODES_SCHEMA)
        conn.executescript(MAP_SCHEMA)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 0:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version in _MIGRATIONS:
            _migrate(conn, version)
        elif version != SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(f"database schema version {version} is not {SCHEMA_VERSION}")
        conn.executescript(_SCHEMA_AFTER_MIGRATIONS)
        _log_unlogged_accounts(conn)
        self._loop = asyncio.get_running_loop()
        self._write_conn = conn
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")

    async def close(self) -> None:
        if self._write_conn is not None:
            while self._pending or self._committing or self._scheduled:  # let them finish
                self._idle = asyncio.get_running_loop().create_future()
                await self._idle
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._read_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        if self._write_conn is not None:
            if self._checkpoint:
                with contextlib.suppress(sqlite3.Error):
                    self._write_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._write_conn.close()
            self._write_conn = None
        self._loop = None
