"""Delivery: hand committed sends to the server, and settle them once it has answered.

Sends reach this module already committed (ratchet steps, history rows ``QUEUED``, one
outbox row per batch: :mod:`sealpost.client.services.sending`). :meth:`Delivery.hand`
queues a batch; a task submits the batches in the order they were encrypted, while the
sender loop goes on encrypting (the sealed socket's window may make it wait): each send's
sealed envelopes and group body go on the anonymous ``/v1/sealed`` socket, the copies for
this account's other devices as one signed ``PUT /v1/messages``.

**One settle path** (:meth:`Delivery.settle`) serves live sends and the sends a crash
left in the outbox (:meth:`Delivery.flush_outbox`, the same bytes again). For each send:

- the server stored every part: the message becomes ``SENT``;
- the server named an outdated device list (``mismatched_devices``): the named accounts
  are looked up again (every device still needs a certificate from its account key) and
  the send is encrypted anew, up to :data:`SEND_RETRIES` times, then ``FAILED``. A text
  (a send with a history row) is kept as a pending send (:mod:`.pending`) in the settle's
  own transaction, and the commit of its new encryption removes that row: a crash in
  between leaves it pending (sent at the next connect), never lost, and while the retry
  is on its way :meth:`PendingSends.flush <.pending.PendingSends.flush>` leaves it alone
  (``ClientContext.pending.queued``, until its future is done). A send with no history
  row is encrypted anew from memory only; a crash in that moment costs: a receipt, a
  status the peer does not see move on; a timer change or a deletion for everyone, which
  is applied here only once sent, so the user sees it undone and does it again; a group
  update or chain request, which members behind ask for again when a message under the
  newer version reaches them; a revocation notice, which the contact learns at its next
  lookup; a sender-key distribution, which the group message it came with (pending)
  sends again to any member device not recorded as holding the chain (one recorded
  that never got it, beside a sibling device just removed, waits for the next rotation);
- the connection was lost before the answer (:class:`ServerUnavailable`), or before the
  send was handed over (a batch cut off partway: the sends before it still settle by
  their own answers): it stays ``QUEUED`` in the outbox and goes again with the next
  :meth:`flush_outbox`;
- any other refusal: ``FAILED``.

The outbox row and the statuses change in one transaction; every status update goes
through the table of :mod:`sealpost.client.status`. Then the callers' futures are set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sealpost.client.context import ClientContext
from sealpost.client.errors import ServerError, ServerUnavailable
from sealpost.client.records import AttachmentInfo, Message
from sealpost.client.relay import RelaySealed
from sealpost.client.rows import ContactRow, Envelopes, Outgoing, Prepared
from sealpost.client.services.pairwise import PairwiseEncryptor
from sealpost.client.status import MessageStatus
from sealpost.client.store.outbox import Outboxed, Retry
from sealpost.client.store.unit import Repositories
from sealpost.client.transport import envelopes_json
from sealpost.protocol.content import TextContent

__all__ = ["SEND_RETRIES", "Delivery", "DeliveryPeers", "InFlight", "message_uuid", "outboxed"]

log = logging.getLogger("sealpost.client")

SEND_RETRIES = 3  # device-list refreshes before a send gives up


@dataclass(frozen=True, slots=True)
class DeliveryPeers:
    """What delivery asks of the directory, the devices and the groups."""

    resolve: Callable[[str, bool], Awaitable[ContactRow]]  # (name, refresh)
    contact_by_id: Callable[[bytes], ContactRow | None]
    refresh_own_devices: Callable[[], Awaitable[None]]
    name_of: Callable[[bytes], str]  # a contact's display name by account id
    group_name: Callable[[bytes], str | None]  # a group's name by id (None: unknown)


@dataclass(slots=True)
class InFlight:
    """A send handed to the server: its bytes as the outbox holds them, and the send it
    came from (``None`` for a resend of an outbox row kept without its retry record)."""

    sent: Outboxed
    item: Outgoing | None
    prepared: Prepared | None = None  # a live send (its Message goes to the caller)


class Delivery:
    def __init__(
        self,
        ctx: ClientContext,
        encryptor: PairwiseEncryptor,
        peers: DeliveryPeers,
        requeue: Callable[[Outgoing], None],
    ) -> None:
        self._ctx = ctx
        self._encryptor = encryptor
        self._peers = peers
        self._requeue = requeue
        self._submissions: asyncio.Queue[tuple[int, list[InFlight]]] = asyncio.Queue()
        self._submitter: asyncio.Task[None] | None = None
        #: Tasks that finish a send after its batch (settling, group replies).
        self.delivering: set[asyncio.Task[None]] = set()
        self._in_flight: set[int] = set()  # outbox rows being sent now
        self._sealed: RelaySealed | None = None

    # -- handing over

    def hand(self, outbox_id: int, prepared: list[Prepared]) -> None:
        """A committed batch (its outbox row ``outbox_id``), to submit in order."""
        self._in_flight.add(outbox_id)
        batch = [InFlight(outboxed(p), p.item, p) for p in prepared]
        if self._submitter is None or self._submitter.done():
            self._submitter = asyncio.create_task(self._submit_loop())
        self._submissions.put_nowait((outbox_id, batch))

    def track(self, task: asyncio.Task[None]) -> None:
        self.delivering.add(task)
        task.add_done_callback(self.delivering.discard)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task that :meth:`close` waits for."""
        self.track(asyncio.create_task(work))

    async def _submit_loop(self) -> None:
        while True:
            outbox_id, batch = await self._submissions.get()
            try:
                futures = await self.submit_all(batch)
            except asyncio.CancelledError:  # the client closed: sent again by flush_outbox
                self._in_flight.discard(outbox_id)
                _fail(batch, ServerUnavailable("the client closed"))
                raise
            self.track(asyncio.create_task(self._finish(outbox_id, batch, futures)))

    async def submit_all(self, batch: list[InFlight]) -> list[asyncio.Future[Any]]:
        """Each send's future, in order. Once a submit fails (the connection was lost),
        the sends after it fail with that error untried; the ones already handed over are
        settled by their own answers (every future is awaited by :meth:`settle`)."""
        futures: list[asyncio.Future[Any]] = []
        try:
            for f in batch:
                futures.append(await self.submit(f.sent))
        except Exception as exc:
            for _ in batch[len(futures) :]:
                failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                futures.append(failed)
        except BaseException:
            for future in futures:
                future.add_done_callback(_retrieve)
            raise
        return futures

    async def _finish(
        self, outbox_id: int, batch: list[InFlight], futures: list[asyncio.Future[Any]]
    ) -> None:
        try:
            await self.settle(outbox_id, batch, futures)
        except Exception as exc:
            _fail(batch, exc)
        finally:
            self._in_flight.discard(outbox_id)

    async def submit(self, sent: Outboxed) -> asyncio.Future[Any]:
        """Hand one send's parts to the server; the future fails if any part does."""
        parts: list[asyncio.Future[Any]] = []
        try:
            if sent.envelopes or sent.multi is not None:
                sock = await self._sealed_socket()
                if sent.envelopes:
                    parts.append(await sock.send(sent.envelopes, sent.tokens, send_id=sent.send_id))
                if sent.multi is not None:
                    multi, recipients = sent.multi
                    parts.append(
                        await sock.send_multi(multi, recipients, sent.tokens, send_id=sent.send_id)
                    )
        except BaseException:  # the send is unanswered (kept); its handed parts: no one waits
            for part in parts:
                part.add_done_callback(_retrieve)
            raise
        if sent.own:
            parts.append(asyncio.ensure_future(self._send_own(sent.own, sent.send_id)))
        if len(parts) == 1:
            return parts[0]
        return asyncio.gather(*parts)

    async def _sealed_socket(self) -> RelaySealed:
        if self._sealed is None or not self._sealed.alive:
            self._sealed = await self._ctx.transport.open_sealed()
        return self._sealed

    async def _send_own(self, envelopes: Envelopes, send_id: bytes) -> int:
        """A signed send to this account's other devices (the server knows the sender)."""
        doc = await self._ctx.transport.request(
            "PUT", "/v1/messages", body={"messages": envelopes_json(envelopes, send_id)}
        )
        return int(doc.get("stored", 0)) if isinstance(doc, dict) else 0

    # -- settling

    async def settle(
        self, outbox_id: int, batch: list[InFlight], futures: list[asyncio.Future[Any]]
    ) -> list[BaseException]:
        """Once the server answered for an outbox row's sends (see the module docstring);
        returns the errors of the sends that did not go."""
        results = await asyncio.gather(*futures, return_exceptions=True)
        retry: dict[int, Outgoing] = {}
        failed: set[int] = set()
        keep: list[Outboxed] = []
        errors: list[BaseException] = []
        for f, result in zip(batch, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            errors.append(result)
            key = id(f.item) if f.item is not None else id(f)
            if isinstance(result, ServerError) and result.code == "mismatched_devices":
                async with self._ctx.lock:  # it drops sessions: not while a batch encrypts
                    await self._refresh_after_mismatch(result)
                if f.item is not None:
                    retry[key] = f.item
                    continue
            if isinstance(result, ServerUnavailable | asyncio.CancelledError):
                keep.append(f.sent)  # no answer: the same bytes go again
            else:
                failed.add(key)
            if f.item is not None and not f.item.future.done():
                f.item.future.set_exception(result)
        for key, item in list(retry.items()):
            item.attempts += 1
            if item.attempts > SEND_RETRIES:
                del retry[key]
                failed.add(key)
                item.future.set_exception(
                    ServerError(409, "mismatched_devices", "the device list keeps changing")
                )
        unsettled = {id(s) for s in keep}

        def outcome(f: InFlight) -> MessageStatus | None:
            key = id(f.item) if f.item is not None else id(f)
            if key in failed:
                return MessageStatus.FAILED
            if key in retry or id(f.sent) in unsettled:
                return None  # still QUEUED: encrypted anew, or sent again
            return MessageStatus.SENT

        outcomes = [outcome(f) for f in batch] if errors else [MessageStatus.SENT] * len(batch)
        sent = [
            f.sent.uuid
            for f, o in zip(batch, outcomes, strict=True)
            if f.sent.uuid and o is MessageStatus.SENT
        ]
        lost = [
            f.sent.uuid
            for f, o in zip(batch, outcomes, strict=True)
            if f.sent.uuid and o is MessageStatus.FAILED
        ]
        with self._ctx.store.unit() as repos:
            repos.outbox.settle(outbox_id, keep)
            repos.messages.mark_outgoing(sent, MessageStatus.SENT)
            repos.messages.mark_outgoing(lost, MessageStatus.FAILED)
            kept = {id(i): _keep_pending(repos, i) for i in retry.values() if _has_row(i)}
        for f, o in zip(batch, outcomes, strict=True):
            if f.item is None or f.item.future.done() or o is not MessageStatus.SENT:
                continue
            message = None
            if f.prepared is not None and f.item.store:
                message = self.describe(f.prepared)
            f.item.future.set_result(message)
        for item in retry.values():
            if id(item) in kept:  # on the sender loop: PendingSends.flush leaves it alone
                self._queue_pending(item, kept[id(item)])
            self._requeue(item)
        return errors

    def _queue_pending(self, item: Outgoing, pending_id: int) -> None:
        """A retry kept as the pending send ``pending_id``: counted as queued until its
        future is done (encrypted and settled, or failed: then the row, if the commit
        did not remove it, is sent at the next connect)."""
        self._ctx.pending.any = True
        queued = self._ctx.pending.queued
        queued.discard(item.pending)  # an earlier attempt's row: removed when it was encrypted
        item.pending = pending_id
        queued.add(pending_id)
        item.future.add_done_callback(lambda _: queued.discard(item.pending))

    async def flush_outbox(self) -> int:
        """Send again what a crash (or a lost connection) left in the outbox: the same
        bytes, settled by :meth:`settle`. Returns how many sends were answered for;
        raises :class:`ServerUnavailable` when the server could not be reached."""
        done = 0
        unreadable = self._ctx.store.repos().outbox.unreadable()
        if unreadable:  # nothing in them can be sent: they must not hold up the rest
            with self._ctx.store.unit() as repos:
                repos.outbox.drop(unreadable)
            log.warning("dropped %d outbox rows that could not be read", len(unreadable))
        for outbox_id, sends in self._ctx.store.repos().outbox.pending():
            if outbox_id in self._in_flight:
                continue  # a live batch: its own settle answers for it
            batch = [InFlight(s, _resent(s)) for s in sends]
            self._in_flight.add(outbox_id)
            try:
                futures = await self.submit_all(batch)
                errors = await self.settle(outbox_id, batch, futures)
            finally:
                self._in_flight.discard(outbox_id)
            for error in errors:
                if isinstance(error, ServerUnavailable):
                    raise error
                if isinstance(error, ServerError) and error.code != "mismatched_devices":
                    log.warning("an unsent message was refused on resend: %s", error.code)
            done += len(sends)
        return done

    async def _refresh_after_mismatch(self, error: ServerError) -> None:
        """The server says a send named an outdated device list: fetch the named accounts
        again (each device still only accepted with a certificate from its account key)."""
        accounts = error.extra.get("accounts")
        ids = []
        if isinstance(accounts, dict):
            for key in accounts:
                with contextlib.suppress(ValueError):
                    ids.append(bytes.fromhex(key))
        for account_id in ids:
            if account_id == self._ctx.account_id:
                await self._peers.refresh_own_devices()
                continue
            contact = self._peers.contact_by_id(account_id)
            if contact is None:
                continue
            await self._peers.resolve(contact.username, True)
            current = self._peers.contact_by_id(account_id)
            keep = sorted(current.devices) if current else []
            self._encryptor.forget_account(account_id, keep)
            with self._ctx.store.unit() as repos:
                repos.sessions.drop_except(account_id, keep)

    def describe(self, p: Prepared) -> Message:
        """The history message a live send became."""
        content = p.item.content
        assert isinstance(content, TextContent)
        if p.item.group is not None:
            display, group = self._peers.group_name(p.item.group) or "?", p.item.group
        else:
            assert p.contact is not None
            display, group = self._peers.name_of(p.contact.account_id), None
        attachment = p.item.attachment
        return Message(
            content.message_id,
            display,
            True,
            content.text,
            content.sent_at,
            content.sent_at,
            MessageStatus.SENT.value,
            group,
            self._ctx.username,
            None
            if attachment is None
            else AttachmentInfo(
                attachment.filename, attachment.size, attachment.content_type, attachment.path
            ),
            content.sent_at + content.expire_timer * 1000 if content.expire_timer else None,
        )

    # -- closing

    async def close(self) -> None:
        """Let handed batches be submitted and settled (a while), then stop."""
        while not self._submissions.empty() and self._submitter is not None:
            await asyncio.sleep(0.01)
        if self.delivering:
            await asyncio.wait(set(self.delivering), timeout=10)
        if self._submitter is not None:
            self._submitter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._submitter
        if self._sealed is not None:
            with contextlib.suppress(Exception):
                await self._sealed.close()
        self._sealed = None


def message_uuid(p: Prepared) -> bytes:
    """The history message a send is (b"" for a send with no history row)."""
    content = p.item.content
    return content.message_id if isinstance(content, TextContent) and p.item.store else b""


def outboxed(p: Prepared) -> Outboxed:
    """A prepared send as the outbox keeps it: its bytes, and how to encrypt it anew."""
    item = p.item
    retry = Retry(
        item.peer, item.group, item.to_self, item.transcript, item.store, item.content,
        item.attempts, item.unpadded(),
    )  # fmt: skip
    return Outboxed(message_uuid(p), p.envelopes, p.tokens, p.multi, p.own, retry, p.send_id)


def _resent(sent: Outboxed) -> Outgoing | None:
    """The send an outbox entry came from, when it can be encrypted anew."""
    r = sent.retry
    if r is None:
        return None
    future: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
    future.add_done_callback(_retrieve)
    return Outgoing(
        r.peer, r.content, future, r.store, r.attempts, r.group, r.to_self, r.transcript
    )


def _has_row(item: Outgoing) -> bool:
    """Whether a send has a history row (a text): a retry of it is kept as a pending send."""
    return item.store and isinstance(item.content, TextContent)


def _keep_pending(repos: Repositories, item: Outgoing) -> int:
    """Keep a text to encrypt anew as a pending send (the commit of its encryption
    removes the row, :mod:`.sending`); returns the row's id."""
    content = item.content
    assert isinstance(content, TextContent)
    return repos.pending.add(content.message_id, item.peer, item.group, content)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Nobody awaits this future (a resend: its outcome is its status and a log line)."""
    if not future.cancelled():
        future.exception()


def _fail(batch: list[InFlight], exc: BaseException) -> None:
    for f in batch:
        if f.item is not None and not f.item.future.done():
            f.item.future.set_exception(exc)
