"""The message queues in SQLite: sends (one body a device, or one shared body for many,
released by a trigger with its last message), fetches and acks, and the connection epochs
that fence a replaced connection's sends and acks. A send or an ack is an operation of the
group commit that also says what it does as data, so that a batch of nothing else runs in
bulk (:mod:`.sqlite_bulk`); the checks a send makes (device lists, queue depth) read the
write path's memory first (:mod:`.sqlite_core`), and the database only when that cannot
answer. The epochs live only in memory, as one process holds the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from sealpost.server.storage.base import (
    AwaitedSends,
    DeviceAcks,
    Envelope,
    Fence,
    MismatchedDevices,
    QueuedMessage,
    QueuedSend,
    QueueFull,
    QueuePosition,
    SharedEnvelope,
    StaleEpoch,
    UnknownAccount,
)
from sealpost.server.storage.sqlite_core import WRITE_CACHE, SqliteCore, _Acked

__all__ = ["SqliteQueue"]


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


class SqliteQueue(AwaitedSends, SqliteCore):
    """Sends, fetches and acks, and the connection epochs that fence them."""

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

    async def queue_positions(
        self, addresses: Sequence[tuple[bytes, int]]
    ) -> dict[tuple[bytes, int], QueuePosition]:
        # Never polled (one process holds the file, so no wake-up is lost); each device's
        # highest queued sequence number (0 for none), a lookup of its index each.
        def op(conn: sqlite3.Connection) -> dict[tuple[bytes, int], int]:
            found = {}
            for account_id, device_id in addresses:
                row = conn.execute(
                    "SELECT (SELECT COALESCE(MAX(q.seq), 0) FROM queue q"
                    " WHERE q.account_id = d.account_id AND q.device_id = d.device_id)"
                    " FROM devices d WHERE d.account_id = ? AND d.device_id = ?",
                    (account_id, device_id),
                ).fetchone()
                if row is not None:
                    found[(account_id, device_id)] = int(row[0])
            return found

        seqs = await self._read(op)
        epochs = self._epochs
        return {a: QueuePosition(seq, epochs.get(a, 0)) for a, seq in seqs.items()}

    async def claim_device(self, account_id: bytes, device_id: int) -> int:
        # One process holds a SQLite database, so the epochs live in its memory.
        address = (account_id, device_id)
        epoch = self._epochs[address] = self._epochs.get(address, 0) + 1
        return epoch

    def leader(self) -> bool:
        return True

    def stopped(self) -> str | None:
        return None  # one process holds the file, and nothing takes it over
