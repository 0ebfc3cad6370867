"""Pending sends: a text written while the server could not be reached, kept in the
profile and sent once it can be (what a Signal or WhatsApp user expects of "no connection").

A send needs the server before anything is committed: the sender certificate (held in
memory only), and a prekey bundle for a new session. When it cannot reach the server
(:class:`ServerUnavailable`: a connection error, never a refusal) and its caller asked for
it (``Client.send(..., queue_offline=True)``, what the app does; the command line's
``sealpost send`` still fails, exit 4), :meth:`PendingSends.keep` commits, in one unit, its
history row (``QUEUED``, shown at once) and a pending row with its content
(:mod:`sealpost.client.store.pending`; never a key), and the call returns.

:meth:`PendingSends.send_all` runs whenever the client connects (each
:meth:`Client.receive`, each reconnect of :meth:`Client.events`, :meth:`Client.flush_outbox`,
and before the next :meth:`Client.send`, so a new message never overtakes an older one):
what the outbox holds goes first (already encrypted), then the pending sends, oldest
first, through the sender loop like any send: encrypted, committed together with the
removal of their pending rows, submitted and settled by
:class:`~sealpost.client.services.delivery.Delivery`. A crash before that commit leaves
the pending row (encrypted later); after it, the outbox row (the same bytes again; the
recipient drops a message id it has). A pending send refused for good (when it is
encrypted: the contact is unknown, or a verified contact's key changed; or by the server
once sent: an account removed meanwhile) becomes ``FAILED`` through the status table,
and a :class:`SendFailed` event says why; one that still cannot reach the server stays
pending.

Example::

    message = await client.send("bob", "hi", queue_offline=True)  # offline: "sending"
    ...
    await client.flush_outbox()  # connected again: encrypted and sent now
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sealpost._errors import ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.errors import ClientError, GroupOutOfDate, ServerError, ServerUnavailable
from sealpost.client.futures import future
from sealpost.client.records import Message, SendFailed
from sealpost.client.rows import Outgoing
from sealpost.client.services.conversations import Conversations
from sealpost.client.status import MessageStatus
from sealpost.client.store.messages import OutgoingRow
from sealpost.client.store.pending import PendingSend
from sealpost.protocol.content import TextContent

__all__ = ["PendingSends"]

log = logging.getLogger("sealpost.client")


class PendingSends:
    """Texts kept while the server could not be reached (see the module docstring)."""

    def __init__(
        self,
        ctx: ClientContext,
        conversations: Conversations,
        *,
        put: Callable[[Outgoing], Awaitable[None]],  # onto the sender loop's queue
        flush_outbox: Callable[[], Awaitable[int]],
        group_name: Callable[[bytes], str | None],
    ) -> None:
        self._ctx = ctx
        self._conversations = conversations
        self._put = put
        self._flush_outbox = flush_outbox
        self._group_name = group_name
        self._state = ctx.pending  # shared with Delivery, which keeps retries here too
        self._queued = ctx.pending.queued  # pending rows on the sender loop now

    def any(self) -> bool:
        """Whether a pending send waits (read from the profile once, then kept)."""
        if self._state.any is None:
            self._state.any = self._ctx.store.repos().pending.any()
        return self._state.any

    def count(self) -> int:
        """How many messages wait for the server: kept pending, or encrypted and in the
        outbox with no answer yet (a connection lost before it came)."""
        repos = self._ctx.store.repos()
        return (repos.pending.count() if self.any() else 0) + repos.outbox.unsent_messages()

    def keep(self, name: str, item: Outgoing) -> Message:
        """Keep the text ``item`` to the known conversation ``name`` until the server can
        be reached: its history row and pending row, in one unit. Returns its message,
        ``"sending"``."""
        content = item.content
        assert isinstance(content, TextContent) and item.attachment is None
        peer = self._conversations.resolve(name)[0]
        row = OutgoingRow(
            content.message_id, peer, content.text, content.sent_at, self._ctx.now_ms(),
            self._ctx.account_id, _expires(content), None, None,
        )  # fmt: skip
        with self._ctx.store.unit() as repos:
            repos.messages.add_outgoing([row])
            repos.pending.add(content.message_id, item.peer, item.group, content)
        self._state.any = True
        return self.queued(name, content)

    def queued(self, name: str, content: TextContent) -> Message:
        """The message ``content`` to ``name`` as stored and not yet sent."""
        _, display, group = self._conversations.resolve(name)
        return Message(
            content.message_id, display, True, content.text, content.sent_at,
            content.sent_at, MessageStatus.QUEUED.value, group, self._ctx.username, None,
            _expires(content),
        )  # fmt: skip

    async def send_all(self) -> int:
        """Send what an outage or a crash left: the outbox, then the pending sends (see
        the module docstring). Returns how many went; raises :class:`ServerUnavailable`
        when the server could not be reached (what did not go stays, in order)."""
        done = await self._flush_outbox()
        return done + await self.flush()

    async def flush(self) -> int:
        """Encrypt and send the pending sends, oldest first, and wait for the server's
        answers; returns how many were sent."""
        if not self.any():
            return 0
        self._fail_unreadable()
        queued = self._queued
        sends = [s for s in self._ctx.store.repos().pending.all() if s.pending_id not in queued]
        items: list[tuple[PendingSend, Outgoing]] = []
        for s in sends:
            item = Outgoing(
                s.peer, s.content, future(), store=True, group=s.group, transcript=True,
                pending=s.pending_id,
            )  # fmt: skip
            self._queued.add(s.pending_id)
            items.append((s, item))
        try:
            for _, item in items:
                await self._put(item)
            results = await asyncio.gather(*(i.future for _, i in items), return_exceptions=True)
        finally:
            self._queued.difference_update(s.pending_id for s, _ in items)
            self._state.any = None
        unreachable: ServerUnavailable | None = None
        done = 0
        for (s, _), result in zip(items, results, strict=True):
            if not isinstance(result, BaseException):
                done += 1
            elif isinstance(result, ServerUnavailable):
                unreachable = result  # it stays: pending, or in the outbox if committed
            elif _for_good(result):
                self._fail(s.pending_id, s.message_id, s.peer, s.group, result)
            else:
                log.warning("a pending send waits: %s", type(result).__name__)
        if unreachable is not None:
            raise unreachable
        return done

    def _fail_unreadable(self) -> None:
        """A pending send whose content no longer decodes can never go: it becomes
        ``FAILED`` (with a :class:`SendFailed` event) rather than hold up the others."""
        for pending_id, message_id, peer, group in self._ctx.store.repos().pending.unreadable():
            log.warning("a pending send could not be read: marked failed")
            error = ClientError("the message kept to send could not be read")
            self._fail(pending_id, message_id, peer, group, error)

    def _fail(
        self,
        pending_id: int,
        message_id: bytes,
        peer: str,
        group: bytes | None,
        error: BaseException,
    ) -> None:
        """A pending send refused for good, said by a :class:`SendFailed` event: refused
        before it was encrypted, it becomes ``FAILED`` here; refused by the server once
        sent, the settle path made it ``FAILED`` already."""
        with self._ctx.store.unit() as repos:
            if repos.pending.remove([pending_id]):
                repos.messages.mark_outgoing([message_id], MessageStatus.FAILED)
        self._state.any = None
        if group is not None:
            peer = self._group_name(group) or group.hex()[:12]
        reason = str(error) or type(error).__name__
        self._ctx.events.emit(SendFailed(peer, group, message_id, reason))


def _expires(content: TextContent) -> int | None:
    """When a text sent now disappears (ms; None: never)."""
    return content.sent_at + content.expire_timer * 1000 if content.expire_timer else None


def _for_good(error: BaseException) -> bool:
    """Whether a pending send that failed with ``error`` will never go (else it waits for
    the next connection: the server busy, or a group update to catch up on first)."""
    if isinstance(error, ServerError):
        return error.status < 500 and error.code != "rate_limited"
    if isinstance(error, GroupOutOfDate):
        return False
    return isinstance(error, ClientError | ProtocolError)
