"""Absorbing an opened message is pure (client/services/absorb.py): content in, changes to
the batch state out, with no store, network or clock."""

from __future__ import annotations

import pytest

from sealpost.client.records import (
    DeviceLinked,
    DeviceRemoved,
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
    OwnDeviceLinked,
    OwnDeviceRemoved,
    TimerSet,
)
from sealpost.client.services import absorb
from sealpost.protocol import AccountIdentity, DeviceKeys
from sealpost.protocol.content import (
    DEVICE_LINKED,
    DEVICE_REMOVED,
    DeleteContent,
    DeviceNotice,
    GroupStateRequest,
    ReceiptContent,
    RevocationNotice,
    SentTranscript,
    TextContent,
    TimerContent,
)
from sealpost.protocol.errors import InvalidMessage
from sealpost.protocol.keys import sign_revocation
from support import NOW, SeededRng

NOW_MS = NOW * 1000
TOKEN = b"t" * 32
RNG = SeededRng("absorb")
ACCOUNT = AccountIdentity.generate(RNG)
DEVICES = {d: DeviceKeys.generate(ACCOUNT, d, now=NOW, rng=RNG).certificate for d in (1, 2)}


def _alice() -> ContactRow:
    key = ACCOUNT.public_key().public_bytes_raw()
    return ContactRow(ACCOUNT.account_id, "alice", key, False, False, None, dict(DEVICES))


def _text(message_id: bytes = b"m" * 16, **kwargs: object) -> TextContent:
    return TextContent(message_id, NOW_MS - 5, TOKEN, "alice", "hello", **kwargs)  # type: ignore[arg-type]


def test_a_text_is_a_message_an_event_a_receipt_due_and_the_token() -> None:
    state = BatchState()
    assert absorb.pairwise(_text(expire_timer=60), _alice(), now_ms=NOW_MS, state=state)
    (event,) = state.events
    assert isinstance(event, MessageReceived)
    assert (event.message.peer, event.message.text, event.message.status) == (
        "alice",
        "hello",
        "received",
    )
    assert event.message.expires_at == NOW_MS + 60_000
    (stored,) = state.messages
    assert (stored.peer, stored.author, stored.outgoing) == (ACCOUNT.account_id,) * 2 + (False,)
    assert state.reply_to == {ACCOUNT.account_id: [b"m" * 16]}
    assert state.tokens == {ACCOUNT.account_id: TOKEN}


def test_a_message_id_twice_in_a_batch_is_absorbed_once() -> None:
    state = BatchState()
    for _ in range(2):
        absorb.pairwise(_text(), _alice(), now_ms=NOW_MS, state=state)
    assert len(state.messages) == 1
    assert len(state.events) == 1


def test_timer_and_deletion_are_changes_with_their_notices() -> None:
    state = BatchState()
    alice = _alice()
    absorb.pairwise(
        TimerContent(b"a" * 16, NOW_MS, TOKEN, "alice", 3600), alice, now_ms=NOW_MS, state=state
    )
    absorb.pairwise(
        DeleteContent(b"b" * 16, NOW_MS, TOKEN, "alice", b"x" * 16),
        alice,
        now_ms=NOW_MS,
        state=state,
    )
    peer = ACCOUNT.account_id
    assert state.changes == [TimerSet(peer, 3600), DeletedForEveryone(b"x" * 16, peer, peer)]
    assert [type(e) for e in state.events] == [TimerChanged, MessageDeleted]
    assert state.messages == []


def test_a_receipt_is_kept_for_the_commit_and_reported() -> None:
    state = BatchState()
    receipt = ReceiptContent(NOW_MS, TOKEN, (b"1" * 16, b"2" * 16))
    absorb.pairwise(receipt, _alice(), now_ms=NOW_MS, state=state)
    assert state.receipts == [(ACCOUNT.account_id, receipt)]
    assert state.events == [ReceiptReceived("alice", (b"1" * 16, b"2" * 16))]


@pytest.mark.parametrize(
    "content",
    [
        _text(group_id=b"g" * 32),  # a group message arrives sender-key encrypted only
        SentTranscript(NOW_MS, b"\x01", b"a" * 16, "bob"),  # only from this account
        DeviceNotice(NOW_MS, DEVICE_LINKED, 3, "phone"),  # only from this account
    ],
)
def test_what_a_contact_may_not_send_pairwise_is_refused_and_changes_nothing(
    content: object,
) -> None:
    state = BatchState()
    with pytest.raises(InvalidMessage):
        absorb.pairwise(content, _alice(), now_ms=NOW_MS, state=state)  # type: ignore[arg-type]
    assert (state.events, state.messages, state.changes) == ([], [], [])


def test_group_contents_are_left_to_the_group_receiver() -> None:
    state = BatchState()
    request = GroupStateRequest(NOW_MS, TOKEN, "alice", b"g" * 32, 1)
    assert absorb.pairwise(request, _alice(), now_ms=NOW_MS, state=state) is False
    assert (state.events, state.changes) == ([], [])


def test_a_revocation_signed_by_the_pinned_key_drops_the_device() -> None:
    state = BatchState()
    alice = _alice()
    raw = sign_revocation(ACCOUNT, 2, revoked_at=NOW).encode()
    absorb.pairwise(RevocationNotice(NOW_MS, raw), alice, now_ms=NOW_MS, state=state)
    assert state.changes == [DeviceRevoked(ACCOUNT.account_id, 2, raw)]
    assert set(state.device_certs[ACCOUNT.account_id]) == {1}
    assert set(alice.devices) == {1}


def test_a_revocation_signed_by_another_key_is_ignored() -> None:
    state = BatchState()
    other = AccountIdentity.generate(RNG)
    raw = sign_revocation(other, 2, revoked_at=NOW).encode()
    absorb.pairwise(RevocationNotice(NOW_MS, raw), _alice(), now_ms=NOW_MS, state=state)
    assert state.changes == []
    assert state.device_certs == {}


def test_device_notices_of_this_account() -> None:
    state = BatchState()
    absorb.device_notice(DeviceNotice(NOW_MS, DEVICE_LINKED, 3, "phone"), state)
    absorb.device_notice(DeviceNotice(NOW_MS, DEVICE_REMOVED, 3, "phone"), state)
    assert state.changes == [OwnDeviceLinked(3, "phone"), OwnDeviceRemoved(3)]
    assert state.events == [DeviceLinked(3, "phone"), DeviceRemoved(3, "phone")]


def test_an_outgoing_copy_is_stored_without_an_event() -> None:
    state = BatchState()
    absorb.conversation(
        _text(),
        peer=b"p" * 16,
        author=b"me" * 8,
        outgoing=True,
        display="bob",
        author_name="me",
        now_ms=NOW_MS,
        state=state,
    )
    assert state.events == []
    (stored,) = state.messages
    assert stored.outgoing and stored.peer == b"p" * 16
