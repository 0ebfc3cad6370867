"""SQLite storage: WAL journal, group commit (a batch of sends and acks as a few statements,
mostly on a commit thread; anything else statement by statement on the event loop), reader
threads.

Durability. ``journal_mode=WAL`` with ``synchronous=FULL``: every commit fsyncs the WAL, so
a transaction that returned survives a process kill *and* a power cut. (``NORMAL`` in WAL
mode survives a process kill but may lose the last commits on power loss; a relay that has
told a sender "stored" must not, so we keep FULL and pay for it once per batch, not once per
message.)

Group commit. SQLite allows one writer at a time, and the cost of a write is dominated by the
fsync at commit. Writes are therefore queued, and run in batches on the one write
connection: between two commits, every operation waiting runs, in the order submitted,
within one ``BEGIN IMMEDIATE`` transaction (straight through; if one raises, the batch is
rolled back and run again with each operation in its own SAVEPOINT, so that the failing
one rolls back alone and its caller gets the exception while the others commit). The
``COMMIT`` then runs on a commit thread, and only once it has returned is each caller's
future resolved. So N concurrent sends cost one fsync, and none is acknowledged before its
bytes are on disk; writes submitted while a commit runs make the next batch.

Where the statements run. One by one they touch the page cache and take microseconds, and
a thread running them would take and give back the GIL around every statement: with the
event loop busy on another core each hand-over cost more than the statement
(bench/relay.py: 7,700 -> 10,300 msgs/s relayed at N = 100 on two cores when they moved to
the loop). So an operation runs on the event loop, and only the ``COMMIT`` (which releases
the GIL for its whole write and fsync) on the thread. Except for the common batch, nothing
but sends and acks whose checks pass on what is kept in memory: the loop checks it and
counts its acks' rows (one ``SELECT``), and the commit thread runs the rest as a few
statements, its inserts in one per 1,024 rows and its deletes too (:mod:`.sqlite_bulk`),
so that most of SQLite's work for it happens on the other core, for two more hand-overs
per batch; such a batch may take up to ``MAX_BULK`` operations. (bench/storage_batch.py:
the loop's CPU per message 19.1 -> 11.9 us.) A batch that does not pass, or whose bulk
insert finds a message queued already, runs operation by operation as above, at most
``MAX_BATCH`` of its operations at a time. Either way the storage is used from the event
loop that opened it.

The write path keeps three things in memory, each exact or on the safe side: the tails of
connected devices' queues (:mod:`.tail`: a push reads those, not the database), each
account's device ids (for the check every send makes; dropped on any rollback, so never
ahead of the database) and an upper bound of each device's queue depth (the real count is
read again only near the limit). The connection epochs (:meth:`SqliteStorage.claim_device`)
live only in memory, as one process holds the file; a fenced send reads its device's
epoch when its batch starts (in bulk) or its operation runs, in its place among the writes.

Reads (lookups) run on a small pool of reader threads, each with its own connection; WAL
lets them proceed while a commit runs. Reads that must not race with a write (handing out
a one-time prekey, reading a queue to set its tail) are writes.

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
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from sealpost.crypto.sign import SigningKey
from sealpost.server.storage import sqlite_bulk
from sealpost.server.storage.base import (
    AccountExists,
    AccountRecord,
    AttachmentQuotaFull,
    AttachmentRecord,
    BundleParts,
    DeviceAcks,
    DeviceExists,
    DeviceRecord,
    DeviceRevoked,
    Envelope,
    Fence,
    InviteRecord,
    InviteRefused,
    InviteUse,
    LastDevice,
    LoggedEntry,
    LogLookup,
    LogState,
    MismatchedDevices,
    PreKeyStock,
    PreKeyStockFull,
    PreKeyUpload,
    PurgeResult,
    QueuedMessage,
    QueuedSend,
    QueueFull,
    Removal,
    RemovedAccount,
    SharedEnvelope,
    StaleEpoch,
    StorageStats,
    TooManyDevices,
    UnknownAccount,
    UnknownDevice,
    UnknownInvite,
    UsernameQuarantined,
    UsernameTaken,
)
from sealpost.server.storage.invites import admits
from sealpost.server.storage.sqlite_bulk import AckRow, QueueRow
from sealpost.server.storage.tail import QueueTails
from sealpost.transparency.log import (
    DeletionCause,
    DeletionEntry,
    LogEntry,
    account_map_key,
    account_map_value,
    decode_entry,
    devices_commitment,
)
from sealpost.transparency.merkle import (
    LOG_NODES_SCHEMA,
    SqliteNodeStore,
    append,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
)
from sealpost.transparency.smt import MAP_SCHEMA, SqliteMapStore, map_root, prove
from sealpost.transparency.smt import build as build_map
from sealpost.transparency.smt import insert as map_insert

__all__ = ["SqliteStorage", "log_account_state", "log_deletion"]

log = logging.getLogger("sealpost.server.storage")

T = TypeVar("T")

#: 2: shared bodies and queue bytes; 3: the account map (kt_map_*) and tree heads that
#: commit to it (see _MIGRATIONS).
SCHEMA_VERSION: Final = 3
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
    body        BLOB NOT NULL,     -- the body, or with body_ref the prefix of a shared one
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    body_ref    INTEGER,           -- shared_bodies.id: the message is body || that body
    size        INTEGER NOT NULL DEFAULT 0  -- bytes the device receives (queue quota)
);
CREATE TABLE IF NOT EXISTS shared_bodies (  -- one multi-recipient send's body, stored once
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    refs INTEGER NOT NULL              -- queued messages using it (queue_unref keeps it)
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
    expires_at    INTEGER NOT NULL,
    owner         BLOB NOT NULL DEFAULT x''  -- uploading account (its byte quota)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attachments_by_expiry ON attachments (expires_at);
CREATE TABLE IF NOT EXISTS revocations (
    account_id BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    revocation BLOB NOT NULL,
    revoked    INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_entries (
    idx          INTEGER PRIMARY KEY,  -- the leaf's index in the Merkle log, from 0
    account_id   BLOB NOT NULL,
    sequence     INTEGER NOT NULL,
    entry        BLOB NOT NULL,        -- LogEntry wire bytes
    certificates BLOB NOT NULL,        -- what its devices commitment covers (_pack_list)
    revocations  BLOB NOT NULL,
    UNIQUE (account_id, sequence)
);
CREATE TABLE IF NOT EXISTS invites (  -- sealpost admin invite: codes kept as hashes only
    invite_id  TEXT PRIMARY KEY,
    code_hash  BLOB NOT NULL,
    uses_left  INTEGER NOT NULL,
    uses       INTEGER NOT NULL DEFAULT 0,
    created    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,        -- 0: never
    revoked    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_removals (  -- removed accounts: their names' quarantine
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     BLOB NOT NULL,
    username_lower TEXT NOT NULL,
    log_index      INTEGER NOT NULL,   -- its DeletionEntry
    cause          INTEGER NOT NULL,
    removed_at     INTEGER NOT NULL,
    free_at        INTEGER NOT NULL,   -- the name may be registered again from then on
    audited        INTEGER NOT NULL DEFAULT 0  -- the server's log has said it
);
CREATE INDEX IF NOT EXISTS removals_by_name ON account_removals (username_lower, seq);
CREATE TABLE IF NOT EXISTS log_heads (
    tree_size INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    head      BLOB NOT NULL            -- SignedTreeHead wire bytes
);
"""

#: Schema changes from each version to the next, run in one transaction at open.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (  # -> 2: shared bodies of multi-recipient sends, queue bytes, attachment owners
        "ALTER TABLE queue ADD COLUMN body_ref INTEGER",
        "ALTER TABLE queue ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
        "UPDATE queue SET size = length(body)",
        "ALTER TABLE attachments ADD COLUMN owner BLOB NOT NULL DEFAULT x''",
    ),
    2: (  # -> 3: the account map, built from the log (_MIGRATION_BUILDS); the old-format
        # tree heads, which did not commit to a map, dropped (a new one is signed at once,
        # and a client proves it consistent with the old one it kept: the log is the same)
        "DELETE FROM kt_map_leaves",
        "DELETE FROM kt_map_nodes",
        "DELETE FROM log_heads",
    ),
}

#: What needs the current shape of the tables (so runs after the migrations).
_SCHEMA_AFTER_MIGRATIONS = """
CREATE INDEX IF NOT EXISTS attachments_by_owner ON attachments (owner, expires_at);
-- Whatever deletes a queued message (ack, purge, device removal) releases its shared body,
-- and the last one deletes it, in the same transaction.
CREATE TRIGGER IF NOT EXISTS queue_unref AFTER DELETE ON queue
WHEN OLD.body_ref IS NOT NULL
BEGIN
    UPDATE shared_bodies SET refs = refs - 1 WHERE id = OLD.body_ref;
    DELETE FROM shared_bodies WHERE id = OLD.body_ref AND refs <= 0;
END;
"""

#: Most operations one group commit takes from the queue; bounds the latency a very long
#: batch would add to the first operation in it, and how long it holds the event loop.
MAX_BATCH: Final = 256
#: The same for a batch that runs in bulk (:mod:`.sqlite_bulk`): it holds the loop for
#: little, and under load every batch is full, so its size bounds the rate.
MAX_BULK: Final = 1024
#: Most rows one step of a purge deletes (see :meth:`SqliteStorage.purge`).
PURGE_STEP: Final = 1000
#: Account records kept in memory (least recently used dropped); about 200 bytes each.
ACCOUNT_CACHE: Final = 50_000
#: Queue tails kept in memory (:mod:`.tail`): all of them together, and one device's.
TAIL_BYTES: Final = 16 * 1024 * 1024
TAIL_MESSAGES: Final = 1000
#: Entries of each of the write path's two small caches (device lists, queue depth bounds)
#: past which it is emptied (about 100 bytes an entry).
WRITE_CACHE: Final = 100_000


#: What an acking operation deletes: for each device, the message ids it acked.
_Acked = Sequence[tuple[tuple[bytes, int], Sequence[bytes]]]


class _Op:
    """A write: ``fn`` runs it in the batch's transaction; a send or an ack also says what
    it does as data (``send``; ``ack``: for each device, the message ids it acked; one
    operation acks for every device of :meth:`SqliteStorage.ack_each_nowait`), so that a
    batch of nothing else can run as a few statements (:mod:`.sqlite_bulk`). An ack whose
    count nobody reads (``counted`` false: ``ack_each_nowait``'s) is not counted in bulk
    (its value is then 0): no read on the loop before its ``DELETE``."""

    __slots__ = ("ack", "counted", "fn", "future", "send")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        send: QueuedSend | None = None,
        ack: _Acked | None = None,
        counted: bool = True,
    ) -> None:
        self.fn = fn
        self.future = future
        self.send = send
        self.ack = ack
        self.counted = counted


def _settle(
    outcome: asyncio.Future[list[StaleEpoch | None]],
    outcomes: list[StaleEpoch | None],
    committed: asyncio.Future[int],
) -> None:
    """:meth:`SqliteStorage.ack_each_nowait`'s answer once its operation is committed: each
    device's outcome, or the commit's failure for all."""
    if outcome.done():
        return
    if committed.cancelled():
        outcome.cancel()
    elif (exc := committed.exception()) is not None:
        outcome.set_exception(exc)
    else:
        outcome.set_result(outcomes)


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")  # the WAL write and fsync; the GIL is released meanwhile


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

    def __init__(self, path: Path, *, readers: int = 2, checkpoint: bool = True) -> None:
        """``checkpoint``: truncate the WAL at :meth:`close` (off for ``sealpost admin``,
        which shares the file with a running server and must not hold up its writes)."""
        self._path = path
        self._readers = readers
        self._checkpoint = checkpoint
        self._loop: asyncio.AbstractEventLoop | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._committer: ThreadPoolExecutor | None = None
        self._pending: deque[_Op] = deque()  # writes waiting for the next batch
        self._scheduled = False  # a batch will start in this loop iteration
        self._committing = False  # a batch's COMMIT is running on the commit thread
        self._idle: asyncio.Future[None] | None = None  # for close(): no batch left
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._accounts: OrderedDict[bytes, AccountRecord] = OrderedDict()
        self._tails = QueueTails(max_bytes=TAIL_BYTES, max_messages=TAIL_MESSAGES)
        # What the operations of the batch being run will change in ``_tails`` once
        # committed.
        self._effects: list[Callable[[], None]] = []
        # For the checks of ``enqueue``, so that a send costs one statement (its INSERT):
        # each account's device ids as the open transaction sees them (emptied by any
        # rollback, so never ahead of the database), and for each device an upper bound of
        # its queue depth and bytes (counted again when one reaches its limit; inserts
        # raise them, and a delete or a rollback only leaves them higher than the truth,
        # so they stay bounds).
        self._device_ids: dict[bytes, frozenset[int]] = {}
        self._depth: dict[tuple[bytes, int], tuple[int, int]] = {}
        self._epochs: dict[tuple[bytes, int], int] = {}  # see claim_device
        self.commits = 0  # group commits done; read by metrics and tests
        self.committed_ops = 0
        self.bulk_commits = 0  # of which run as a few statements (:mod:`.sqlite_bulk`)

    # ------------------------------------------------------------------ lifecycle

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

    # ------------------------------------------------------------------ machinery

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn)

    def _submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        send: QueuedSend | None = None,
        ack: _Acked | None = None,
        counted: bool = True,
    ) -> asyncio.Future[T]:
        """Queue a write for the next batch; its future is done once committed."""
        loop = self._loop
        if loop is None or self._write_conn is None:
            raise RuntimeError("storage is not open")
        if asyncio.get_running_loop() is not loop:
            raise RuntimeError("storage is used from the event loop that opened it")
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Op(fn, future, send, ack, counted))
        if not self._scheduled and not self._committing:
            # Start at the end of this loop iteration, so that every write submitted in
            # it joins the batch.
            self._scheduled = True
            loop.call_soon(self._start_batch)
        return future

    def _start_batch(self) -> None:
        self._scheduled = False
        conn, loop, committer = self._write_conn, self._loop, self._committer
        if self._committing or conn is None or loop is None or committer is None:
            return
        if not self._pending:
            if self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
            return
        batch = [self._pending.popleft() for _ in range(min(MAX_BULK, len(self._pending)))]
        plan = self._plan_bulk(batch)
        if plan is not None and self._start_bulk(batch, *plan):
            return
        if len(batch) > MAX_BATCH:  # the rest, first in the next batch
            self._pending.extendleft(reversed(batch[MAX_BATCH:]))
            del batch[MAX_BATCH:]
        self._run_batch(batch)

    def _start_bulk(
        self,
        batch: list[_Op],
        inserts: list[QueueRow],
        acks: tuple[list[AckRow], int, list[AckRow]],
        depth: dict[tuple[bytes, int], tuple[int, int]],
    ) -> bool:
        """Open the transaction, count the acks that want a count and hand the rest of the
        batch to the commit thread (:func:`.sqlite_bulk.run`); ``False`` (rolled back) if
        counting failed: the batch is to run operation by operation."""
        conn, loop, committer = self._write_conn, self._loop, self._committer
        assert conn is not None and loop is not None and committer is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # the database failed: the batch fails whole
            self._finish_batch(batch, [], exc)
            return True
        counted, counted_ops, uncounted = acks
        try:
            counts, deletes = (
                sqlite_bulk.count_acks(conn, counted, counted_ops) if counted else ([], [])
            )
        except Exception:
            conn.execute("ROLLBACK")
            return False
        deletes += sqlite_bulk.ack_params(uncounted)
        self._committing = True
        done = loop.run_in_executor(
            committer, sqlite_bulk.run, conn, sqlite_bulk.Inserts(inserts), deletes, _commit
        )
        done.add_done_callback(partial(self._finish_bulk, batch, inserts, counts, depth))
        return True

    def _plan_bulk(
        self, batch: Sequence[_Op]
    ) -> (
        tuple[
            list[QueueRow],
            tuple[list[AckRow], int, list[AckRow]],
            dict[tuple[bytes, int], tuple[int, int]],
        ]
        | None
    ):
        """The batch as :mod:`.sqlite_bulk` runs it: the queue rows it inserts, the acked
        ids (those to count, numbered by their operation, how many operations want a
        count, and those not to count), and the queue depth bounds once it committed;
        ``None`` unless it is only
        sends and acks, every send's checks pass on the write path's memory (device ids
        known and matching, every depth bound below its limit, its fence if any the
        device's epoch, read here as the batch starts, in its place among the writes) and
        no message id occurs twice in it. (Anything else runs operation by operation:
        :meth:`_run_batch`, where a stale send raises alone.)"""
        inserts: list[QueueRow] = []
        counted: list[AckRow] = []
        uncounted: list[AckRow] = []
        depth: dict[tuple[bytes, int], tuple[int, int]] = {}
        seen: set[bytes] = set()
        ack_ops = 0
        for op in batch:
            if op.ack is not None:
                rows, index = (counted, ack_ops) if op.counted else (uncounted, 0)
                for (account_id, device_id), message_ids in op.ack:
                    for message_id in dict.fromkeys(message_ids):
                        if message_id in seen:
                            return None
                        seen.add(message_id)
                        rows.append((index, message_id, account_id, device_id))
                if op.counted:
                    ack_ops += 1
                continue
            send = op.send
            if (
                send is None
                or (send.fence is not None and self._stale(send.fence))
                or not self._known_devices(send.envelopes, send.exempt)
            ):
                return None
            for env in send.envelopes:
                address, size = (env.account_id, env.device_id), len(env.body)
                bound = depth.get(address) or self._depth.get(address)
                if (
                    env.message_id in seen
                    or bound is None
                    or bound[0] >= send.max_depth
                    or (send.max_bytes and bound[1] + size > send.max_bytes)
                ):
                    return None
                seen.add(env.message_id)
                depth[address] = (bound[0] + 1, bound[1] + size)
                inserts.append(
                    (
                        env.account_id,
                        env.device_id,
                        env.message_id,
                        env.body,
                        send.received_at,
                        send.expires_at,
                        size,
                    )
                )
        return inserts, (counted, ack_ops, uncounted), depth

    def _known_devices(self, envelopes: Sequence[Envelope], exempt: Mapping[bytes, int]) -> bool:
        """Whether :meth:`_check_devices` would pass without reading the database."""
        named: dict[bytes, set[int]] = {}
        for env in envelopes:
            named.setdefault(env.account_id, set()).add(env.device_id)
        for account_id, device_ids in named.items():
            actual = self._device_ids.get(account_id)
            if actual is None:
                return False
            if account_id in exempt:
                actual = actual - {exempt[account_id]}
            if actual != device_ids:
                return False
        return True

    def _finish_bulk(
        self,
        batch: list[_Op],
        inserts: Sequence[QueueRow],
        counts: Sequence[int],
        depth: Mapping[tuple[bytes, int], tuple[int, int]],
        done: asyncio.Future[list[int] | None],
    ) -> None:
        error = done.exception()
        if error is not None:  # the COMMIT failed
            self._finish_batch(batch, [], error)
            return
        seqs = done.result()
        if seqs is None:  # rolled back: a resend, or a statement failed
            self._committing = False
            self._pending.extendleft(reversed(batch[MAX_BATCH:]))
            self._run_batch(batch[:MAX_BATCH])
            return
        self.bulk_commits += 1
        if len(self._depth) + len(depth) >= WRITE_CACHE:
            self._depth.clear()
        self._depth.update(depth)  # bounds of what is now committed
        added = [
            ((account_id, device_id), QueuedMessage(message_id, seq, body, received_at))
            for (account_id, device_id, message_id, body, received_at, _, _), seq in zip(
                inserts, seqs, strict=True
            )
        ]
        effects: list[Callable[[], None]] = [partial(self._tails.added, added)]
        results: list[tuple[Any, BaseException | None]] = []
        acked = iter(counts)
        for op in batch:
            if op.ack is not None:
                effects.append(partial(self._tails.removed_each, op.ack))
                results.append((next(acked) if op.counted else 0, None))
            else:  # a send: every envelope was stored anew
                assert op.send is not None
                results.append((len(op.send.envelopes), None))
        self._finish_batch(batch, results, None, effects)

    def _run_batch(self, batch: list[_Op]) -> None:
        """Run ``batch`` operation by operation in one transaction on this thread, then
        commit it on the commit thread."""
        conn, loop, committer = self._write_conn, self._loop, self._committer
        assert conn is not None and loop is not None and committer is not None
        self._effects = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Most operations succeed: run them straight, with no savepoint each.
                results: list[tuple[Any, BaseException | None]] = [
                    (op.fn(conn), None) for op in batch
                ]
            except Exception:
                # One refused or failed: undo the whole batch, then run every operation
                # again in its own savepoint, so that the failing one rolls back alone.
                # (Operations only read and write through ``conn`` and record their
                # effects: running one again after a rollback is the same as running it
                # once.)
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._device_ids.clear()
                conn.execute("BEGIN IMMEDIATE")
                self._effects = []
                results = [self._run_in_savepoint(conn, op) for op in batch]
        except Exception as exc:  # the database failed (or a bug): the batch fails whole
            self._finish_batch(batch, [], exc)
            return
        effects, self._effects = self._effects, []
        self._committing = True
        done = loop.run_in_executor(committer, _commit, conn)
        done.add_done_callback(lambda f: self._finish_batch(batch, results, f.exception(), effects))

    def _finish_batch(
        self,
        batch: list[_Op],
        results: list[tuple[Any, BaseException | None]],
        error: BaseException | None,
        effects: Sequence[Callable[[], None]] = (),
    ) -> None:
        self._committing = False
        conn = self._write_conn
        if error is not None:
            log.error("group commit failed: %s", type(error).__name__)
            if conn is not None and conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._device_ids.clear()
            results = [(None, error)] * len(batch)
        else:
            self.commits += 1
            self.committed_ops += len(batch)
            try:
                for effect in effects:  # in commit order, before anyone is told
                    effect()
            except Exception:
                log.exception("queue tails out of step; dropped")  # a bug; nothing is lost
                self._tails.clear()
        for op, (value, exc) in zip(batch, results, strict=True):
            if op.future.done():  # the caller was cancelled; the write happened, or not
                continue
            if exc is not None:
                op.future.set_exception(exc)
            else:
                op.future.set_result(value)
        if self._pending and not self._scheduled:  # whatever arrived meanwhile, next
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_batch)
        elif not self._pending and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _run_in_savepoint(
        self, conn: sqlite3.Connection, op: _Op
    ) -> tuple[Any, BaseException | None]:
        conn.execute("SAVEPOINT op")
        mark = len(self._effects)
        try:
            value = op.fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            del self._effects[mark:]
            self._device_ids.clear()
            return None, exc
        conn.execute("RELEASE op")
        return value, None

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
        self,
        account: AccountRecord,
        device: DeviceRecord,
        prekeys: PreKeyUpload,
        *,
        invite: InviteUse | None = None,
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if invite is not None:
                _spend_invite(conn, invite)
            if conn.execute(
                "SELECT 1 FROM account_removals WHERE username_lower = ? AND free_at > ?",
                (account.username.lower(), account.created),
            ).fetchone():
                raise UsernameQuarantined("that name was a removed account's")
            row = conn.execute(
                "SELECT account_id FROM accounts WHERE username_lower = ? OR account_id = ?",
                (account.username.lower(), account.account_id),
            ).fetchall()
            for (existing,) in row:
                if existing == account.account_id:
                    raise AccountExists("account id already registered")
                raise UsernameTaken("username taken")
            self._device_ids.pop(account.account_id, None)
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
            log_account_state(conn, account.account_id, new=account)

        await self._write(op)

    async def add_device(
        self, device: DeviceRecord, prekeys: PreKeyUpload, *, max_devices: int
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if not conn.execute(
                "SELECT 1 FROM accounts WHERE account_id = ?", (device.account_id,)
            ).fetchone():
                raise UnknownAccount(device.account_id)
            if conn.execute(
                "SELECT 1 FROM revocations WHERE account_id = ? AND device_id = ?",
                (device.account_id, device.device_id),
            ).fetchone():
                raise DeviceRevoked("that device id was revoked")
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM devices WHERE account_id = ?", (device.account_id,)
            ).fetchone()
            if count >= max_devices:
                raise TooManyDevices("the account has as many devices as it may")
            self._device_ids.pop(device.account_id, None)
            _insert_device(conn, device)
            _store_prekeys(conn, device.account_id, device.device_id, prekeys, None)
            log_account_state(conn, device.account_id)

        await self._write(op)

    async def remove_device(self, account_id: bytes, device_id: int, revocation: bytes) -> None:
        def op(conn: sqlite3.Connection) -> None:
            ids = [
                d
                for (d,) in conn.execute(
                    "SELECT device_id FROM devices WHERE account_id = ?", (account_id,)
                )
            ]
            if device_id not in ids:
                raise UnknownDevice("no such device")
            if len(ids) == 1:
                raise LastDevice("the last device cannot be removed")
            self._device_ids.pop(account_id, None)
            key = (account_id, device_id)
            for table in ("devices", "signed_prekeys", "one_time_prekeys", "kem_prekeys"):
                conn.execute(
                    f"DELETE FROM {table} WHERE account_id = ? AND device_id = ?",  # noqa: S608 (our table names)
                    key,
                )
            gone = [
                bytes(m)
                for (m,) in conn.execute(
                    "DELETE FROM queue WHERE account_id = ? AND device_id = ? RETURNING message_id",
                    key,
                )
            ]
            self._effects.append(partial(self._tails.removed, key, gone))
            self._depth.pop(key, None)
            conn.execute(
                "INSERT OR REPLACE INTO revocations (account_id, device_id, revocation, revoked) "
                "VALUES (?, ?, ?, strftime('%s', 'now'))",
                (account_id, device_id, revocation),
            )
            log_account_state(conn, account_id)

        await self._write(op)

    async def remove_account(
        self,
        account_id: bytes,
        *,
        log_key: SigningKey,
        cause: DeletionCause,
        now_ms: int,
        free_at: int,
    ) -> RemovedAccount:
        def op(conn: sqlite3.Connection) -> RemovedAccount:
            row = conn.execute(
                "SELECT username_lower, account_key FROM accounts WHERE account_id = ?",
                (account_id,),
            ).fetchone()
            if row is None:
                raise UnknownAccount(account_id)
            username, account_key = str(row[0]), bytes(row[1])
            devices = [
                d
                for (d,) in conn.execute(
                    "SELECT device_id FROM devices WHERE account_id = ?", (account_id,)
                )
            ]
            gone: dict[tuple[bytes, int], list[bytes]] = {}
            for device_id, message_id in conn.execute(
                "DELETE FROM queue WHERE account_id = ? RETURNING device_id, message_id",
                (account_id,),
            ).fetchall():
                gone.setdefault((account_id, device_id), []).append(bytes(message_id))
            for table in (
                "devices",
                "signed_prekeys",
                "one_time_prekeys",
                "kem_prekeys",
                "revocations",
            ):
                conn.execute(
                    f"DELETE FROM {table} WHERE account_id = ?",  # noqa: S608 (our table names)
                    (account_id,),
                )
            attachments = [
                bytes(a)
                for (a,) in conn.execute(
                    "DELETE FROM attachments WHERE owner = ? RETURNING attachment_id",
                    (account_id,),
                ).fetchall()
            ]
            conn.execute("DELETE FROM accounts WHERE account_id = ?", (account_id,))
            index = log_deletion(
                conn,
                account_id,
                username,
                account_key,
                log_key=log_key,
                cause=cause,
                now_ms=now_ms,
                free_after=free_at * 1000,
            )
            conn.execute(
                "INSERT INTO account_removals (account_id, username_lower, log_index, cause,"
                " removed_at, free_at) VALUES (?, ?, ?, ?, ?, ?)",
                (account_id, username, index, int(cause), now_ms // 1000, free_at),
            )
            for address, message_ids in gone.items():
                self._effects.append(partial(self._tails.removed, address, message_ids))
            self._forget(account_id)
            return RemovedAccount(
                index, len(devices), sum(map(len, gone.values())), attachments, free_at
            )

        return await self._write(op)

    def _forget(self, account_id: bytes) -> None:
        self._accounts.pop(account_id, None)
        self._device_ids.pop(account_id, None)
        for address in [a for a in self._depth if a[0] == account_id]:
            del self._depth[address]

    async def forget_account(self, account_id: bytes) -> None:
        # Another process removed it: what this one kept may let a send through with a
        # device list read before (one batch at most), so its queue is swept as well.
        self._forget(account_id)
        self._tails.clear()

        def sweep(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM queue WHERE account_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM accounts WHERE account_id = ?)",
                (account_id, account_id),
            )
            self._effects.append(self._tails.clear)

        await self._write(sweep)

    async def removals(self, *, after: int) -> list[Removal]:
        return await self._read(
            lambda c: [
                Removal(seq, bytes(a), i, cause, free_at, bool(audited))
                for seq, a, i, cause, free_at, audited in c.execute(
                    "SELECT seq, account_id, log_index, cause, free_at, audited"
                    " FROM account_removals WHERE seq > ? ORDER BY seq",
                    (after,),
                )
            ]
        )

    async def mark_audited(self, seq: int) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE account_removals SET audited = 1 WHERE seq <= ? AND audited = 0", (seq,)
            )
        )

    async def revocations(self, account_id: bytes) -> list[bytes]:
        return await self._read(
            lambda c: [
                bytes(r)
                for (r,) in c.execute(
                    "SELECT revocation FROM revocations WHERE account_id = ? ORDER BY revoked",
                    (account_id,),
                )
            ]
        )

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
        cached = self.account_known(account_id)
        if cached is not None:
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

    def account_known(self, account_id: bytes) -> AccountRecord | None:
        cached = self._accounts.get(account_id)
        if cached is not None:
            self._accounts.move_to_end(account_id)
        return cached

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

    # ------------------------------------------------------------------ transparency log

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

    async def take_bundle(
        self, account_id: bytes, device_id: int, *, one_time: bool = True
    ) -> BundleParts | None:
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
            opk = _take_one(conn, "one_time_prekeys", key, None) if one_time else None
            kem = _take_one(conn, "kem_prekeys", key, KEM_ONE_TIME) if one_time else None
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
        max_bytes: int = 0,
        fence: Fence | None = None,
    ) -> int:
        return await self.enqueue_nowait(
            envelopes,
            exempt=exempt,
            received_at=received_at,
            expires_at=expires_at,
            max_depth=max_depth,
            max_bytes=max_bytes,
            fence=fence,
        )

    def enqueue_nowait(
        self,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
        fence: Fence | None = None,
    ) -> asyncio.Future[int]:
        send = QueuedSend(envelopes, exempt, received_at, expires_at, max_depth, max_bytes, fence)
        return self._submit(partial(self._run_send, send), send=send)

    def _run_send(self, send: QueuedSend, conn: sqlite3.Connection) -> int:
        """A plain send's operation (a method, not a closure: no function and cells per
        send)."""
        if send.fence is not None:  # read as the operation runs, in its place among the writes
            self._check_fence(send.fence)
        self._check_devices(conn, send.envelopes, send.exempt)
        added = []
        received_at, expires_at = send.received_at, send.expires_at
        for env in send.envelopes:
            address = (env.account_id, env.device_id)
            cur = conn.execute(
                "INSERT INTO queue (account_id, device_id, message_id, body, received_at,"
                " expires_at, size) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (message_id) DO NOTHING",
                (
                    env.account_id,
                    env.device_id,
                    env.message_id,
                    env.body,
                    received_at,
                    expires_at,
                    len(env.body),
                ),
            )
            if not cur.rowcount:  # a resend of a message still queued: stored once
                continue
            self._reserve(conn, address, len(env.body), send.max_depth, send.max_bytes)
            seq = cur.lastrowid
            assert seq is not None
            message = QueuedMessage(env.message_id, seq, env.body, received_at)
            added.append((address, message))
        self._effects.append(partial(self._tails.added, added))
        return len(added)  # stored anew

    async def enqueue_shared(
        self,
        body: bytes,
        envelopes: Sequence[SharedEnvelope],
        *,
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
    ) -> int:
        return await self.enqueue_shared_nowait(
            body,
            envelopes,
            received_at=received_at,
            expires_at=expires_at,
            max_depth=max_depth,
            max_bytes=max_bytes,
        )

    def enqueue_shared_nowait(
        self,
        body: bytes,
        envelopes: Sequence[SharedEnvelope],
        *,
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
    ) -> asyncio.Future[int]:
        def op(conn: sqlite3.Connection) -> int:
            self._check_devices(conn, envelopes, {})
            body_ref = conn.execute(
                "INSERT INTO shared_bodies (body, refs) VALUES (?, ?)", (body, len(envelopes))
            ).lastrowid
            added = []
            for env in envelopes:
                address = (env.account_id, env.device_id)
                size = len(env.prefix) + len(body)
                cur = conn.execute(
                    "INSERT INTO queue (account_id, device_id, message_id, body, received_at,"
                    " expires_at, body_ref, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (message_id) DO NOTHING",
                    (
                        env.account_id,
                        env.device_id,
                        env.message_id,
                        env.prefix,
                        received_at,
                        expires_at,
                        body_ref,
                        size,
                    ),
                )
                if not cur.rowcount:  # a resend of a message still queued: stored once
                    continue
                self._reserve(conn, address, size, max_depth, max_bytes)
                seq = cur.lastrowid
                assert seq is not None
                full = env.prefix + body if env.prefix else body  # one object when no prefix
                added.append((address, QueuedMessage(env.message_id, seq, full, received_at)))
            if len(added) < len(envelopes):  # some were queued already: count the others
                if added:
                    conn.execute(
                        "UPDATE shared_bodies SET refs = ? WHERE id = ?", (len(added), body_ref)
                    )
                else:
                    conn.execute("DELETE FROM shared_bodies WHERE id = ?", (body_ref,))
            self._effects.append(partial(self._tails.added, added))
            return len(added)  # stored anew

        return self._submit(op)

    def _stale(self, fence: Fence) -> bool:
        """Whether a claim (:meth:`claim_device`) took a newer epoch than ``fence``'s."""
        return self._epochs.get((fence.account_id, fence.device_id), 0) != fence.epoch

    def _check_fence(self, fence: Fence) -> None:
        if self._stale(fence):
            raise StaleEpoch("a newer connection of this device took over")

    def _check_devices(
        self,
        conn: sqlite3.Connection,
        envelopes: Sequence[Envelope] | Sequence[SharedEnvelope],
        exempt: Mapping[bytes, int],
    ) -> None:
        """Raise unless every destination account is named with exactly its devices."""
        named: dict[bytes, set[int]] = {}
        for env in envelopes:
            named.setdefault(env.account_id, set()).add(env.device_id)
        mismatched: dict[bytes, tuple[list[int], list[int]]] = {}
        for account_id, device_ids in named.items():
            actual = self._device_ids.get(account_id)
            if actual is None:
                rows = conn.execute(
                    "SELECT device_id FROM devices WHERE account_id = ?", (account_id,)
                ).fetchall()
                if not rows:
                    raise UnknownAccount(account_id)
                actual = frozenset(d for (d,) in rows)
                if len(self._device_ids) >= WRITE_CACHE:
                    self._device_ids.clear()
                self._device_ids[account_id] = actual
            if account_id in exempt:
                actual = actual - {exempt[account_id]}
            missing, extra = actual - device_ids, device_ids - actual
            if missing or extra:
                mismatched[account_id] = (sorted(missing), sorted(extra))
        if mismatched:
            raise MismatchedDevices(mismatched)

    def _reserve(
        self,
        conn: sqlite3.Connection,
        address: tuple[bytes, int],
        size: int,
        max_depth: int,
        max_bytes: int,
    ) -> None:
        """Raise :class:`QueueFull` unless the device's queue had room for the message of
        ``size`` bytes just inserted (the caller's op then rolls back); count it in the
        bounds. (Called after the insert, so that a resend that inserted nothing is not
        refused for a queue its first copy filled.)"""
        bound = self._depth.get(address)
        if bound is None or bound[0] >= max_depth or (max_bytes and bound[1] + size > max_bytes):
            depth, total = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM queue"
                " WHERE account_id = ? AND device_id = ?",
                address,
            ).fetchone()
            depth, total = depth - 1, total - size  # without the message just inserted
            if depth >= max_depth or (max_bytes and total + size > max_bytes):
                raise QueueFull("destination queue is full")
            if len(self._depth) >= WRITE_CACHE:
                self._depth.clear()
            bound = (depth, total)
        self._depth[address] = (bound[0] + 1, bound[1] + size)

    def fetch_known(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage] | None:
        return self._tails.fetch((account_id, device_id), after_seq, limit)

    async def fetch(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage]:
        address = (account_id, device_id)
        known = self._tails.fetch(address, after_seq, limit)
        if known is not None:
            return known

        # Read as a write, in its place among the other writes, so that the tail it may
        # set is exact (see :mod:`.tail`).
        def op(conn: sqlite3.Connection) -> list[QueuedMessage]:
            rows = conn.execute(
                "SELECT q.message_id, q.seq, q.body, s.body, q.received_at FROM queue q"
                " LEFT JOIN shared_bodies s ON s.id = q.body_ref"
                " WHERE q.account_id = ? AND q.device_id = ? AND q.seq > ? ORDER BY q.seq"
                " LIMIT ?",
                (account_id, device_id, after_seq, limit),
            ).fetchall()
            found = [
                QueuedMessage(bytes(m), s, bytes(b) + bytes(shared or b""), r)
                for m, s, b, shared, r in rows
            ]
            if len(found) < limit:  # the whole rest of the queue
                self._effects.append(partial(self._tails.known, address, after_seq, found))
            return found

        return await self._write(op)

    async def ack(self, account_id: bytes, device_id: int, message_id: bytes) -> bool:
        return await self.ack_all(account_id, device_id, [message_id]) == 1

    async def ack_all(
        self,
        account_id: bytes,
        device_id: int,
        message_ids: Sequence[bytes],
        *,
        epoch: int | None = None,
    ) -> int:
        if epoch is not None and self._epochs.get((account_id, device_id), 0) != epoch:
            raise StaleEpoch("a newer connection of this device took over")
        acked = [((account_id, device_id), message_ids)]
        return await self._submit(self._ack_op(acked), ack=acked)

    def ack_each_nowait(
        self, acks: Sequence[DeviceAcks]
    ) -> asyncio.Future[list[StaleEpoch | None]]:
        # One operation for every device (marked as an ack, so that a batch of sends and
        # acks still runs in bulk, .sqlite_bulk), not one a device: with the load spread
        # over many devices, each acks about one message a commit; uncounted (its outcome
        # is each device's epoch check, not how many rows went). A stale one is refused at
        # once and left out of it.
        loop = asyncio.get_running_loop()
        outcomes: list[StaleEpoch | None] = []
        acked: list[tuple[tuple[bytes, int], Sequence[bytes]]] = []
        epochs = self._epochs
        for account_id, device_id, message_ids, epoch in acks:
            address = (account_id, device_id)
            if epoch is not None and epochs.get(address, 0) != epoch:
                outcomes.append(StaleEpoch("a newer connection of this device took over"))
            else:
                outcomes.append(None)
                acked.append((address, message_ids))
        outcome: asyncio.Future[list[StaleEpoch | None]] = loop.create_future()
        if not acked:
            outcome.set_result(outcomes)
            return outcome
        committed = self._submit(self._ack_op(acked), ack=acked, counted=False)
        committed.add_done_callback(partial(_settle, outcome, outcomes))
        return outcome

    def _ack_op(self, acked: _Acked) -> Callable[[sqlite3.Connection], int]:
        def op(conn: sqlite3.Connection) -> int:
            deleted = 0
            for address, message_ids in acked:
                account_id, device_id = address
                cur = conn.executemany(
                    "DELETE FROM queue WHERE message_id = ? AND account_id = ? AND device_id = ?",
                    [(message_id, account_id, device_id) for message_id in message_ids],
                )
                deleted += cur.rowcount
            self._effects.append(partial(self._tails.removed_each, acked))
            return deleted

        return op

    # ------------------------------------------------------------------ connections

    async def claim_device(self, account_id: bytes, device_id: int) -> int:
        # One process holds a SQLite database, so the epochs live in its memory.
        address = (account_id, device_id)
        epoch = self._epochs[address] = self._epochs.get(address, 0) + 1
        return epoch

    def leader(self) -> bool:
        return True

    # ------------------------------------------------------------------ attachments

    async def add_attachment(self, record: AttachmentRecord, *, max_owner_bytes: int = 0) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if max_owner_bytes:
                (held,) = conn.execute(
                    "SELECT COALESCE(SUM(size), 0) FROM attachments"
                    " WHERE owner = ? AND expires_at > ?",
                    (record.owner, record.created),
                ).fetchone()
                if held + record.size > max_owner_bytes:
                    raise AttachmentQuotaFull("the account's attachments are at their quota")
            conn.execute(
                "INSERT INTO attachments (attachment_id, size, created, expires_at, owner)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    record.attachment_id,
                    record.size,
                    record.created,
                    record.expires_at,
                    record.owner,
                ),
            )

        await self._write(op)

    async def attachment(self, attachment_id: bytes) -> AttachmentRecord | None:
        def op(conn: sqlite3.Connection) -> AttachmentRecord | None:
            row = conn.execute(
                "SELECT size, created, expires_at, owner FROM attachments WHERE attachment_id = ?",
                (attachment_id,),
            ).fetchone()
            if row is None:
                return None
            size, created, expires_at, owner = row
            return AttachmentRecord(attachment_id, size, created, expires_at, bytes(owner))

        return await self._read(op)

    # ------------------------------------------------------------------ invites

    async def create_invite(self, record: InviteRecord, code_hash: bytes) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO invites (invite_id, code_hash, uses_left, uses, created,"
                " expires_at, revoked) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.invite_id,
                    code_hash,
                    record.uses_left,
                    record.uses,
                    record.created,
                    record.expires_at,
                    int(record.revoked),
                ),
            )
        )

    async def invites(self) -> list[InviteRecord]:
        return await self._read(
            lambda c: [
                InviteRecord(i, left, uses, created, expires, bool(revoked))
                for i, left, uses, created, expires, revoked in c.execute(
                    "SELECT invite_id, uses_left, uses, created, expires_at, revoked"
                    " FROM invites ORDER BY created, invite_id"
                )
            ]
        )

    async def revoke_invite(self, invite_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE invites SET revoked = 1 WHERE invite_id = ?", (invite_id,))
            if cur.rowcount != 1:
                raise UnknownInvite("no such invite")

        await self._write(op)

    # ------------------------------------------------------------------ operations

    async def stats(self) -> StorageStats:
        now = int(time.time())

        def op(conn: sqlite3.Connection) -> StorageStats:
            def one(sql: str, *args: Any) -> tuple[Any, ...]:
                return tuple(conn.execute(sql, args).fetchone())

            (accounts,) = one("SELECT COUNT(*) FROM accounts")
            (devices,) = one("SELECT COUNT(*) FROM devices")
            queued, queued_bytes, oldest = one(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(received_at) FROM queue"
            )
            attachments, attachment_bytes = one(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments"
            )
            (removed,) = one("SELECT COUNT(*) FROM account_removals")
            (usable,) = one(
                "SELECT COUNT(*) FROM invites WHERE revoked = 0 AND uses_left > 0"
                " AND (expires_at = 0 OR expires_at > ?)",
                now,
            )
            return StorageStats(
                accounts=accounts,
                devices=devices,
                queued_messages=queued,
                queued_bytes=queued_bytes,
                oldest_queued=oldest,
                attachments=attachments,
                attachment_bytes=attachment_bytes,
                log_entries=_log_size(conn),
                removed_accounts=removed,
                invites_usable=usable,
            )

        return await self._read(partial(_snapshot, op))

    # ------------------------------------------------------------------ retention

    async def purge(self, now: int) -> PurgeResult:
        # In steps of at most PURGE_STEP rows, each its own write, so that a large purge
        # neither holds the event loop nor keeps other writes waiting for long.
        def messages(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "DELETE FROM queue WHERE seq IN"
                " (SELECT seq FROM queue WHERE expires_at <= ? LIMIT ?)"
                " RETURNING account_id, device_id, message_id",
                (now, PURGE_STEP),
            ).fetchall()
            gone: dict[tuple[bytes, int], list[bytes]] = {}
            for account_id, device_id, message_id in rows:
                gone.setdefault((bytes(account_id), device_id), []).append(bytes(message_id))
            for address, message_ids in gone.items():
                self._effects.append(partial(self._tails.removed, address, message_ids))
            return len(rows)

        def nonces(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM nonces WHERE nonce IN"
                " (SELECT nonce FROM nonces WHERE expires_at <= ? LIMIT ?)",
                (now, PURGE_STEP),
            ).rowcount

        def attachments(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "DELETE FROM attachments WHERE attachment_id IN"
                " (SELECT attachment_id FROM attachments WHERE expires_at <= ? LIMIT ?)"
                " RETURNING attachment_id",
                (now, PURGE_STEP),
            ).fetchall()
            return [bytes(a) for (a,) in rows]

        message_count = nonce_count = 0
        while (step := await self._write(messages)) > 0:
            message_count += step
        while (step := await self._write(nonces)) > 0:
            nonce_count += step
        gone: list[bytes] = []
        while found := await self._write(attachments):
            gone += found
        return PurgeResult(message_count, nonce_count, gone)


# ---------------------------------------------------------------------- helpers (write path)


def _pack_list(items: Sequence[bytes]) -> bytes:
    return b"".join(len(item).to_bytes(4, "big") + item for item in items)


def _unpack_list(data: bytes) -> tuple[bytes, ...]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return tuple(out)


def _logged(row: tuple[Any, ...]) -> LoggedEntry:
    idx, entry, certificates, revocations = row
    return LoggedEntry(
        idx, bytes(entry), _unpack_list(bytes(certificates)), _unpack_list(bytes(revocations))
    )


def _snapshot(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    """``fn`` inside one read transaction: every statement sees the same database state."""
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")


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
        (size, account_id, last + 1, entry, _pack_list(certificates), _pack_list(revocations)),
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


def _spend_invite(conn: sqlite3.Connection, use: InviteUse) -> None:
    row = conn.execute(
        "SELECT code_hash, uses_left, expires_at, revoked FROM invites WHERE invite_id = ?",
        (use.invite_id,),
    ).fetchone()
    stored, uses_left, expires_at, revoked = row if row is not None else (None, 0, 0, True)
    if not admits(
        None if stored is None else bytes(stored),
        uses_left=uses_left,
        expires_at=expires_at,
        revoked=bool(revoked),
        use=use,
    ):
        raise InviteRefused("no usable invite has that code")
    conn.execute(
        "UPDATE invites SET uses_left = uses_left - 1, uses = uses + 1 WHERE invite_id = ?",
        (use.invite_id,),
    )


def _build_account_map(conn: sqlite3.Connection) -> None:
    """Fill the (empty) account map from the log: each username's newest entry."""
    newest: dict[str, tuple[int, bytes]] = {}
    for idx, raw in conn.execute("SELECT idx, entry FROM log_entries ORDER BY idx"):
        entry = bytes(raw)
        newest[decode_entry(entry).username] = (idx, leaf_hash(entry))
    build_map(
        SqliteMapStore(conn),
        [(account_map_key(name), account_map_value(i, h)) for name, (i, h) in newest.items()],
    )
    log.info("built the key-transparency map of %d accounts from the log", len(newest))


#: What a migration step does beyond its statements, after them, in its transaction.
_MIGRATION_BUILDS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {
    2: _build_account_map,
}


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a database of schema ``version`` to :data:`SCHEMA_VERSION`, all or nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        while version != SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            if version in _MIGRATION_BUILDS:
                _MIGRATION_BUILDS[version](conn)
            version += 1
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        conn.close()
        raise
    log.info("database schema migrated to version %d", SCHEMA_VERSION)


def _log_unlogged_accounts(conn: sqlite3.Connection) -> None:
    """Log every account that has no entry yet (a database from before the log)."""
    missing = [
        bytes(a)
        for (a,) in conn.execute(
            "SELECT account_id FROM accounts WHERE account_id NOT IN"
            " (SELECT account_id FROM log_entries) ORDER BY created, account_id"
        )
    ]
    if not missing:
        return
    conn.execute("BEGIN IMMEDIATE")
    for account_id in missing:
        log_account_state(conn, account_id)
    conn.execute("COMMIT")
    log.info("logged %d accounts that had no key-transparency entry", len(missing))


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
