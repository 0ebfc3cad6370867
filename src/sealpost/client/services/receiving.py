"""The receive pipeline: from a push on the stream to the store, then the acknowledgement.

A batch (the pushes already arrived, up to :data:`BATCH`) goes through two phases:

1. **fetch**, with no lock held: what the batch needs from the network (directory
   entries of new senders, checked against the key-transparency log; group-state blobs)
   is fetched into its :class:`~sealpost.client.inbox.Prefetched`;
2. **open and commit**, under the client's batch lock and with no network call: every push
   is opened (:mod:`.opening`) into one :class:`~sealpost.client.rows.BatchState`, and the
   whole state is committed in one unit of work (:mod:`.batch_commit`).

What a message needs is known only once it is open, so phase 2 may find a need not yet
fetched (:class:`~sealpost.client.inbox.Missing`): it then discards the state (nothing
was committed), releases the lock and goes back to phase 1 for what was asked; at most
:data:`~sealpost.client.inbox.MAX_ROUNDS` rounds, usually one. Only after the commit are
the pushes acknowledged, the alarms of the batch raised, receipts scheduled and the peers'
gossiped tree heads checked. A message that fails for a reason of its own is dropped
alone (:mod:`sealpost.client.inbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from sealpost.client.context import ClientContext
from sealpost.client.errors import ClientError, ServerUnavailable
from sealpost.client.inbox import (
    MAX_ROUNDS,
    BatchMark,
    DirectoryEntry,
    DropMessage,
    Missing,
    Prefetched,
    must_retry,
)
from sealpost.client.records import Event, Message, ReceiptReceived
from sealpost.client.relay import RelayStream
from sealpost.client.rows import BatchState, ContactRow, Outgoing
from sealpost.client.services.batch_commit import BatchCommitter
from sealpost.client.services.opening import Opener
from sealpost.client.services.transparency import KeyTransparency
from sealpost.client.transport import Push
from sealpost.protocol import SessionRecord
from sealpost.protocol.content import MAX_RECEIPT_IDS, ReceiptContent

__all__ = ["BACKLOG_TIMEOUT", "BATCH", "RECEIPT_DELAY", "Fetchers", "Hooks", "Receiver"]

log = logging.getLogger("sealpost.client")

BATCH: Final = 256  # pushes handled in one transaction
RECEIPT_DELAY: Final = 0.2  # seconds receipts wait to be sent together
BACKLOG_TIMEOUT: Final = 30.0  # how long the server may take to push what was queued


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetchers:
    """Phase 1: what a batch may need from the network (the directory, attachments)."""

    lookup: Callable[[str], Awaitable[DirectoryEntry]]
    refresh: Callable[[str], Awaitable[ContactRow]]
    download: Callable[[bytes], Awaitable[bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hooks:
    """What the pipeline asks of the other services around a batch."""

    flush_outbox: Callable[[], Awaitable[int]]
    upkeep: Callable[[], Awaitable[None]]
    maintain_prekeys: Callable[[], Awaitable[None]]
    transparency: Callable[[], Awaitable[KeyTransparency]]
    enqueue: Callable[[Outgoing], Awaitable[None]]  # a send for the sender loop
    queue_group_sends: Callable[[BatchState], None]
    contact_by_id: Callable[[bytes], ContactRow | None]
    contacts_changed: Callable[[], None]
    local_changed: Callable[[], None]
    next_monitor: Callable[[], float]  # when self-monitoring is due (clock seconds)


class Receiver:
    """Receives, stores and acknowledges (see the module docstring)."""

    def __init__(
        self,
        ctx: ClientContext,
        opener: Opener,
        committer: BatchCommitter,
        fetchers: Fetchers,
        hooks: Hooks,
        *,
        sessions: dict[tuple[bytes, int], SessionRecord],
    ) -> None:
        self._ctx = ctx
        self._opener = opener
        self._committer = committer
        self._fetchers = fetchers
        self._hooks = hooks
        self._sessions = sessions  # the session cache the sending side shares
        self.stream: RelayStream | None = None
        self._receipts_due: dict[bytes, list[bytes]] = {}
        self._prekeys_used = 0
        self._receipt_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the stream

    async def _open_stream(self) -> RelayStream:
        if self.stream is None or self.stream.close_code is not None:
            self.stream = await self._ctx.transport.open_stream()
            self.stream.on_prekeys_low = self._prekeys_low
        return self.stream

    def _prekeys_low(self) -> None:
        """The server says the one-time prekeys run low (someone fetched bundles): refill
        a moment from now, with the receipts, not only at the next hourly upkeep."""
        self._prekeys_used += 1
        self.schedule_receipts()

    async def receive(self, wait: float = 0.0) -> list[Event]:
        """Fetch everything queued for this device (waiting up to ``wait`` seconds for at
        least one message), store it, acknowledge it; returns the events in order."""
        await self._hooks.flush_outbox()
        reused = self.stream is not None and self.stream.close_code is None
        stream = await self._open_stream()
        await self._hooks.upkeep()
        take = self._ctx.events.take
        events: list[Event] = take()
        deadline = time.monotonic() + wait
        got_message = False
        # a stream already open whose backlog was all read: no new end marker will come
        drained_once = reused and stream.idle and not stream.pending_pushes()
        while True:
            if drained_once and not got_message:
                timeout = max(0.0, deadline - time.monotonic())
            else:
                timeout = BACKLOG_TIMEOUT  # the server marks the backlog's end
            first = await stream.next_push(timeout)
            if first is None:
                if stream.close_code is not None:
                    raise ServerUnavailable("the server closed the stream")
                if drained_once:
                    break
                raise ServerUnavailable("the server did not finish sending the backlog")
            if first.server_id == b"":
                drained_once = True
                if got_message or time.monotonic() >= deadline:
                    break
                continue
            batch, drained = await _drain(stream, first)
            new = await self.process(stream, batch)
            events += new + take()
            got_message = got_message or any(not isinstance(e, ReceiptReceived) for e in new)
            if drained:
                drained_once = True
                if got_message or time.monotonic() >= deadline:
                    break
        await self.flush_receipts()
        return events + take()

    async def events(self) -> AsyncIterator[Event]:
        """Every event as it happens, staying connected (reconnecting with backoff)."""
        take = self._ctx.events.take
        backoff = 1.0
        while True:
            try:
                await self._hooks.flush_outbox()
                stream = await self._open_stream()
                await self._hooks.upkeep()
                backoff = 1.0
                for event in take():
                    yield event
                while True:
                    wait = max(1.0, self._hooks.next_monitor() - self._ctx.clock())
                    started = time.monotonic()
                    push = await stream.next_push(wait)
                    timed_out = time.monotonic() - started >= wait * 0.9
                    if push is None and timed_out and stream.close_code is None:
                        await self._hooks.upkeep()  # quiet for a while: self-monitoring is due
                        for event in take():
                            yield event
                        continue
                    if push is None:
                        raise ServerUnavailable("the server closed the stream")
                    if push.server_id == b"":
                        self.schedule_receipts()
                        continue
                    pushes, drained = await _drain(stream, push)
                    for event in await self.process(stream, pushes):
                        yield event
                    for event in take():
                        yield event
                    if drained:
                        self.schedule_receipts()
            except ServerUnavailable:
                self.stream = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    # ------------------------------------------------------------------ one batch

    async def process(self, stream: RelayStream, pushes: list[Push]) -> list[Event]:
        """Fetch what the batch needs, open and commit it under the lock, then ack it."""
        fetched = Prefetched()
        state, drops = BatchState(fetched=fetched), list[str]()
        for round_ in range(MAX_ROUNDS):
            last = round_ == MAX_ROUNDS - 1
            await fetched.fetch(  # phase 1: the network, no lock held
                lookup=self._fetchers.lookup,
                refresh=self._fetchers.refresh,
                download=self._fetchers.download,
            )
            async with self._ctx.lock:  # phase 2: no network call, one commit
                try:
                    state, drops = await self._open_all(pushes, fetched, last=last)
                    if fetched.pending and not last:
                        # opened again once the needs are fetched: nothing is kept (and
                        # what failed may have failed for want of what was missing)
                        self._forget(state)
                        continue
                    self._commit(state, pushes)
                except BaseException:
                    self._forget(state)  # nothing was committed
                    raise
            break
        for reason in drops:
            log.warning("dropped an undecryptable message: %s", reason)
        await stream.ack_all([push.server_id for push in pushes])
        for account_id, ids in state.reply_to.items():
            self._receipts_due.setdefault(account_id, []).extend(ids)
        self._prekeys_used += state.prekey_messages
        self._hooks.queue_group_sends(state)
        if state.alarms or state.gossip:
            kt = await self._hooks.transparency()
            for kind, subject, detail in state.alarms:
                kt.alarm(kind, subject, detail)
            for head, sender in state.gossip.items():
                await kt.check_gossip(head, sender)
        return state.events

    async def _open_all(
        self, pushes: list[Push], fetched: Prefetched, *, last: bool
    ) -> tuple[BatchState, list[str]]:
        """Phase 2: open every push not stored yet into one state. A message that needs
        what is not fetched is put back and leaves ``fetched.pending`` set (in the last
        round it is dropped: it asked for more than any message may). Returns the state
        and why each dropped message was dropped (logged once the batch is committed)."""
        state, drops = BatchState(fetched=fetched), []
        stored = self._ctx.store.repos().processed.seen([p.server_id for p in pushes])
        for push in pushes:
            if push.server_id in stored:  # stored before a crash, not yet acked
                continue
            mark = BatchMark.of(state)
            try:
                await self._opener.open(push, state)
            except Missing:
                mark.restore(state)
                if last:
                    drops.append("it needs too much from the network")
            except Exception as exc:
                if must_retry(exc):
                    raise  # not this message's fault: the batch waits, unacked
                # a forged, corrupted, replayed or undecryptable message, one whose sender
                # the log does not confirm (an alarm is up), one naming what does not
                # exist: it alone is dropped (acked with the batch), and what it changed
                # in the batch is undone
                mark.restore(state)
                drops.append(exc.reason if isinstance(exc, DropMessage) else type(exc).__name__)
        return state, drops

    def _forget(self, state: BatchState) -> None:
        """A batch not committed: forget what it did in memory (cached contacts it
        changed, sessions)."""
        for address in state.sessions:
            self._sessions.pop(address, None)
        self._hooks.contacts_changed()

    def _commit(self, state: BatchState, pushes: list[Push]) -> None:
        store = self._ctx.store
        with store.unit() as repos:
            changed = self._committer.commit(repos, state, pushes)
        if changed:
            self._hooks.contacts_changed()
        self._hooks.local_changed()
        self._sessions.update(state.sessions)

    # ------------------------------------------------------------------ receipts

    def schedule_receipts(self) -> None:
        """Send the due receipts a moment from now, so a stream of messages is answered
        with a few receipts naming many messages rather than one per batch."""
        if self._receipt_task is None or self._receipt_task.done():
            self._receipt_task = asyncio.create_task(self._delayed_receipts())

    async def _delayed_receipts(self) -> None:
        await asyncio.sleep(RECEIPT_DELAY)
        try:
            await self.flush_receipts()
        except ClientError as exc:
            log.warning("receipts or prekey upkeep failed: %s", type(exc).__name__)

    async def flush_receipts(self) -> None:
        """Send the delivery receipts due, then refill prekeys if first messages used some."""
        due, self._receipts_due = self._receipts_due, {}
        futures = []
        for account_id, ids in due.items():
            contact = self._hooks.contact_by_id(account_id)
            if contact is None:
                continue
            for start in range(0, len(ids), MAX_RECEIPT_IDS):
                receipt = ReceiptContent(
                    self._ctx.now_ms(),
                    self._ctx.delivery_token,
                    tuple(ids[start : start + MAX_RECEIPT_IDS]),
                )
                future: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
                await self._hooks.enqueue(Outgoing(contact.username, receipt, future, store=False))
                futures.append(future)
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                log.warning("a delivery receipt was not sent: %s", type(result).__name__)
        if self._prekeys_used:
            self._prekeys_used = 0
            await self._hooks.maintain_prekeys()

    async def disconnect(self) -> None:
        """Closing: the stream goes (an error closing it is of no consequence)."""
        if self.stream is not None:
            with contextlib.suppress(Exception):
                await self.stream.close()
        self.stream = None

    async def stop_receipts(self) -> None:
        """Closing: the receipts due are sent now."""
        if self._receipt_task is not None and not self._receipt_task.done():
            self._receipt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receipt_task
            with contextlib.suppress(ClientError):
                await self.flush_receipts()


async def _drain(stream: RelayStream, first: Push) -> tuple[list[Push], bool]:
    """``first`` and the pushes already arrived behind it, up to a batch or the backlog's
    end marker (``True`` if that was seen)."""
    batch = [first]
    while len(batch) < BATCH and stream.pending_pushes():
        nxt = await stream.next_push(0)
        if nxt is None:
            break
        if nxt.server_id == b"":
            return batch, True
        batch.append(nxt)
    return batch, False
