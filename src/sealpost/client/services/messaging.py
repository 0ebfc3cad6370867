"""What the user sends in a conversation: a text (with a file), a timer, a deletion for
everyone. Each becomes one content, stamped with this device's clock and randomness and
this account's delivery token and name, and goes on the send pipeline's queue
(:mod:`.sending`) as an :class:`~sealpost.client.rows.Outgoing`, with a transcript to this
account's other devices; what it changes here (the timer stored, the messages deleted) is
written in a unit of work once the server has it.

A name that no conversation has yet is a contact to look up: a text to it is resolved by
the sender loop (so that sends stay in call order), a timer for it resolves it first. A
``#name`` always addresses a group, so an unknown one is :class:`UnknownGroup`.

Example::

    message = await messaging.send("bob", "hello")         # once the server has stored it
    await messaging.set_timer("bob", 3600)                # later messages disappear
    await messaging.delete_for_everyone("bob", message.id)
"""

from __future__ import annotations

from pathlib import Path

from sealpost.client.context import ClientContext
from sealpost.client.errors import (
    MAX_SEND_TEXT,
    ClientError,
    MessageTooLarge,
    ServerUnavailable,
    UnknownContact,
)
from sealpost.client.futures import future
from sealpost.client.records import Message
from sealpost.client.rows import AttachmentRow, Outgoing
from sealpost.client.services.attachments import Attachments, Progress
from sealpost.client.services.conversations import Conversations
from sealpost.client.services.directory import Directory
from sealpost.client.services.pending import PendingSends
from sealpost.client.services.sending import Sending
from sealpost.protocol.content import MAX_TIMER, DeleteContent, TextContent, TimerContent

__all__ = ["Messaging"]


class Messaging:
    """Texts, timers and deletions for everyone, from the user to the send queue."""

    def __init__(
        self,
        ctx: ClientContext,
        conversations: Conversations,
        directory: Directory,
        attachments: Attachments,
        sending: Sending,
        pending: PendingSends,
    ) -> None:
        self._ctx = ctx
        self._conversations = conversations
        self._directory = directory
        self._attachments = attachments
        self._sending = sending
        self._pending = pending

    def _known(self, name: str) -> tuple[bytes | None, bytes | None]:
        """``(peer key, group id)`` of a known conversation; ``(None, None)`` for a name
        to look up as a new contact."""
        try:
            peer, _, group = self._conversations.resolve(name)
        except UnknownContact:  # a #name this account has no group of is UnknownGroup
            return None, None
        return peer, group

    def _stamp(self) -> tuple[bytes, int, bytes, str]:
        """A new message id, the time (ms), this account's delivery token and name."""
        ctx = self._ctx
        return ctx.rng(16), ctx.now_ms(), ctx.delivery_token, ctx.username

    async def send(
        self,
        name: str,
        text: str = "",
        *,
        file: Path | str | None = None,
        progress: Progress | None = None,
        queue_offline: bool = False,
    ) -> Message:
        """A text (and ``file``, uploaded first) to a conversation, once the server has it.

        ``queue_offline``: a text without a file to a known conversation that cannot
        reach the server is kept in the profile and sent once it can be
        (:mod:`.pending`); it returns at once, ``"sending"``. Without it, such a send
        raises :class:`ServerUnavailable` and nothing is stored."""
        size = len(text.encode("utf-8"))
        if size > MAX_SEND_TEXT:
            raise MessageTooLarge(size, MAX_SEND_TEXT)
        peer, group = self._known(name)
        attachment = None
        if file is not None:
            attachment = await self._attachments.upload(Path(file), progress)
        content = TextContent(
            *self._stamp(),
            text,
            group,
            None if attachment is None else attachment.pointer,
            0 if peer is None else self._conversations.timer_of(peer),
        )
        item = _outgoing(name, content, group, store=True, attachment=attachment)
        keep = queue_offline and peer is not None and attachment is None
        try:
            if self._pending.any():  # written earlier and not sent yet: those go first
                await self._pending.flush()
            message = await self._sending.enqueue(item)
        except ServerUnavailable:
            if not keep:
                raise
            assert peer is not None
            if self._ctx.store.repos().messages.is_outgoing(content.message_id, peer):
                return self._pending.queued(name, content)  # committed: in the outbox
            return self._pending.keep(name, item)
        assert message is not None
        return message

    async def set_timer(self, name: str, seconds: int) -> None:
        """A conversation's disappearing-message timer, for every device of every member."""
        if not 0 <= seconds <= MAX_TIMER:
            raise ValueError(f"a timer is 0 to {MAX_TIMER} seconds")
        peer, group = self._known(name)
        if peer is None:
            peer = (await self._directory.resolve(name)).account_id
        content = TimerContent(*self._stamp(), seconds, group)
        await self._sending.enqueue(_outgoing(name, content, group))
        with self._ctx.store.unit() as repos:
            repos.messages.set_timer(peer, seconds)
        self._conversations.timers_changed()

    async def delete_for_everyone(self, name: str, message_id: bytes) -> None:
        """Delete a message this account sent, here and on every recipient's devices."""
        peer, _, group = self._conversations.resolve(name)
        if not self._ctx.store.repos().messages.is_outgoing(message_id, peer):
            raise ClientError("only a message this account sent can be deleted for everyone")
        content = DeleteContent(*self._stamp(), message_id, group)
        await self._sending.enqueue(_outgoing(name, content, group))
        with self._ctx.store.unit() as repos:
            repos.messages.delete([message_id], peer)


def _outgoing(
    name: str,
    content: TextContent | TimerContent | DeleteContent,
    group: bytes | None,
    *,
    store: bool = False,
    attachment: AttachmentRow | None = None,
) -> Outgoing:
    """A send to the conversation ``name`` (a history row if ``store``), with its
    transcript to this account's other devices."""
    return Outgoing(
        "" if group else name.lower(),
        content,
        future(),
        store=store,
        group=group,
        transcript=True,
        attachment=attachment,
    )
