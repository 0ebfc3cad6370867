"""Absorbing a message: what an opened content changes, as data in the batch state.

Pure: no network, no store, no clock. Each function takes the content, the facts the
caller has resolved (who sent it, the names to show, the time) and the batch's
:class:`~sealpost.client.rows.BatchState`, and records there what the content changes:
events to report, messages to store, receipts to apply, delivery tokens, and the other
changes as :data:`~sealpost.client.rows.Change` records (a timer set, a deletion for
everyone, this account's device list, a contact's revoked device). The receive pipeline
commits all of it at once (:mod:`sealpost.client.services.batch_commit`); a message that
raises leaves the state to be put back (:class:`~sealpost.client.inbox.BatchMark`).

Group contents (updates, state requests, sender keys) are the group receiver's
(:mod:`sealpost.client.services.group_receive`): :func:`pairwise` leaves them to the
caller and says so.

Example::

    state = BatchState()
    absorb.pairwise(TextContent(...), contact, now_ms=now_ms, state=state)
    assert isinstance(state.events[-1], MessageReceived)
"""

from __future__ import annotations

import logging

from sealpost.client.records import (
    DeviceLinked,
    DeviceRemoved,
    Message,
    MessageDeleted,
    MessageReceived,
    ReceiptReceived,
    TimerChanged,
)
from sealpost.client.rows import (
    BatchState,
    ContactRow,
    DeletedForEveryone,
    DeviceRevoked,
    Incoming,
    OwnDeviceLinked,
    OwnDeviceRemoved,
    TimerSet,
)
from sealpost.client.services.conversations import attachment_info
from sealpost.client.status import MessageStatus
from sealpost.protocol.content import (
    DEVICE_LINKED,
    GROUP_ID_LEN,
    Content,
    DeleteContent,
    DeviceNotice,
    GroupStateRequest,
    GroupUpdateContent,
    ReceiptContent,
    RevocationNotice,
    SenderKeyContent,
    TextContent,
    TimerContent,
)
from sealpost.protocol.errors import InvalidMessage, ProtocolError
from sealpost.protocol.keys import verify_revocation
from sealpost.protocol.wire import DeviceRevocation

__all__ = ["GROUP_CONTENT", "Conversational", "conversation", "device_notice", "pairwise"]

log = logging.getLogger("sealpost.client")

#: What a conversation holds: texts, timer changes, deletions for everyone.
Conversational = TextContent | TimerContent | DeleteContent
#: Contents the group receiver absorbs.
GROUP_CONTENT = (GroupUpdateContent, GroupStateRequest, SenderKeyContent)


def conversation(
    content: Conversational,
    *,
    peer: bytes,
    author: bytes,
    outgoing: bool,
    display: str,
    author_name: str,
    now_ms: int,
    state: BatchState,
) -> None:
    """A text, timer or deletion in the conversation ``peer`` (account or group id, shown
    as ``display``), written by ``author`` (shown as ``author_name``); ``outgoing``: this
    account wrote it (a transcript from its other device). A message id seen before in
    the batch is absorbed once."""
    if content.message_id in state.seen_ids:
        return
    state.seen_ids.add(content.message_id)
    group = peer if len(peer) == GROUP_ID_LEN else None
    if isinstance(content, TextContent):
        event = None
        if not outgoing:
            expires = now_ms + content.expire_timer * 1000 if content.expire_timer else None
            event = MessageReceived(
                Message(
                    content.message_id,
                    display,
                    False,
                    content.text,
                    content.sent_at,
                    now_ms,
                    MessageStatus.RECEIVED.value,
                    group,
                    author_name,
                    attachment_info(content.attachment, None),
                    expires,
                )
            )
        state.messages.append(
            Incoming(
                content.message_id,
                peer,
                author,
                outgoing,
                content.text,
                content.sent_at,
                content.expire_timer,
                content.attachment,
                event,
            )
        )
        if event is not None:
            state.events.append(event)
        # the text's own timer says when this message disappears; the conversation's
        # timer changes only by an explicit TimerContent, with its notice (issue 13.6)
    elif isinstance(content, TimerContent):
        state.changes.append(TimerSet(peer, content.expire_timer))
        state.events.append(TimerChanged(display, group, content.expire_timer, author_name))
    else:
        state.changes.append(DeletedForEveryone(content.target, peer, author))
        state.events.append(MessageDeleted(display, content.target, author_name))


def pairwise(content: Content, contact: ContactRow, *, now_ms: int, state: BatchState) -> bool:
    """A pairwise message from another account's device. ``False`` for a group content
    (:data:`GROUP_CONTENT`): the caller hands it to the group receiver. A content that
    comes only from this account's own devices (a transcript, a device notice) or a group
    message that arrived pairwise raises :class:`InvalidMessage`."""
    token = getattr(content, "delivery_token", None)
    if isinstance(token, bytes):
        state.tokens[contact.account_id] = token
    if isinstance(content, TextContent | TimerContent | DeleteContent):
        if content.group_id is not None:
            raise InvalidMessage()  # group messages come sender-key encrypted only
        name = contact.username
        conversation(
            content,
            peer=contact.account_id,
            author=contact.account_id,
            outgoing=False,
            display=name,
            author_name=name,
            now_ms=now_ms,
            state=state,
        )
        if isinstance(content, TextContent) and content.message_id in state.seen_ids:
            state.reply_to.setdefault(contact.account_id, []).append(content.message_id)
    elif isinstance(content, ReceiptContent):
        state.receipts.append((contact.account_id, content))
        state.events.append(ReceiptReceived(contact.username, content.message_ids))
    elif isinstance(content, RevocationNotice):
        revocation(content, contact, state)
    elif isinstance(content, GROUP_CONTENT):
        return False
    else:  # transcripts and device notices come only from this account's devices
        raise InvalidMessage()
    return True


def revocation(notice: RevocationNotice, contact: ContactRow, state: BatchState) -> None:
    """A contact's own signed revocation of one of its devices: checked against the
    account key pinned for it, the device is dropped at once and never encrypted to
    again, whatever the server lists (or replays) for the contact. One that does not
    verify is ignored."""
    try:
        revoked = DeviceRevocation.decode(notice.revocation)
        verify_revocation(revoked, expected_account_key=contact.account_key)
    except ProtocolError:
        log.warning("ignoring a revocation that does not verify")
        return
    if revoked.account_id != contact.account_id:
        log.warning("ignoring a revocation that does not verify")
        return
    account_id, device_id = contact.account_id, revoked.device_id
    devices = state.device_certs.setdefault(account_id, dict(contact.devices))
    devices.pop(device_id, None)
    contact.devices.pop(device_id, None)
    state.changes.append(DeviceRevoked(account_id, device_id, notice.revocation))
    log.info("a contact revoked one of its devices")


def device_notice(notice: DeviceNotice, state: BatchState) -> None:
    """Another device of this account linked or removed a device."""
    if notice.event == DEVICE_LINKED:
        state.events.append(DeviceLinked(notice.device_id, notice.device_name))
        state.changes.append(OwnDeviceLinked(notice.device_id, notice.device_name))
    else:
        state.events.append(DeviceRemoved(notice.device_id, notice.device_name))
        state.changes.append(OwnDeviceRemoved(notice.device_id))
