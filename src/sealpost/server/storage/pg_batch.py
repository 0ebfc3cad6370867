"""Group commit for PostgreSQL (for :mod:`.postgres`): the sends and acks that arrive while
a batch commits make the next batch, one statement in one transaction.

With ``synchronous_commit`` on, each transaction waits for its WAL flush (1 to 4 ms on this
machine's disk), and a device's sends and acks take turns on its ``device_queues`` row for
the length of that wait. One transaction per send and per ack bounds a relay by flushes
(bench/relay.py, N = 100: 501 msgs/s). So, as the SQLite backend does (:mod:`.sqlite`),
writes queue here and run in batches: every send and ack waiting when the previous batch
returned goes, in the order submitted, into one call of ``sealpost_batch`` (migration 4,
:mod:`.pg_schema`), a single statement and so a single transaction: it locks every device
row the batch touches in one sorted pass, checks the quotas, takes each device's next
sequence numbers in submission order, inserts, deletes the acked messages and commits.

The guarantees of :mod:`.base` hold per operation:

- a caller is answered only after the batch's COMMIT returned (durable);
- one batch is in flight at a time, so a connection's pipelined sends are stored in the
  order it sent them, and a device's queue order is their commit order;
- an operation refused (unknown account or device list mismatch, found by one read of the
  batch's destination devices before the statement) fails alone and changes nothing;
- if the statement finds a device removed meanwhile or a quota that would be passed, it
  changes nothing, and every operation of the batch runs again on its own (each its own
  transaction: a send as a ``sealpost_batch`` of itself, an ack as ``sealpost_ack``) so that
  the failing one fails alone;
- a send is answered with the number of its envelopes stored anew (an envelope whose
  message is queued already gets sequence number 0 and is not counted);
- an ack whose epoch is stale deletes nothing (:class:`~.base.StaleEpoch`) while the
  others of the batch are applied; so does a send whose fence is stale (migration 6: the
  sender's ``device_queues`` row is locked in the batch's sorted pass and its epoch read
  there), which stores nothing and counts against no quota;
- if the database fails, every operation of the batch fails with it; a deadlock or
  serialization failure (the batch was rolled back whole) runs the batch again. A batch
  that fails otherwise may have committed all the same (its answer lost with the
  connection, a timeout or a cancel after COMMIT), so ``forget`` is told, as after any
  batch whose changes ``committed`` was not told whole.

Operations that keep their own transaction (a multi-recipient send, which stores a shared
body first) still take their turn in this queue, so they are not reordered with a
connection's other sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, TypeAlias

import asyncpg

from sealpost.server.storage.base import (
    Envelope,
    Fence,
    QueuedMessage,
    QueuedSend,
    StaleEpoch,
    StorageError,
)
from sealpost.server.storage.pg_queue import (
    Address,
    ack_all,
    check_devices,
    device_lists,
    enqueue,
)

__all__ = ["Committed", "DeviceLists", "GroupCommit"]

log = logging.getLogger("sealpost.server.storage")

Conn: TypeAlias = asyncpg.Connection
#: Runs a function on a connection of the pool, as :meth:`PostgresStorage._tx` does.
Runner: TypeAlias = Callable[..., Awaitable[Any]]

#: Most operations one batch takes (bounds one statement's size and the wait of the first).
MAX_BATCH: Final = 512


class _Send(QueuedSend):
    """A send in the batch, with the future its caller awaits."""

    __slots__ = ("future",)

    def __init__(
        self,
        envelopes: Sequence[Envelope],
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int,
        fence: Fence | None,
        future: asyncio.Future[Any],
    ) -> None:
        super().__init__(envelopes, exempt, received_at, expires_at, max_depth, max_bytes, fence)
        self.future = future

    async def alone(self, conn: Conn) -> int:
        return await enqueue(
            conn,
            self.envelopes,
            exempt=self.exempt,
            received_at=self.received_at,
            expires_at=self.expires_at,
            max_depth=self.max_depth,
            max_bytes=self.max_bytes,
            fence=self.fence,
        )


class _Ack:
    __slots__ = ("address", "epoch", "future", "message_ids")

    def __init__(
        self,
        address: Address,
        message_ids: Sequence[bytes],
        epoch: int | None,
        future: asyncio.Future[Any],
    ) -> None:
        self.address = address
        self.message_ids = message_ids
        self.epoch = epoch
        self.future = future

    async def alone(self, conn: Conn) -> int:
        return await ack_all(conn, *self.address, self.message_ids, self.epoch)


class _Own:
    """An operation with a transaction of its own, run in its place in the queue."""

    __slots__ = ("fn", "forgets", "future", "transaction")

    def __init__(
        self,
        fn: Callable[[Conn], Awaitable[Any]],
        transaction: bool,
        forgets: bool,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.transaction = transaction
        self.forgets = forgets
        self.future = future


_Op: TypeAlias = _Send | _Ack | _Own
#: The device ids of each existing account among these (:func:`.pg_queue.device_lists`, or
#: a cache of it).
DeviceLists: TypeAlias = Callable[[Conn, set[bytes]], Awaitable[Mapping[bytes, AbstractSet[int]]]]
#: What a committed batch changed, for the caller's memory (:mod:`.tail`), in commit order:
#: the messages queued (with their sequence numbers) and the message ids deleted, by device.
Committed: TypeAlias = Callable[
    [list[tuple[Address, QueuedMessage]], list[tuple[Address, list[bytes]]]], None
]


class GroupCommit:
    """The write queue of one :class:`~.postgres.PostgresStorage`; used from one event loop."""

    def __init__(
        self,
        run: Runner,
        *,
        committed: Committed | None = None,
        forget: Callable[[], None] | None = None,
        lists: DeviceLists = device_lists,
    ) -> None:
        """``committed`` is told what each batch changed, in commit order, before anyone
        is answered; ``forget`` when queues changed, or may have, in a way it is not told
        (operations run one by one or with ``forgets``, a batch that failed)."""
        self._run = run
        self._committed = committed
        self._forget = forget
        self._lists = lists
        self._pending: deque[_Op] = deque()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches committed together (tests and metrics read them)
        self.fallbacks = 0  # batches that ran their operations one by one

    def enqueue(
        self,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int,
        fence: Fence | None = None,
    ) -> asyncio.Future[int]:
        """Queue a send now; its future is done once committed, with the number of its
        envelopes stored anew (not queued already), or fails with :class:`StaleEpoch` if
        ``fence`` is not its device's epoch then."""
        future = self._future()
        self._submit(
            _Send(envelopes, exempt, received_at, expires_at, max_depth, max_bytes, fence, future)
        )
        return future

    async def ack_all(
        self, address: Address, message_ids: Sequence[bytes], epoch: int | None
    ) -> int:
        return int(await self.ack_all_nowait(address, message_ids, epoch))

    def ack_all_nowait(
        self, address: Address, message_ids: Sequence[bytes], epoch: int | None
    ) -> asyncio.Future[int]:
        """:meth:`ack_all`, queued now."""
        future = self._future()
        self._submit(_Ack(address, message_ids, epoch, future))
        return future

    async def own(
        self,
        fn: Callable[[Conn], Awaitable[Any]],
        *,
        transaction: bool = True,
        forgets: bool = False,
    ) -> Any:
        """``fn`` in a transaction of its own, in its turn among the queued writes;
        ``forgets``: it changes queues (``forget`` is called once it ran)."""
        return await self.own_nowait(fn, transaction=transaction, forgets=forgets)

    def own_nowait(
        self,
        fn: Callable[[Conn], Awaitable[Any]],
        *,
        transaction: bool = True,
        forgets: bool = False,
    ) -> asyncio.Future[Any]:
        """:meth:`own`, queued now."""
        future = self._future()
        self._submit(_Own(fn, transaction, forgets, future))
        return future

    async def close(self) -> None:
        """Let the queued writes finish."""
        while self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    # ------------------------------------------------------------------ machinery

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _submit(self, op: _Op) -> None:
        self._pending.append(op)
        if self._task is None:
            # Its first step runs after this loop iteration: what is submitted meanwhile
            # joins the batch.
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                if isinstance(self._pending[0], _Own):
                    own = self._pending.popleft()
                    assert isinstance(own, _Own)
                    try:
                        result = await self._attempt(own)
                    finally:  # whatever its outcome, even unknown
                        if own.forgets:
                            self._forgotten()
                    await self._settle([own], [result])
                    continue
                batch: list[_Send | _Ack] = []
                while (
                    self._pending
                    and len(batch) < MAX_BATCH
                    and not isinstance(self._pending[0], _Own)
                ):
                    op = self._pending.popleft()
                    assert not isinstance(op, _Own)
                    batch.append(op)
                await self._settle(batch, await self._together(batch))
        finally:
            self._task = None

    async def _attempt(self, op: _Op) -> tuple[Any, BaseException | None]:
        try:
            if isinstance(op, _Own):
                return await self._run(op.fn, transaction=op.transaction), None
            return await self._run(op.alone, transaction=False), None
        except Exception as exc:
            return None, exc

    async def _together(self, batch: list[_Send | _Ack]) -> list[tuple[Any, BaseException | None]]:
        """Run the batch as one statement; each operation's (value, error)."""
        try:
            outcome: _Outcome | None = await self._run(
                lambda conn: _statement(conn, batch, self._lists), transaction=False
            )
        except Exception as exc:  # the database failed: the whole batch with it
            # It may have committed all the same (the connection dropped, or a timeout
            # or a cancel came, after COMMIT): what ``committed`` keeps is not known exact.
            self._forgotten()
            log.warning("group commit failed: %s", type(exc).__name__)
            return [(None, exc)] * len(batch)
        except BaseException:  # cancelled while committing, or not: as above
            self._forgotten()
            raise
        if outcome is None:  # refused by a device or a quota: each on its own, in order
            self.fallbacks += 1
            try:
                return [await self._attempt(op) for op in batch]
            finally:
                self._forgotten()
        results, added, removed = outcome
        self.batches += 1
        if self._committed is not None and (added or removed):
            try:
                self._committed(added, removed)
            except Exception:  # a bug, maybe half-way: the database is the truth
                self._forgotten()
                log.exception("after a group commit")
        return results

    def _forgotten(self) -> None:
        if self._forget is not None:
            self._forget()

    @staticmethod
    async def _settle(ops: Sequence[_Op], results: list[tuple[Any, BaseException | None]]) -> None:
        for op, (value, exc) in zip(ops, results, strict=True):
            if op.future.done():  # the caller was cancelled; the write happened, or not
                continue
            if exc is not None:
                op.future.set_exception(exc)
            else:
                op.future.set_result(value)


_Outcome: TypeAlias = tuple[
    list[tuple[Any, BaseException | None]],
    list[tuple[Address, QueuedMessage]],
    list[tuple[Address, list[bytes]]],
]


async def _statement(
    conn: Conn, batch: Sequence[_Send | _Ack], device_lists: DeviceLists
) -> _Outcome | None:
    """One ``sealpost_batch`` for the whole batch (after one read of its sends' devices);
    ``None`` if it changed nothing because an operation must fail on its own."""
    results: list[tuple[Any, BaseException | None]] = [(None, None)] * len(batch)
    sends = [(i, op) for i, op in enumerate(batch) if isinstance(op, _Send)]
    if sends:
        lists = await device_lists(conn, {e.account_id for _, op in sends for e in op.envelopes})
        kept = []
        for i, op in sends:
            refusal = _refusal(op, lists)
            if refusal is None:
                kept.append((i, op))
            else:
                results[i] = (None, refusal)
        sends = kept
    for i, _ in sends:
        results[i] = (0, None)  # envelopes stored anew, counted below
    rows: list[tuple[int, Envelope, int, int, Fence | None]] = [
        (i, e, op.received_at, op.expires_at, op.fence) for i, op in sends for e in op.envelopes
    ]
    depth = min((op.max_depth for _, op in sends), default=0)
    byte_limits = [op.max_bytes for _, op in sends if op.max_bytes]
    acks = [(i, op) for i, op in enumerate(batch) if isinstance(op, _Ack)]
    ack_rows = [(i, op, m) for i, op in acks for m in op.message_ids]
    if not rows and not ack_rows:  # every send refused, no message to ack
        answers = [
            (0, None) if isinstance(op, _Ack) else r for op, r in zip(batch, results, strict=True)
        ]
        return answers, [], []
    record = await conn.fetchrow(
        "SELECT * FROM sealpost_batch($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[],"
        " $5::int[], $6::bigint[], $7::bigint[], $8::bytea[], $9::bigint[], $10::bigint[],"
        " $11::int, $12::bigint,"
        " $13::int[], $14::bytea[], $15::bigint[], $16::bytea[], $17::bigint[])",
        [r[1].account_id for r in rows],
        [r[1].device_id for r in rows],
        [r[1].message_id for r in rows],
        [r[1].body for r in rows],
        [len(r[1].body) for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [None if r[4] is None else r[4].account_id for r in rows],
        [None if r[4] is None else r[4].device_id for r in rows],
        [None if r[4] is None else r[4].epoch for r in rows],
        depth,
        min(byte_limits, default=0),
        [i for i, _, _ in ack_rows],
        [op.address[0] for _, op, _ in ack_rows],
        [op.address[1] for _, op, _ in ack_rows],
        [m for _, _, m in ack_rows],
        [op.epoch for _, op, _ in ack_rows],
    )
    if record["status"] != 0:
        return None
    added = []
    for (i, e, received_at, _, _), seq in zip(rows, record["seqs"], strict=True):
        if seq < 0:  # the send's fence is stale (migration 6): each of its rows says so
            results[i] = (None, StaleEpoch("a newer connection of this device took over"))
        elif seq:  # 0: a resend of a message still queued, stored once (migration 5)
            added.append(
                ((e.account_id, e.device_id), QueuedMessage(e.message_id, seq, e.body, received_at))
            )
            results[i] = (results[i][0] + 1, None)
    stale = set(record["stale"])
    counts: dict[int, int] = {}
    for i in record["acked"]:
        counts[i] = counts.get(i, 0) + 1
    removed = []
    for i, ack in acks:
        if i in stale:
            results[i] = (None, StaleEpoch("a newer connection of this device took over"))
        else:
            results[i] = (counts.get(i, 0), None)
            removed.append((ack.address, list(ack.message_ids)))
    return results, added, removed


def _refusal(op: _Send, lists: Mapping[bytes, AbstractSet[int]]) -> StorageError | None:
    """Why a send must be refused, by its destinations' device lists (or ``None``)."""
    try:
        check_devices(op.envelopes, op.exempt, lists)
    except StorageError as exc:
        return exc
    return None
