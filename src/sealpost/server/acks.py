"""The acks of every ``/v1/stream`` connection, committed together.

A device acks each message pushed to it (``{"type": "ack", "id": HEX}``), so acks are the
most frequent frame a relay receives. With the load spread over many devices, each gets
about one message per group commit, and an ack of its own would cost its own storage
operation and task. :class:`AckCommitter` takes the acks every connection received in one
event-loop iteration (from its text hook, :data:`~.ws_protocol.ON_TEXT`, or its reading
task) and, once the iteration's callbacks have run, queues them all at once
(:meth:`~.storage.base.Storage.ack_each_nowait`) to the next group commit, which deletes
them together (SQLite's bulk batch and PostgreSQL's batch statement: one ``DELETE``), with
no task and one future for them all. What holds, as when each connection committed its
own:

- Each device's acks are checked against its connection's fence, the epoch it claimed
  (:meth:`~.storage.base.Storage.claim_device`), or none once its client closed (the acks
  it sent before are its own, whatever connection of it came since). A stale epoch fails
  that connection alone (:meth:`Acking.ack_failed`: the stream closes it with 4409), as
  does any other failure.
- A connection's acks are committed in the order received, and :meth:`AckCommitter.drain`
  commits those it holds and waits until all are: a connection that ends lets the acks it
  received reach the database first, even when a later batch of them is refused at once
  (a stale epoch, a storage closing) while an earlier one is still committing: its
  ``pending`` counts exactly what it holds and has in flight.
- A connection holds at most :data:`MAX_PENDING_ACKS` acks received and not yet committed:
  a frame that would take it past that is left by its hook to its reader, which waits
  for room for the whole frame (:meth:`AckCommitter.room`; the frames after it wait
  behind it, in the socket's inbox), so a client acking faster than the database commits
  is held back by the socket's reading, not queued without end.
- ``sealpost_messages_acked_total`` counts the acks committed, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

from sealpost.server.fanout.base import DeviceAddress
from sealpost.server.metrics import Metrics
from sealpost.server.storage.base import DeviceAcks, StaleEpoch, Storage

__all__ = ["MAX_PENDING_ACKS", "AckCommitter", "Acking"]

#: Acks a connection may have received and not yet seen committed (about 100 bytes each
#: while held); a device acks what it was pushed, at most a few hundred a commit.
MAX_PENDING_ACKS = 1024


class Acking(Protocol):
    """What :class:`AckCommitter` reads and keeps on a connection (its ``__slots__``: a
    server holds tens of thousands)."""

    address: DeviceAddress | None  # None: no device's (never given to the committer)
    fence: int | None  # the epoch acks are checked against; None: no check
    acks: list[bytes]  # received, not yet queued to the storage
    pending: int  # received, not yet committed (queued or not)
    committing: asyncio.Future[Any] | None  # the last queued to the storage, until done

    def ack_failed(self, exc: BaseException) -> None:
        """Committing some of its acks failed (:class:`~.storage.base.StaleEpoch`, or the
        storage's own failure): those are lost and the connection must end."""


class AckCommitter:
    """Acks of all connections, queued to the storage once per event-loop iteration. One
    per server process (its storage's event loop)."""

    def __init__(self, storage: Storage, metrics: Metrics) -> None:
        self._storage = storage
        self._metrics = metrics
        self._held: list[Acking] = []  # connections with acks not yet queued
        self._scheduled = False
        # Every batch queued and not yet done (one entry a batch, not a connection: a few,
        # one an iteration while its commit runs), for a connection whose last batch is
        # done before an earlier one.
        self._in_flight: set[asyncio.Future[None]] = set()

    def add(self, conn: Acking, message_id: bytes) -> None:
        """An ack ``conn`` received: queued to the storage at the end of this iteration."""
        self.add_all(conn, (message_id,))

    def add_all(self, conn: Acking, message_ids: Sequence[bytes]) -> None:
        """Acks ``conn`` received, in order: queued to the storage at the end of this
        iteration."""
        acks = conn.acks
        if not acks:
            self._held.append(conn)
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        acks += message_ids
        conn.pending += len(message_ids)

    async def room(self, conn: Acking, need: int = 1) -> None:
        """Wait until ``conn`` may take ``need`` more acks: until it holds at most
        :data:`MAX_PENDING_ACKS` uncommitted with them (or none in flight: the count is
        settled). Queues what it holds, not waiting for the iteration's end."""
        while conn.pending + need > MAX_PENDING_ACKS:
            if conn.acks:
                self._queue([conn])
            if not await self._one_done(conn):
                return

    async def drain(self, conn: Acking) -> None:
        """Queue the acks ``conn`` holds now (with its fence as it is now) and wait until
        all its acks are committed or failed (never raises)."""
        if conn.acks:
            self._queue([conn])
        while await self._one_done(conn):
            pass

    async def _one_done(self, conn: Acking) -> bool:
        """Wait until a batch of ``conn``'s acks in flight is done; ``False`` at once if
        none is (``pending`` is what it holds and what is in flight, exactly)."""
        if conn.pending == len(conn.acks):
            return False
        future = conn.committing
        if future is None:  # its last batch is done before an earlier one (refused at
            # once): wait for any batch, as none is known to be conn's
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.wait((future,))
        return True

    def _flush(self) -> None:
        self._scheduled = False
        held, self._held = self._held, []
        self._queue(held)

    def _queue(self, conns: list[Acking]) -> None:
        """Queue what ``conns`` hold (each once; one that holds none now is left out) in
        one operation. Each connection is visited twice a commit, here and once it is
        committed: with the load spread over 10,000 devices, each acking about one
        message a commit, every visit is a read of memory out of the CPU's caches."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()  # committing: the connections'
        batch: list[DeviceAcks] = []
        queued: list[Acking] = []
        for conn in conns:
            ids = conn.acks
            if not ids:
                continue
            conn.acks = []
            address = conn.address
            assert address is not None
            batch.append(_new_acks(DeviceAcks, (*address, ids, conn.fence)))
            queued.append(conn)
            conn.committing = done
        if not queued:
            return
        self._in_flight.add(done)
        try:
            future = self._storage.ack_each_nowait(batch)
        except Exception as exc:  # the storage is not open (shutting down)
            future = loop.create_future()
            future.set_exception(exc)
            self._committed(queued, batch, done, future)
            return
        future.add_done_callback(partial(self._committed, queued, batch, done))

    def _committed(
        self,
        conns: list[Acking],
        batch: list[DeviceAcks],
        done: asyncio.Future[None],
        future: asyncio.Future[list[StaleEpoch | None]],
    ) -> None:
        cancelled = future.cancelled()  # never by us: then only the counts are settled
        failure = None if cancelled else future.exception()
        outcomes: Sequence[BaseException | None] = (
            future.result() if not cancelled and failure is None else [failure] * len(conns)
        )
        self._in_flight.discard(done)
        committed = 0
        for conn, acks, outcome in zip(conns, batch, outcomes, strict=True):
            count = len(acks.message_ids)
            conn.pending -= count
            if conn.committing is done:
                conn.committing = None
            if outcome is not None:
                conn.ack_failed(outcome)
            elif not cancelled:
                committed += count
        done.set_result(None)
        if committed:
            self._metrics.inc("sealpost_messages_acked_total", "messages acknowledged", committed)


_new_acks = tuple.__new__  # a DeviceAcks without its Python-level __new__: one a device
