"""Sender keys, signed group state and multi-recipient sealing (sans-I/O)."""

from __future__ import annotations

import os
import random

import pytest

from sealpost._errors import (
    BadSignature,
    DecodeError,
    DuplicateMessage,
    InvalidMessage,
    TooManySkipped,
)
from sealpost.crypto.dh import DhPrivateKey
from sealpost.crypto.sign import SigningKey
from sealpost.protocol.consts import MAX_FORWARD_SKIP
from sealpost.protocol.group_sealed import (
    GROUP_SEALED_MIN,
    envelope_id,
    group_envelope_id,
    open_group,
    seal_group,
    unseal_group,
)
from sealpost.protocol.groupstate import (
    MAX_MEMBERS,
    GroupMember,
    GroupState,
    GroupStateError,
    create_group,
    verify_next,
)
from sealpost.protocol.keys import AccountIdentity, DeviceKeys
from sealpost.protocol.sealed_multi import WRAP_LEN, assemble, open_multi, seal_multi
from sealpost.protocol.senderkeys import (
    DISTRIBUTION_LEN,
    LEGACY_DISTRIBUTION_LEN,
    OwnSenderChain,
    ReceivingSenderChain,
    sender_key_header,
)
from sealpost.protocol.wire import SenderCertificate

GROUP = b"\x42" * 32
NOW = 1_800_000_000


def _pair() -> tuple[OwnSenderChain, ReceivingSenderChain]:
    own = OwnSenderChain.create(GROUP, rng=os.urandom)
    dist = own.distribution()
    assert len(dist) == DISTRIBUTION_LEN
    receiver = ReceivingSenderChain.from_distribution(dist)
    assert receiver.envelope_key == own.envelope_key
    assert receiver.envelope_id == own.envelope_id == envelope_id(own.envelope_key)
    return own, receiver


# ---------------------------------------------------------------------- sender keys


def test_messages_decrypt_in_any_order_and_only_once() -> None:
    own, receiver = _pair()
    messages = [own.encrypt(f"m{i}".encode()) for i in range(50)]
    order = list(range(50))
    random.Random(7).shuffle(order)
    for i in order:
        plaintext, receiver = receiver.decrypt(messages[i])
        assert plaintext == f"m{i}".encode()
        with pytest.raises(DuplicateMessage):
            receiver.decrypt(messages[i])
    assert sender_key_header(messages[3])[:2] == (GROUP, own.chain_id)


def test_decrypt_leaves_the_state_unchanged_and_round_trips_through_bytes() -> None:
    own, receiver = _pair()
    first, second = own.encrypt(b"a"), own.encrypt(b"b")
    _, after = receiver.decrypt(second)
    assert receiver.iteration == 0  # not mutated
    restored = ReceivingSenderChain.from_bytes(after.to_bytes())
    assert restored.decrypt(first)[0] == b"a"
    again = OwnSenderChain.from_bytes(own.to_bytes())
    assert receiver.decrypt(again.encrypt(b"c"))[0] == b"c"
    assert own.chain_key.hex() not in repr(own)


def test_forged_tampered_and_foreign_messages_are_refused() -> None:
    own, receiver = _pair()
    message = own.encrypt(b"hello")
    for at in (3, 40, 50, len(message) - 70, len(message) - 1):
        bad = bytearray(message)
        bad[at] ^= 1
        with pytest.raises((BadSignature, InvalidMessage, DecodeError)):
            receiver.decrypt(bytes(bad))
    # a member who knows the chain key cannot sign as the chain's owner
    forger = OwnSenderChain(
        GROUP, own.chain_id, own.iteration, own.chain_key, own.signing_key, own.envelope_key
    )
    forger.signing_key = OwnSenderChain.create(GROUP, rng=os.urandom).signing_key
    with pytest.raises(BadSignature):
        receiver.decrypt(forger.encrypt(b"forged"))
    other, _ = _pair()
    with pytest.raises(InvalidMessage):
        receiver.decrypt(other.encrypt(b"another chain"))
    with pytest.raises(DecodeError):
        receiver.decrypt(message[:50])


def test_skipping_is_bounded() -> None:
    own, receiver = _pair()
    for _ in range(MAX_FORWARD_SKIP + 1):
        own.encrypt(b"lost")
    with pytest.raises(TooManySkipped):
        receiver.decrypt(own.encrypt(b"too far"))


def test_rotation_locks_out_a_removed_member_and_a_late_joiner_sees_nothing_old() -> None:
    own, removed = _pair()
    removed_plain, removed = removed.decrypt(own.encrypt(b"before removal"))
    assert removed_plain == b"before removal"
    rotated = OwnSenderChain.create(GROUP, rng=os.urandom)  # after the removal
    after = rotated.encrypt(b"after removal")
    with pytest.raises(InvalidMessage):
        removed.decrypt(after)  # keeps its old chain and tries
    old = rotated.encrypt(b"before the join")
    late = ReceivingSenderChain.from_distribution(rotated.distribution())
    with pytest.raises(DuplicateMessage):
        late.decrypt(old)
    assert late.decrypt(rotated.encrypt(b"after the join"))[0] == b"after the join"


# ---------------------------------------------------------------------- group state


def _account(name: str) -> tuple[AccountIdentity, GroupMember]:
    account = AccountIdentity.generate(os.urandom)
    return account, GroupMember(account.account_id, account.public_key().public_bytes_raw(), name)


def test_group_state_rules() -> None:
    alice, a = _account("alice")
    bob, b = _account("bob")
    _, c = _account("carol")
    v1 = create_group(alice, a, "friends", (b,), os.urandom)
    assert GroupState.decode(v1.encode()) == v1
    assert verify_next(None, v1) == v1
    v2 = v1.next(add=(c,)).signed_by(alice)
    assert verify_next(v1, v2).version == 2
    # a member who is not an admin cannot add or rename
    with pytest.raises(GroupStateError):
        verify_next(v2, v2.next(name="mine").signed_by(bob))
    # but may leave
    left = v2.next(remove=frozenset({b.account_id})).signed_by(bob)
    assert {m.username for m in verify_next(v2, left).members} == {"alice", "carol"}
    # a leaver may not also remove someone else
    with pytest.raises(GroupStateError):
        verify_next(v2, v2.next(remove=frozenset({b.account_id, c.account_id})).signed_by(bob))
    # versions must follow; signatures must be the signer's key as listed before
    with pytest.raises(GroupStateError):
        verify_next(v1, v2.next(name="x").signed_by(alice))
    forged = v2.next(name="x").signed_by(alice)
    bad = bytearray(forged.encode())
    bad[40] ^= 1
    with pytest.raises((GroupStateError, DecodeError)):
        verify_next(v2, GroupState.decode(bytes(bad)))
    # the last admin leaving hands over to the lowest remaining account id
    gone = v2.next(remove=frozenset({a.account_id})).signed_by(alice)
    assert gone.admins == frozenset({min(b.account_id, c.account_id)})


def test_group_size_limit_and_strict_decoding() -> None:
    alice, a = _account("alice")
    members = tuple(
        GroupMember(os.urandom(16), os.urandom(32), f"user{i}") for i in range(MAX_MEMBERS - 1)
    )
    big = create_group(alice, a, "big", members, os.urandom)
    assert len(GroupState.decode(big.encode()).members) == MAX_MEMBERS
    with pytest.raises(DecodeError):
        big.next(add=(GroupMember(os.urandom(16), os.urandom(32), "one-more"),))
    raw = create_group(alice, a, "g", (), os.urandom).encode()
    for cut in range(0, len(raw), 7):
        with pytest.raises(DecodeError):
            GroupState.decode(raw[:cut])
    with pytest.raises(DecodeError):
        GroupState.decode(raw + b"\x00")


# ---------------------------------------------------------------------- multi-sealed


def test_multi_sealed_opens_only_for_the_wrapped_devices() -> None:
    keys = [DhPrivateKey.generate(os.urandom) for _ in range(5)]
    shared, wraps = seal_multi(b"inner", [k.public_key() for k in keys[:4]], os.urandom)
    assert all(len(w) == WRAP_LEN for w in wraps)
    for key, wrap in zip(keys, wraps, strict=False):
        assert open_multi(assemble(wrap, shared), key) == b"inner"
    # the fifth device was not wrapped for: another's wrap does not open for it
    with pytest.raises(InvalidMessage):
        open_multi(assemble(wraps[0], shared), keys[4])
    body = bytearray(assemble(wraps[1], shared))
    body[-1] ^= 1
    with pytest.raises(InvalidMessage):
        open_multi(bytes(body), keys[1])
    with pytest.raises(DecodeError):
        assemble(wraps[0][:-1], shared)
    with pytest.raises(DecodeError):
        open_multi(b"\x01\x21" + bytes(100), keys[0])


# ---------------------------------------------------------------------- group-sealed


def test_distribution_carries_the_envelope_key_and_legacy_ones_still_read() -> None:
    own, receiver = _pair()
    dist = own.distribution()
    assert dist[:2] == b"\x01\x33" and dist[-32:] == own.envelope_key
    legacy = b"\x01\x30" + dist[2:LEGACY_DISTRIBUTION_LEN]
    old = ReceivingSenderChain.from_distribution(legacy)
    assert old.envelope_key is None and old.envelope_id is None
    assert old.decrypt(own.encrypt(b"still decrypts"))[0] == b"still decrypts"
    for bad in (
        dist[:-1],
        dist + b"\x00",
        legacy + bytes(32)[:-1],
        b"\x01\x30" + dist[2:],  # a legacy type with the new length
        b"\x01\x31" + dist[2:],
        dist[:10],
    ):
        with pytest.raises(DecodeError):
            ReceivingSenderChain.from_distribution(bad)
    # records keep the envelope key across a store round trip, with and without skips
    own.encrypt(b"skipped")
    _, advanced = receiver.decrypt(own.encrypt(b"next"))
    for chain in (receiver, advanced, old):
        back = ReceivingSenderChain.from_bytes(chain.to_bytes())
        assert back.envelope_key == chain.envelope_key
        assert back.skipped == chain.skipped and back.iteration == chain.iteration
    assert advanced.envelope_id == own.envelope_id
    raw = advanced.to_bytes()
    for bad in (raw[:-1], raw + b"\x00", b"\x03" + raw[1:]):
        with pytest.raises(DecodeError):
            ReceivingSenderChain.from_bytes(bad)
    back_own = OwnSenderChain.from_bytes(own.to_bytes())
    assert back_own.envelope_key == own.envelope_key and back_own.iteration == own.iteration
    # a stored chain of version 1 (no envelope key) is refused: its owner starts anew
    v1 = b"\x01" + own.to_bytes()[1:-32]
    with pytest.raises(DecodeError):
        OwnSenderChain.from_bytes(v1)


def test_group_sealed_envelope_round_trip_and_tampering() -> None:
    key = os.urandom(32)
    body = seal_group(b"inner plaintext", key, os.urandom)
    assert body[:2] == b"\x01\x23"
    assert group_envelope_id(body) == envelope_id(key)
    assert len(body) == GROUP_SEALED_MIN + len(b"inner plaintext")
    assert open_group(body, key) == b"inner plaintext"
    # every envelope of a chain has its own nonce: the same inner seals differently
    assert seal_group(b"inner plaintext", key, os.urandom) != body
    with pytest.raises(InvalidMessage):
        open_group(body, os.urandom(32))  # another chain's key
    for at in range(0, len(body), 5):
        bad = bytearray(body)
        bad[at] ^= 0x40
        with pytest.raises((InvalidMessage, DecodeError)):
            open_group(bytes(bad), key)
    for cut in (0, 2, 17, GROUP_SEALED_MIN - 1):
        with pytest.raises(DecodeError):
            open_group(body[:cut], key)
    with pytest.raises(DecodeError):
        seal_group(b"x", key[:31], os.urandom)
    with pytest.raises(DecodeError):
        group_envelope_id(b"\x01\x22" + body[2:])


def test_unseal_group_checks_the_sender_certificate() -> None:
    server = SigningKey.generate(os.urandom)
    account = AccountIdentity.generate(os.urandom)
    device = DeviceKeys.generate(account, 1, now=NOW, rng=os.urandom)
    cert = SenderCertificate.issue(
        server,
        account_id=account.account_id,
        device_id=1,
        signing_key=device.certificate.signing_key,
        identity_key=device.certificate.identity_key,
        expires=NOW + 3600,
    )
    own, receiver = _pair()
    message = own.encrypt(b"to the group")
    body = seal_group(cert.encode() + message, own.envelope_key, os.urandom)
    assert receiver.envelope_key is not None
    sender, inner = unseal_group(
        body, receiver.envelope_key, server_key=server.public_key(), now=NOW
    )
    assert sender.account_id == account.account_id and inner == message
    assert receiver.decrypt(inner)[0] == b"to the group"
    with pytest.raises(BadSignature):  # a certificate the pinned server key did not sign
        unseal_group(
            body,
            receiver.envelope_key,
            server_key=SigningKey.generate(os.urandom).public_key(),
            now=NOW,
        )
    with pytest.raises(InvalidMessage):  # expired
        unseal_group(body, receiver.envelope_key, server_key=server.public_key(), now=NOW + 7200)
    short = seal_group(cert.encode()[:100], own.envelope_key, os.urandom)
    with pytest.raises(InvalidMessage):
        unseal_group(short, receiver.envelope_key, server_key=server.public_key(), now=NOW)
