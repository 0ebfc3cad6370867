"""The send pipeline's front: the queue, the sender loop, and the batch commit.

Every send (a text, a receipt, a group update, a sender key, a device notice) becomes an
:class:`~sealpost.client.rows.Outgoing` on one queue, so sends keep their call order.
The sender loop takes them in batches of up to :data:`BATCH`; for each batch, under the
client's lock (ratchets step here and in the receive pipeline, never both at once):

1. **prepare** each send: a pairwise send resolves its contact through the directory
   (refused for a verified contact whose key changed), and is encrypted to each of the
   contact's devices by the :class:`PairwiseEncryptor`, with a transcript to this
   account's other devices (:mod:`.transcripts`); a group send goes to the group
   encryptor (the groups service); a send ``to_self`` goes to this account's other
   devices only. The event loop gets a turn every :data:`YIELD_EVERY` sends (and after
   each batch), so delivery keeps the sockets served while a batch encrypts;
2. **commit** in one transaction: the ratchet steps, the history rows (``QUEUED``) and
   one outbox row for the whole batch (:mod:`sealpost.client.store.outbox`), and for a
   send kept while the server could not be reached (:mod:`.pending`) the removal of its
   pending row. If the commit fails, the ratchets that ran ahead are dropped from memory
   and nothing is sent;
3. **hand** the batch to :class:`~sealpost.client.services.delivery.Delivery`, which
   submits it and settles it once the server answered, and take the next batch.

A send that fails to prepare fails alone (its caller gets the error); the batch goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sealpost._errors import ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.errors import ClientError, ServerUnavailable, UnknownContact, UntrustedContact
from sealpost.client.records import Event, KeyChanged, Message
from sealpost.client.rows import ContactRow, Outgoing, Prepared
from sealpost.client.services.delivery import Delivery, DeliveryPeers, outboxed
from sealpost.client.services.pairwise import PairwiseEncryptor
from sealpost.client.services.transcripts import Transcripts
from sealpost.client.store.messages import OutgoingRow
from sealpost.client.transport import unb64
from sealpost.protocol.content import TextContent, pad_encoded
from sealpost.protocol.send_id import SEND_ID_LEN
from sealpost.protocol.wire import SenderCertificate

__all__ = ["BATCH", "CERT_MARGIN", "SendPeers", "Sending"]

log = logging.getLogger("sealpost.client")

BATCH = 256  # sends handled in one transaction
#: Sends encrypted between two turns of the event loop. Encrypting a batch never waits
#: on the network, so without these turns the sockets would go unserved for the whole batch
#: (tens of ms): the server's answers to the batch before would wait to be read, and the
#: sealed socket's window to be refilled.
YIELD_EVERY = 16
CERT_MARGIN = 3600  # renew the sender certificate this long before it expires


@dataclass(frozen=True, slots=True)
class SendPeers:
    """What the front of the pipeline asks of the directory, the devices, the groups and
    key transparency."""

    resolve: Callable[[str], Awaitable[ContactRow]]
    own_row: Callable[[], ContactRow]  # this account's other devices
    gossip: Callable[[], bytes | None]  # the newest tree head, to put in each message
    prepare_group: Callable[[Outgoing, SenderCertificate], Awaitable[list[Prepared]]]
    forget_group_chains: Callable[[], None]  # after a failed commit (see _commit)
    emit: Callable[[Event], None]


class Sending:
    def __init__(
        self,
        ctx: ClientContext,
        encryptor: PairwiseEncryptor,
        transcripts: Transcripts,
        peers: SendPeers,
        delivery_peers: DeliveryPeers,
    ) -> None:
        self._ctx = ctx
        self._encryptor = encryptor
        self._transcripts = transcripts
        self._peers = peers
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.delivery = Delivery(ctx, encryptor, delivery_peers, self.requeue)
        self._loop: asyncio.Task[None] | None = None
        self._cert: SenderCertificate | None = None
        self._cert_expires = 0

    # -- the queue

    def start(self) -> None:
        """Run the sender loop (if it is not running)."""
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run())

    async def enqueue(self, item: Outgoing) -> Message | None:
        """Queue a send; returns once it is settled (its Message for a history send)."""
        self.start()
        await self.queue.put(item)
        return await item.future

    async def put(self, item: Outgoing) -> None:
        """Queue a send without waiting for it (the receive pipeline's replies)."""
        self.start()
        await self.queue.put(item)

    def requeue(self, item: Outgoing) -> None:
        """A send to encrypt anew (a retry): behind what is queued already."""
        self.start()
        self.queue.put_nowait(item)

    async def _run(self) -> None:
        """Take queued sends in batches: encrypt and commit a batch, hand it to delivery,
        and go on with the next batch while the server answers."""
        while True:
            batch = [await self.queue.get()]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._send_batch(batch)
            except asyncio.CancelledError:
                _fail(batch, ServerUnavailable("the client closed"))
                raise
            except Exception as exc:  # each item's own error was set; this is the rest
                _fail(batch, exc)
            await asyncio.sleep(0)  # let delivery put the last batch on the wire first

    async def _send_batch(self, batch: list[Outgoing]) -> None:
        sender_cert = await self.sender_certificate()
        async with self._ctx.lock:
            prepared: list[Prepared] = []
            for i, item in enumerate(batch):
                try:
                    prepared += await self.prepare(item, sender_cert)
                except (ClientError, ProtocolError) as exc:
                    item.future.set_exception(exc)
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
            if not prepared:
                return
            outbox_id = self._commit(prepared)
        self.delivery.hand(outbox_id, prepared)

    async def sender_certificate(self) -> SenderCertificate:
        """The server's certificate of this device for sealed sender (renewed early)."""
        now = int(self._ctx.clock())
        if self._cert is None or self._cert_expires - CERT_MARGIN < now:
            doc = await self._ctx.transport.request("GET", "/v1/certificate/sender")
            cert = SenderCertificate.decode(unb64(doc.get("certificate")))
            cert.verify(self._ctx.server_key, now=now)
            self._cert, self._cert_expires = cert, cert.expires
        return self._cert

    # -- prepare

    async def prepare(self, item: Outgoing, sender_cert: SenderCertificate) -> list[Prepared]:
        """A send encrypted for the wire (a group send: its sender keys too)."""
        if item.to_self:
            envelopes = await self._encryptor.encrypt(
                self._peers.own_row(), pad_encoded(item.unpadded(), self._peers.gossip()),
                sender_cert,
            )  # fmt: skip
            return [Prepared(item, None, [], own=envelopes)]
        if item.group is not None:
            return await self._peers.prepare_group(item, sender_cert)
        contact = await self._peers.resolve(item.peer)
        if contact.key_changed:
            if contact.verified:
                raise UntrustedContact(contact.username)
            self._peers.emit(KeyChanged(contact.username, False))
        if not contact.devices:
            raise UnknownContact(item.peer)
        envelopes = await self._encryptor.encrypt(
            contact, pad_encoded(item.unpadded(), self._peers.gossip()), sender_cert
        )
        tokens = {contact.account_id: contact.delivery_token} if contact.delivery_token else {}
        own = await self._transcripts.of(item, contact, sender_cert)
        return [Prepared(item, contact, envelopes, tokens, own)]

    # -- commit

    def _commit(self, prepared: list[Prepared]) -> int:
        """Ratchet steps, history rows and the batch's outbox row in one transaction;
        returns the outbox row's id."""
        now_ms = self._ctx.now_ms()
        addresses = {(a, d) for p in prepared for a, d, _ in p.envelopes + p.own}
        rows = [
            OutgoingRow(
                c.message_id,
                _peer_key(p),
                c.text,
                c.sent_at,
                now_ms,
                self._ctx.account_id,
                now_ms + c.expire_timer * 1000 if c.expire_timer else None,
                c.attachment,
                p.item.attachment.path if p.item.attachment else None,
            )
            for p in prepared
            # a send encrypted anew (attempts) or kept pending has its history row already
            if p.item.store
            and not (p.item.attempts or p.item.pending)
            and isinstance(c := p.item.content, TextContent)
        ]
        pending = [p.item.pending for p in prepared if p.item.pending]
        for p in prepared:  # fresh per send, kept in the outbox: a resend carries the same
            p.send_id = self._ctx.rng(SEND_ID_LEN)
        try:
            with self._ctx.store.unit() as repos:
                repos.sessions.save_all(self._encryptor.session_records(addresses), now_ms // 1000)
                for p in prepared:
                    for write in p.writes:  # the group encryptor's
                        write(repos)
                repos.messages.add_outgoing(rows)
                outbox_id = repos.outbox.add([outboxed(p) for p in prepared])
                if pending:  # encrypted now: from the pending sends to the outbox
                    repos.pending.remove(pending)
        except BaseException:
            # the in-memory ratchets ran ahead of the store: drop them (nothing they
            # produced was sent) so the stored state is reloaded
            self._encryptor.forget(addresses)
            self._peers.forget_group_chains()
            raise
        for p in prepared:
            p.outbox_id = outbox_id
        return outbox_id

    # -- closing

    async def close(self) -> None:
        """Settle what was handed to the server (a while), then stop the loop."""
        await self.delivery.close()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None


def _peer_key(p: Prepared) -> bytes:
    """The conversation a prepared send belongs to (group id or account id)."""
    if p.item.group is not None:
        return p.item.group
    assert p.contact is not None
    return p.contact.account_id


def _fail(items: list[Outgoing], exc: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)
