"""Conversations, their history and their disappearing-message timers.

A conversation is named as the user names it: ``#name`` is a group; a plain name is a
contact if one has it, else a group of that name. In the store it is keyed by its peer (a
contact's account id or a group's id). The history of a conversation is what the store
keeps of it, oldest first, each message with its author's name; a message whose
disappearing-message timer ran out becomes a placeholder (its text, file and index entry
deleted: :mod:`sealpost.client.store.messages`) the next time history is read, and is
left out meanwhile (and on a read-only profile, where nothing can be changed), as is a
message deleted for everyone; :meth:`Conversations.page` shows both placeholders, the
history leaves them out. Timers are read once and cached until one changes.

A long conversation is read a page at a time (:meth:`Conversations.page`: keyset pages
on the store's ``(peer, id)`` index, so the cost of a page does not grow with the
conversation), and the conversation list (:meth:`Conversations.overview`) is one store
query for every conversation's newest message and unread count, not a read of history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sealpost._errors import ProtocolError
from sealpost.client import saved_files
from sealpost.client.context import ClientContext
from sealpost.client.errors import UnknownContact, UnknownGroup
from sealpost.client.records import AttachmentInfo, GroupView, Message
from sealpost.client.services.directory import Directory
from sealpost.client.store.messages import StoredMessage
from sealpost.protocol.attachment import AttachmentPointer

__all__ = ["UNREAD_CAP", "ConversationSummary", "Conversations", "attachment_info"]

#: Unread messages are counted among a conversation's newest this many (a list shows
#: ``99+`` beyond): the count reads that many index entries, whatever the history's size.
UNREAD_CAP = 100


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One line of the conversation list: ``address`` names it as the CLI does (``bob``,
    ``#crew`` for a group), ``last`` is its newest message (None: none yet) and
    ``unread`` how many of its newest :data:`UNREAD_CAP` are incoming and arrived after
    the read mark given."""

    address: str
    title: str  # the contact's or the group's name
    is_group: bool
    last: Message | None
    unread: int

    @property
    def last_at(self) -> int:
        return 0 if self.last is None else self.last.received_at


def attachment_info(pointer: bytes | None, path: str | None) -> AttachmentInfo | None:
    """What a stored attachment pointer says about its file (None: none, or unreadable)."""
    if pointer is None:
        return None
    try:
        decoded = AttachmentPointer.decode(bytes(pointer))
    except ProtocolError:
        return None
    return AttachmentInfo(
        decoded.filename, decoded.size, decoded.content_type, saved_files.saved_path(path)
    )


class Conversations:
    """Names to conversations, history, expiry and timers (contacts by name through the
    directory, groups by name through the groups repository)."""

    def __init__(self, ctx: ClientContext, directory: Directory) -> None:
        self._ctx = ctx
        self._directory = directory
        self._timers: dict[bytes, int] | None = None

    def resolve(self, name: str) -> tuple[bytes, str, bytes | None]:
        """``(peer key, display name, group id)`` of a known conversation (see the module
        docstring); :class:`UnknownGroup` for a ``#name`` this account is in no group of,
        :class:`UnknownContact` for any other name it has no conversation with."""
        if not name.startswith("#"):
            contact = self._directory.by_name(name)
            if contact is not None:
                return contact.account_id, contact.username, None
        groups = self._ctx.store.repos().groups
        group_id = groups.find(name.removeprefix("#"))
        group = None if group_id is None else groups.get(group_id)
        if group is not None:
            return group.info.group_id, group.info.name, group.info.group_id
        raise UnknownGroup(name) if name.startswith("#") else UnknownContact(name)

    def is_group(self, name: str) -> bool:
        """Whether ``name`` addresses a group."""
        try:
            return self.resolve(name)[2] is not None
        except (UnknownContact, UnknownGroup):
            return False

    def name_of(self, account_id: bytes) -> str:
        """An account's username as this device knows it (a short hex id if unknown)."""
        if account_id == self._ctx.account_id:
            return self._ctx.username
        contact = self._directory.by_id(account_id)
        return contact.username if contact is not None else account_id.hex()[:12]

    # -- timers

    def timer_of(self, peer: bytes) -> int:
        """The timer of the conversation keyed ``peer``, in seconds (0: off)."""
        if self._timers is None:
            self._timers = self._ctx.store.repos().messages.timers()
        return self._timers.get(peer, 0)

    def timer(self, name: str) -> int:
        """The disappearing-message timer of a conversation, in seconds (0: off)."""
        peer, _, _ = self.resolve(name)
        return self.timer_of(peer)

    def timers_changed(self) -> None:
        """A timer was written: read them again when next needed."""
        self._timers = None

    # -- history

    def history(self, name: str, limit: int = 1000) -> list[Message]:
        """The last ``limit`` messages of a conversation (a contact or a group), oldest
        first; expired disappearing messages and messages deleted for everyone are gone."""
        self.expire()
        peer, display, group = self.resolve(name)
        rows = self._ctx.store.repos().messages.history(peer, self._ctx.now_ms(), limit)
        return [self._message(m, peer, display, group) for m in rows]

    def page(
        self,
        name: str,
        *,
        before: bytes | None = None,
        after: bytes | None = None,
        limit: int = 50,
    ) -> list[Message]:
        """A page of a conversation, oldest first: the ``limit`` messages before the
        message ``before`` (the newest when no cursor is given), or after ``after``,
        with the placeholders of messages deleted for everyone or expired
        (:attr:`Message.gone`), which :meth:`history` leaves out."""
        self.expire()
        peer, display, group = self.resolve(name)
        rows = self._ctx.store.repos().messages.page(
            peer, self._ctx.now_ms(), limit, before=before, after=after
        )
        return [self._message(m, peer, display, group) for m in rows]

    def overview(
        self, groups: Sequence[GroupView], read: Mapping[str, int]
    ) -> list[ConversationSummary]:
        """Every contact and every group this account is in, most recent first (then by
        name), with its newest message and unread count; ``read`` maps an address to the
        ``received_at`` of the newest message the user has read there."""
        self.expire()
        own = self._ctx.account_id
        entries: list[tuple[bytes, str, str, bytes | None]] = [
            (c.account_id, c.username, c.username, None)
            for c in self._directory.cache().values()
            if c.account_id != own
        ]
        entries += [(g.group_id, "#" + g.name, g.name, g.group_id) for g in groups if g.member]
        found = self._ctx.store.repos().messages.overview(
            [(peer, read.get(address, 0)) for peer, address, _, _ in entries],
            self._ctx.now_ms(),
            UNREAD_CAP,
        )
        out = []
        for peer, address, title, group in entries:
            last, unread = found.get(peer, (None, 0))
            message = None if last is None else self._message(last, peer, title, group)
            out.append(ConversationSummary(address, title, group is not None, message, unread))
        out.sort(key=lambda s: (-s.last_at, s.title))
        return out

    def _message(self, m: StoredMessage, peer: bytes, display: str, group: bytes | None) -> Message:
        own = self._ctx.account_id
        author = m.author if m.author is not None else (own if m.outgoing else peer)
        return Message(
            m.message_id,
            display,
            m.outgoing,
            m.body,
            m.sent_at,
            m.received_at,
            m.status,
            group,
            self.name_of(author),
            attachment_info(m.attachment, m.attachment_path),
            m.expires_at,
            m.gone,
        )

    def expire(self) -> int:
        """The disappearing messages whose time is up become placeholders (their text
        and the files saved from their attachments deleted). Returns how many went."""
        store = self._ctx.store
        now_ms = self._ctx.now_ms()
        if store.read_only or not store.repos().messages.any_expired(now_ms):
            return 0  # a read-only profile: history() leaves them out instead
        with store.unit() as repos:
            return repos.messages.expire(now_ms)
