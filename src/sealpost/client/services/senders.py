"""Whom a message is from, and the names a conversation shows: the part of opening a
message that pairwise and group receiving share (:mod:`.opening`, :mod:`.group_receive`).

Trust: a sender certificate proves nothing by itself (the server signs them for anything).
A device or account key not pinned for a known contact is accepted only if the contact's
directory entry, checked against the key-transparency log, holds exactly it; else the
message is dropped with a ``directory_mismatch`` alarm (raised once the batch commits,
kept though the message is dropped). A sender not known at all must name itself (or be
named by a group this account is in), and the directory must give that name this
account and key. The directory entries come from the batch's
:class:`~sealpost.client.inbox.Prefetched` (fetched before the locked phase); one not
fetched yet raises :class:`~sealpost.client.inbox.Missing`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import NoReturn

from sealpost.client.context import ClientContext
from sealpost.client.errors import TransparencyFailure, UnknownContact
from sealpost.client.inbox import DropMessage
from sealpost.client.rows import BatchState, ContactRow, GroupRow
from sealpost.client.services import absorb
from sealpost.client.services.absorb import Conversational
from sealpost.protocol.content import GROUP_ID_LEN, decode_content
from sealpost.protocol.wire import DeviceCertificate

__all__ = ["Senders"]


class Senders:
    """Senders placed and conversations named, for one receive batch at a time."""

    def __init__(
        self,
        ctx: ClientContext,
        *,
        contact_by_id: Callable[[bytes], ContactRow | None],
        contact_by_name: Callable[[str], ContactRow | None],
        group: Callable[[bytes, BatchState], GroupRow | None],
        member_name: Callable[[bytes, BatchState], str | None],
    ) -> None:
        self._ctx = ctx
        self._contact_by_id = contact_by_id
        self._contact_by_name = contact_by_name
        self._group = group
        self._member_name = member_name

    def for_new_session(
        self,
        contact: ContactRow | None,
        account_id: bytes,
        certificate: DeviceCertificate,
        plaintext: bytes,
        state: BatchState,
    ) -> ContactRow:
        """The contact a new session (a first message from ``account_id``'s device
        ``certificate``) is with, ``contact`` if it is known (see the module docstring);
        the contact's devices become the logged set."""
        account_key = certificate.account_key
        if contact is not None:
            pinned_key = state.key_changes.get(account_id, contact.account_key)
            pinned = state.device_certs.get(account_id, contact.devices)
            if pinned_key == account_key and _same(pinned.get(certificate.device_id), certificate):
                return contact
            devices = self._confirm_in_log(contact.username, account_id, certificate, state)
            if contact.account_key != account_key:
                state.key_changes[account_id] = account_key
            state.device_certs[account_id] = devices
            return contact
        # A sender we do not know: its claimed name must be its name in the directory.
        # A fellow group member (a receipt for a group message, say) is named by the group.
        claimed = getattr(decode_content(plaintext), "sender_name", None)
        if not isinstance(claimed, str):
            claimed = self._member_name(account_id, state)
        if claimed is None:
            raise DropMessage("a first message that does not say who sends it")
        return self.new_contact_now(claimed, account_id, account_key, state, certificate)

    def _confirm_in_log(
        self, username: str, account_id: bytes, certificate: DeviceCertificate, state: BatchState
    ) -> dict[int, DeviceCertificate]:
        """The devices the log holds for ``username``, if they include ``certificate``
        under the account key it names; else a ``directory_mismatch`` alarm and
        :class:`TransparencyFailure` (the message is dropped)."""
        try:
            real_id, _, real_key, devices = state.fetched.lookup(username)
        except UnknownContact:
            _log_refuses(username, "a message", state)
        if (
            real_id != account_id
            or real_key != certificate.account_key
            or not _same(devices.get(certificate.device_id), certificate)
        ):
            _log_refuses(username, "a message", state)
        return devices

    async def new_contact(
        self,
        name: str,
        account_id: bytes,
        account_key: bytes | None,
        state: BatchState,
        certificate: DeviceCertificate | None = None,
    ) -> ContactRow:
        """:meth:`new_contact_now` for callers that await (the group receiver)."""
        return self.new_contact_now(name, account_id, account_key, state, certificate)

    def new_contact_now(
        self,
        name: str,
        account_id: bytes,
        account_key: bytes | None,
        state: BatchState,
        certificate: DeviceCertificate | None = None,
    ) -> ContactRow:
        """A contact first seen in a message: ``name`` must be that account's name in the
        directory (and its key ``account_key``, when the message showed one)."""
        known = state.new_contacts.get(account_id) or self._contact_by_id(account_id)
        if known is not None:
            return known
        try:
            real_id, username, real_key, devices = state.fetched.lookup(name)
        except UnknownContact:
            raise DropMessage("a sender whose claimed name is no account") from None
        if real_id != account_id or (account_key is not None and real_key != account_key):
            raise DropMessage("a sender whose claimed name is another account's")
        if certificate is not None and not _same(devices.get(certificate.device_id), certificate):
            _log_refuses(username, "a first message", state)
        if self._contact_by_name(username) is not None:
            # a contact we know by this name, now another account: a key change
            try:
                return state.fetched.refresh(username)
            except UnknownContact:
                raise DropMessage("a sender whose name no longer answers") from None
        row = ContactRow(account_id, username, real_key, False, False, None, devices)
        state.new_contacts[account_id] = row
        return row

    def conversation(
        self,
        content: Conversational,
        peer: bytes,
        author: bytes,
        outgoing: bool,
        state: BatchState,
    ) -> None:
        """A text, timer or deletion in ``peer``'s conversation, with the names to show
        (:func:`.absorb.conversation`)."""
        display = self._name(peer, state)
        absorb.conversation(
            content,
            peer=peer,
            author=author,
            outgoing=outgoing,
            display=display,
            author_name=self._name(author, state) if author != peer else display,
            now_ms=self._ctx.now_ms(),
            state=state,
        )

    def _name(self, peer: bytes, state: BatchState) -> str:
        if len(peer) == GROUP_ID_LEN:
            group = self._group(peer, state)  # new in this batch, too
            return group.info.name if group is not None else peer.hex()[:12]
        if peer == self._ctx.account_id:
            return self._ctx.username
        row = state.new_contacts.get(peer) or self._contact_by_id(peer)
        return row.username if row is not None else peer.hex()[:12]


def _same(held: DeviceCertificate | None, cert: DeviceCertificate) -> bool:
    return held is not None and hmac.compare_digest(held.encode(), cert.encode())


def _log_refuses(username: str, what: str, state: BatchState) -> NoReturn:
    """A device or key the log does not hold: an alarm (raised once the batch commits, kept
    though the message is dropped) and :class:`TransparencyFailure`."""
    detail = (
        f"{what} from {username} came from a device or identity key that the log does "
        f"not hold for {username}; it was dropped"
    )
    state.alarms.append(("directory_mismatch", username, detail))
    raise TransparencyFailure("directory_mismatch", detail)
