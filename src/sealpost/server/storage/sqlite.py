"""SQLite storage: WAL journal, one writer thread with group commit, reader threads.

Durability. ``journal_mode=WAL`` with ``synchronous=FULL``: every commit fsyncs the WAL, so
a transaction that returned survives a process kill *and* a power cut. (``NORMAL`` in WAL
mode survives a process kill but may lose the last commits on power loss; a relay that has
told a sender "stored" must not, so we keep FULL and pay for it once per batch, not once per
message.)

Group commit. SQLite allows one writer at a time, and the cost of a write is dominated by the
fsync at commit. All writes therefore go to a single writer thread through a queue. The
thread takes every operation waiting, runs each inside its own SAVEPOINT within one
``BEGIN IMMEDIATE`` transaction, commits once, and only then resolves each caller's future.
An operation that raises is rolled back to its savepoint alone and its caller gets the
exception; the others commit. So N concurrent sends cost one fsync, and none is
acknowledged before its bytes are on disk.

Reads (lookups, queue fetches) run on a small pool of reader threads, each with its own
connection; WAL lets them proceed while the writer commits. Reads that must not race with
a write (handing out a one-time prekey) are writes.

``secure_delete=ON`` overwrites deleted rows (acknowledged messages, used prekeys) with
zeros in the database file instead of leaving them in free pages.

A PostgreSQL backend needs none of this machinery: asyncpg with ``SERIALIZABLE`` or
row locks (``DELETE ... RETURNING`` with ``FOR UPDATE SKIP LOCKED`` for prekeys) gives the
same per-method guarantees; see :mod:`.base`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from sealpost.server.storage.base import (
    AccountExists,
    AccountRecord,
    AttachmentRecord,
    BundleParts,
    DeviceExists,
    DeviceRecord,
    Envelope,
    MismatchedDevices,
    PreKeyStock,
    PreKeyStockFull,
    PreKeyUpload,
    PurgeResult,
    QueuedMessage,
    QueueFull,
    UnknownAccount,
    UsernameTaken,
)

__all__ = ["SqliteStorage"]

log = logging.getLogger("sealpost.server.storage")

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
KEM_LAST_RESORT: Final = 1
KEM_ONE_TIME: Final = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account_id          BLOB PRIMARY KEY,
    username_lower      TEXT NOT NULL UNIQUE,
    username            TEXT NOT NULL,
    account_key         BLOB NOT NULL,
    delivery_token_hash BLOB NOT NULL,
    sealed_from_anyone  INTEGER NOT NULL,
    created             INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    account_id  BLOB NOT NULL REFERENCES accounts(account_id),
    device_id   INTEGER NOT NULL,
    certificate BLOB NOT NULL,
    registered  INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signed_prekeys (
    account_id BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    prekey     BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS one_time_prekeys (
    account_id BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    prekey     BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kem_prekeys (
    account_id BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    kind       INTEGER NOT NULL,  -- 1 last resort (one per device), 2 one-time
    key_id     INTEGER NOT NULL,
    prekey     BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id, kind, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  BLOB NOT NULL,
    device_id   INTEGER NOT NULL,
    message_id  BLOB NOT NULL UNIQUE,
    body        BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_by_device ON queue (account_id, device_id, seq);
CREATE INDEX IF NOT EXISTS queue_by_expiry ON queue (expires_at);
CREATE TABLE IF NOT EXISTS nonces (
    nonce      BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires_at);
CREATE TABLE IF NOT EXISTS attachments (
    attachment_id BLOB PRIMARY KEY,
    size          INTEGER NOT NULL,
    created       INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attachments_by_expiry ON attachments (expires_at);
"""

#: Most operations one group commit takes from the queue; bounds the latency a very long
#: batch would add to the first operation in it.
MAX_BATCH: Final = 256
#: Account records kept in memory (least recently used dropped); about 200 bytes each.
ACCOUNT_CACHE: Final = 50_000


class _Op:
    __slots__ = ("fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the write happened or not, as it did
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SqliteStorage:
    """:class:`~sealpost.server.storage.base.Storage` on one SQLite file (WAL mode)."""

    def __init__(self, path: Path, *, readers: int = 2) -> None:
        self._path = path
        self._readers = readers
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._accounts: OrderedDict[bytes, AccountRecord] = OrderedDict()
        self.commits = 0  # group commits done; read by metrics and tests
        self.committed_ops = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self._path)
        conn.executescript(_SCHEMA)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 0:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(f"database schema version {version} is not {SCHEMA_VERSION}")
        self._write_conn = conn
        self._writer = threading.Thread(target=self._write_loop, name="sqlite-writer", daemon=True)
        self._writer.start()
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")

    async def close(self) -> None:
        if self._writer is not None:
            self._ops.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._read_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        if self._write_conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._write_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._write_conn.close()
            self._write_conn = None

    # ------------------------------------------------------------------ machinery

    def _write_loop(self) -> None:
        conn = self._write_conn
        assert conn is not None
        stop = False
        while not stop:
            first = self._ops.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._ops.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = op.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((None, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((value, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("group commit failed: %s", type(exc).__name__)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            results = [(None, exc)] * len(batch)
        else:
            self.commits += 1
            self.committed_ops += len(batch)
        for op, (value, error) in zip(batch, results, strict=True):
            op.loop.call_soon_threadsafe(_resolve, op.future, value, error)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise RuntimeError("storage is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._ops.put(_Op(fn, future, loop))
        return await future

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            with self._read_lock:
                self._read_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            raise RuntimeError("storage is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._reader()))

    # ------------------------------------------------------------------ accounts

    async def create_account(
        self, account: AccountRecord, device: DeviceRecord, prekeys: PreKeyUpload
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT account_id FROM accounts WHERE username_lower = ? OR account_id = ?",
                (account.username.lower(), account.account_id),
            ).fetchall()
            for (existing,) in row:
                if existing == account.account_id:
                    raise AccountExists("account id already registered")
                raise UsernameTaken("username taken")
            conn.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    account.account_id,
                    account.username.lower(),
                    account.username,
                    account.account_key,
                    account.delivery_token_hash,
                    int(account.sealed_from_anyone),
                    account.created,
                ),
            )
            _insert_device(conn, device)
            _store_prekeys(conn, device.account_id, device.device_id, prekeys, None)

        await self._write(op)

    async def add_device(self, device: DeviceRecord, prekeys: PreKeyUpload) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if not conn.execute(
                "SELECT 1 FROM accounts WHERE account_id = ?", (device.account_id,)
            ).fetchone():
                raise UnknownAccount(device.account_id)
            _insert_device(conn, device)
            _store_prekeys(conn, device.account_id, device.device_id, prekeys, None)

        await self._write(op)

    async def account_by_username(self, username_lower: str) -> AccountRecord | None:
        return await self._read(
            lambda c: _account(
                c.execute(
                    "SELECT * FROM accounts WHERE username_lower = ?", (username_lower,)
                ).fetchone()
            )
        )

    async def account_by_id(self, account_id: bytes) -> AccountRecord | None:
        # Account records never change once created (no method updates or deletes one),
        # so they are cached: every sealed send checks its recipient's token against one,
        # and a thread hop per send would bound a connection's pipelined sends.
        cached = self._accounts.get(account_id)
        if cached is not None:
            self._accounts.move_to_end(account_id)
            return cached
        record = await self._read(
            lambda c: _account(
                c.execute("SELECT * FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
            )
        )
        if record is not None:
            self._accounts[account_id] = record
            while len(self._accounts) > ACCOUNT_CACHE:
                self._accounts.popitem(last=False)
        return record

    async def devices(self, account_id: bytes) -> list[DeviceRecord]:
        def op(conn: sqlite3.Connection) -> list[DeviceRecord]:
            rows = conn.execute(
                "SELECT device_id, certificate, registered FROM devices WHERE account_id = ?"
                " ORDER BY device_id",
                (account_id,),
            ).fetchall()
            return [DeviceRecord(account_id, d, bytes(c), r) for d, c, r in rows]

        return await self._read(op)

    async def device(self, account_id: bytes, device_id: int) -> DeviceRecord | None:
        def op(conn: sqlite3.Connection) -> DeviceRecord | None:
            row = conn.execute(
                "SELECT certificate, registered FROM devices"
                " WHERE account_id = ? AND device_id = ?",
                (account_id, device_id),
            ).fetchone()
            return (
                None if row is None else DeviceRecord(account_id, device_id, bytes(row[0]), row[1])
            )

        return await self._read(op)

    # ------------------------------------------------------------------ auth

    async def use_nonce(self, nonce: bytes, expires_at: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO nonces (nonce, expires_at) VALUES (?, ?)",
                (nonce, expires_at),
            )
            return cur.rowcount == 1

        return await self._write(op)

    # ------------------------------------------------------------------ prekeys

    async def store_prekeys(
        self, account_id: bytes, device_id: int, prekeys: PreKeyUpload, *, max_stock: int
    ) -> None:
        await self._write(lambda c: _store_prekeys(c, account_id, device_id, prekeys, max_stock))

    async def take_bundle(self, account_id: bytes, device_id: int) -> BundleParts | None:
        def op(conn: sqlite3.Connection) -> BundleParts | None:
            key = (account_id, device_id)
            cert = conn.execute(
                "SELECT certificate FROM devices WHERE account_id = ? AND device_id = ?", key
            ).fetchone()
            spk = conn.execute(
                "SELECT prekey FROM signed_prekeys WHERE account_id = ? AND device_id = ?", key
            ).fetchone()
            if cert is None or spk is None:
                return None
            opk = _take_one(conn, "one_time_prekeys", key, None)
            kem = _take_one(conn, "kem_prekeys", key, KEM_ONE_TIME)
            if kem is None:
                row = conn.execute(
                    "SELECT prekey FROM kem_prekeys WHERE account_id = ? AND device_id = ?"
                    " AND kind = ?",
                    (*key, KEM_LAST_RESORT),
                ).fetchone()
                kem = None if row is None else bytes(row[0])
            return BundleParts(bytes(cert[0]), bytes(spk[0]), opk, kem)

        return await self._write(op)

    async def prekey_stock(self, account_id: bytes, device_id: int) -> PreKeyStock:
        def op(conn: sqlite3.Connection) -> PreKeyStock:
            key = (account_id, device_id)
            spk = conn.execute(
                "SELECT 1 FROM signed_prekeys WHERE account_id = ? AND device_id = ?", key
            ).fetchone()
            (otk,) = conn.execute(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = ? AND device_id = ?",
                key,
            ).fetchone()
            counts = dict(
                conn.execute(
                    "SELECT kind, COUNT(*) FROM kem_prekeys WHERE account_id = ? AND device_id = ?"
                    " GROUP BY kind",
                    key,
                ).fetchall()
            )
            return PreKeyStock(
                signed_prekey=spk is not None,
                kem_last_resort=counts.get(KEM_LAST_RESORT, 0) > 0,
                one_time=otk,
                kem_one_time=counts.get(KEM_ONE_TIME, 0),
            )

        return await self._read(op)

    # ------------------------------------------------------------------ queue

    async def enqueue(
        self,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            named: dict[bytes, set[int]] = {}
            for env in envelopes:
                named.setdefault(env.account_id, set()).add(env.device_id)
            mismatched: dict[bytes, tuple[list[int], list[int]]] = {}
            for account_id, device_ids in named.items():
                rows = conn.execute(
                    "SELECT device_id FROM devices WHERE account_id = ?", (account_id,)
                ).fetchall()
                if not rows:
                    raise UnknownAccount(account_id)
                actual = {d for (d,) in rows}
                if account_id in exempt:
                    actual.discard(exempt[account_id])
                missing, extra = actual - device_ids, device_ids - actual
                if missing or extra:
                    mismatched[account_id] = (sorted(missing), sorted(extra))
            if mismatched:
                raise MismatchedDevices(mismatched)
            for env in envelopes:
                (depth,) = conn.execute(
                    "SELECT COUNT(*) FROM queue WHERE account_id = ? AND device_id = ?",
                    (env.account_id, env.device_id),
                ).fetchone()
                if depth >= max_depth:
                    raise QueueFull("destination queue is full")
                conn.execute(
                    "INSERT INTO queue (account_id, device_id, message_id, body, received_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        env.account_id,
                        env.device_id,
                        env.message_id,
                        env.body,
                        received_at,
                        expires_at,
                    ),
                )

        await self._write(op)

    async def fetch(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage]:
        def op(conn: sqlite3.Connection) -> list[QueuedMessage]:
            rows = conn.execute(
                "SELECT message_id, seq, body, received_at FROM queue"
                " WHERE account_id = ? AND device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (account_id, device_id, after_seq, limit),
            ).fetchall()
            return [QueuedMessage(bytes(m), s, bytes(b), r) for m, s, b, r in rows]

        return await self._read(op)

    async def ack(self, account_id: bytes, device_id: int, message_id: bytes) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM queue WHERE message_id = ? AND account_id = ? AND device_id = ?",
                (message_id, account_id, device_id),
            )
            return cur.rowcount == 1

        return await self._write(op)

    # ------------------------------------------------------------------ attachments

    async def add_attachment(self, record: AttachmentRecord) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO attachments VALUES (?, ?, ?, ?)",
                (record.attachment_id, record.size, record.created, record.expires_at),
            )
        )

    async def attachment(self, attachment_id: bytes) -> AttachmentRecord | None:
        def op(conn: sqlite3.Connection) -> AttachmentRecord | None:
            row = conn.execute(
                "SELECT size, created, expires_at FROM attachments WHERE attachment_id = ?",
                (attachment_id,),
            ).fetchone()
            return None if row is None else AttachmentRecord(attachment_id, *row)

        return await self._read(op)

    # ------------------------------------------------------------------ retention

    async def purge(self, now: int) -> PurgeResult:
        def op(conn: sqlite3.Connection) -> PurgeResult:
            messages = conn.execute("DELETE FROM queue WHERE expires_at <= ?", (now,)).rowcount
            nonces = conn.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,)).rowcount
            gone = conn.execute(
                "DELETE FROM attachments WHERE expires_at <= ? RETURNING attachment_id", (now,)
            ).fetchall()
            return PurgeResult(messages, nonces, [bytes(a) for (a,) in gone])

        return await self._write(op)


# ---------------------------------------------------------------------- helpers (writer thread)


def _account(row: tuple[Any, ...] | None) -> AccountRecord | None:
    if row is None:
        return None
    account_id, _lower, username, key, token_hash, sealed, created = row
    return AccountRecord(
        bytes(account_id), username, bytes(key), bytes(token_hash), bool(sealed), created
    )


def _insert_device(conn: sqlite3.Connection, device: DeviceRecord) -> None:
    try:
        conn.execute(
            "INSERT INTO devices VALUES (?, ?, ?, ?)",
            (device.account_id, device.device_id, device.certificate, device.registered),
        )
    except sqlite3.IntegrityError:
        raise DeviceExists("device id already registered") from None


def _take_one(
    conn: sqlite3.Connection, table: str, key: tuple[bytes, int], kind: int | None
) -> bytes | None:
    kind_clause = "" if kind is None else f" AND kind = {int(kind)}"
    row = conn.execute(
        f"SELECT key_id, prekey FROM {table} WHERE account_id = ? AND device_id = ?"  # noqa: S608
        f"{kind_clause} ORDER BY key_id LIMIT 1",
        key,
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        f"DELETE FROM {table} WHERE account_id = ? AND device_id = ? AND key_id = ?"  # noqa: S608
        f"{kind_clause}",
        (*key, row[0]),
    )
    return bytes(row[1])


def _store_prekeys(
    conn: sqlite3.Connection,
    account_id: bytes,
    device_id: int,
    prekeys: PreKeyUpload,
    max_stock: int | None,
) -> None:
    key = (account_id, device_id)
    if prekeys.signed_prekey is not None:
        conn.execute(
            "INSERT OR REPLACE INTO signed_prekeys VALUES (?, ?, ?, ?)",
            (*key, *prekeys.signed_prekey),
        )
    if prekeys.kem_last_resort is not None:
        conn.execute(
            "DELETE FROM kem_prekeys WHERE account_id = ? AND device_id = ? AND kind = ?",
            (*key, KEM_LAST_RESORT),
        )
        conn.execute(
            "INSERT INTO kem_prekeys VALUES (?, ?, ?, ?, ?)",
            (*key, KEM_LAST_RESORT, *prekeys.kem_last_resort),
        )
    conn.executemany(
        "INSERT OR REPLACE INTO one_time_prekeys VALUES (?, ?, ?, ?)",
        [(*key, key_id, data) for key_id, data in prekeys.one_time],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO kem_prekeys VALUES (?, ?, ?, ?, ?)",
        [(*key, KEM_ONE_TIME, key_id, data) for key_id, data in prekeys.kem_one_time],
    )
    if max_stock is not None:
        (otk,) = conn.execute(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = ? AND device_id = ?", key
        ).fetchone()
        (kem,) = conn.execute(
            "SELECT COUNT(*) FROM kem_prekeys WHERE account_id = ? AND device_id = ? AND kind = ?",
            (*key, KEM_ONE_TIME),
        ).fetchone()
        if otk > max_stock or kem > max_stock:
            raise PreKeyStockFull("one-time prekey stock would exceed its limit")
