"""Conversations, their history and their disappearing-message timers.

A conversation is named as the user names it: ``#name`` is a group; a plain name is a
contact if one has it, else a group of that name. In the store it is keyed by its peer (a
contact's account id or a group's id). The history of a conversation is what the store
keeps of it, oldest first, each message with its author's name; a message whose
disappearing-message timer ran out is deleted (with the file saved from its attachment)
the next time history is read, and left out meanwhile (and on a read-only profile, where
nothing can be deleted). Timers are read once and cached until one changes.
"""

from __future__ import annotations

from collections.abc import Callable

from sealpost._errors import ProtocolError
from sealpost.client import saved_files
from sealpost.client.context import ClientContext
from sealpost.client.errors import UnknownContact
from sealpost.client.records import AttachmentInfo, Message
from sealpost.client.rows import GroupRow
from sealpost.client.services.directory import Directory
from sealpost.protocol.attachment import AttachmentPointer

__all__ = ["Conversations", "attachment_info"]


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
    """Names to conversations, history, expiry and timers. ``group_by_name`` finds a
    group this device knows by its name (the groups service's)."""

    def __init__(
        self,
        ctx: ClientContext,
        directory: Directory,
        *,
        group_by_name: Callable[[str], GroupRow | None],
    ) -> None:
        self._ctx = ctx
        self._directory = directory
        self._group_by_name = group_by_name
        self._timers: dict[bytes, int] | None = None

    def resolve(self, name: str) -> tuple[bytes, str, bytes | None]:
        """``(peer key, display name, group id)`` of a known conversation (see the module
        docstring), or :class:`UnknownContact`."""
        if not name.startswith("#"):
            contact = self._directory.by_name(name)
            if contact is not None:
                return contact.account_id, contact.username, None
        group = self._group_by_name(name.removeprefix("#"))
        if group is not None:
            return group.info.group_id, group.info.name, group.info.group_id
        raise UnknownContact(name)

    def is_group(self, name: str) -> bool:
        """Whether ``name`` addresses a group."""
        try:
            return self.resolve(name)[2] is not None
        except UnknownContact:
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
        first; expired disappearing messages are gone."""
        self.expire()
        peer, display, group = self.resolve(name)
        own = self._ctx.account_id
        out = []
        for m in self._ctx.store.repos().messages.history(peer, self._ctx.now_ms(), limit):
            author = m.author if m.author is not None else (own if m.outgoing else peer)
            out.append(
                Message(
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
                )
            )
        return out

    def expire(self) -> int:
        """Delete the disappearing messages whose time is up (and the files saved from
        their attachments). Returns how many went."""
        store = self._ctx.store
        now_ms = self._ctx.now_ms()
        if store.read_only or not store.repos().messages.any_expired(now_ms):
            return 0  # a read-only profile: history() leaves them out instead
        with store.unit() as repos:
            return repos.messages.expire(now_ms)
