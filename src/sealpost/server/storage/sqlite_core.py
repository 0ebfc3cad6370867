"""The write machinery of :class:`~.sqlite.SqliteStorage`: group commit (a batch of sends
and acks as a few statements, mostly on a commit thread; anything else statement by
statement on the event loop), what the write path keeps in memory, and the reader threads.
Every table's methods (the other ``sqlite_*`` modules) are mixins of :class:`SqliteCore`
and reach the database only through :meth:`SqliteCore._write` / :meth:`SqliteCore._submit`
(an operation in the next batch) and :meth:`SqliteCore._read` (a reader thread). The file
is opened, with its schema (:mod:`.sqlite_schema`), and closed by :mod:`.sqlite`.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from sealpost.server.storage import sqlite_bulk
from sealpost.server.storage.base import AccountRecord, Envelope, Fence, QueuedMessage, QueuedSend
from sealpost.server.storage.sqlite_bulk import AckRow, QueueRow
from sealpost.server.storage.tail import QueueTails

__all__ = ["SqliteCore"]

log = logging.getLogger("sealpost.server.storage")

T = TypeVar("T")

#: Most operations one group commit takes from the queue; bounds the latency a very long
#: batch would add to the first operation in it, and how long it holds the event loop.
MAX_BATCH: Final = 256
#: The same for a batch that runs in bulk (:mod:`.sqlite_bulk`): it holds the loop for
#: little, and under load every batch is full, so its size bounds the rate.
MAX_BULK: Final = 1024
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


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")  # the WAL write and fsync; the GIL is released meanwhile


def _snapshot(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    """``fn`` inside one read transaction: every statement sees the same database state."""
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")


class SqliteCore:
    """The connections, the group commit and the write path's memory, which every
    table's methods (the mixins of :class:`~.sqlite.SqliteStorage`) share."""

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
                    # An id acked twice by one device is one row (no dict for one id: with
                    # the load spread over many devices, one a device is the rule).
                    for message_id in (
                        message_ids if len(message_ids) == 1 else dict.fromkeys(message_ids)
                    ):
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
        if len(envelopes) == 1:  # the common send (a sealed one): no dict and set for it
            (env,) = envelopes
            actual = self._device_ids.get(env.account_id)
            if actual is None:
                return False
            if env.account_id in exempt:
                actual = actual - {exempt[env.account_id]}
            return len(actual) == 1 and env.device_id in actual
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

    def _stale(self, fence: Fence) -> bool:
        """Whether a claim (:meth:`claim_device`) took a newer epoch than ``fence``'s."""
        return self._epochs.get((fence.account_id, fence.device_id), 0) != fence.epoch

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
