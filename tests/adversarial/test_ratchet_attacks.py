"""Named attacks on a pairwise session, one test each (libsignal's style). Each plays the
network or a malicious server against an established session and checks the attack is
refused with a typed error and changes nothing."""

from __future__ import annotations

import pytest

from sealpost.crypto.dh import DhPrivateKey
from sealpost.protocol import (
    DuplicateMessage,
    InvalidKey,
    InvalidMessage,
    ProtocolError,
    Session,
    TooManySkipped,
    wire,
)
from sealpost.protocol.consts import MAX_FORWARD_SKIP, MAX_OLD_RECEIVING_CHAINS, MAX_SKIPPED_KEYS
from sealpost.protocol.wire import RATCHET_HEADER_LEN
from support import established_pair


def _refused(session: Session, data: bytes, error: type[ProtocolError]) -> None:
    before = session.to_bytes()
    with pytest.raises(error):
        session.decrypt(data)
    assert session.to_bytes() == before, "a refused message changed the session"


def test_replayed_message_is_a_duplicate() -> None:
    a, b, rng = established_pair()
    data = a.encrypt(b"pay 10", rng=rng)
    assert b.decrypt(data) == b"pay 10"
    _refused(b, data, DuplicateMessage)


def test_replay_on_an_old_chain_is_a_duplicate() -> None:
    a, b, rng = established_pair()
    old = a.encrypt(b"old", rng=rng)
    b.decrypt(old)
    for _ in range(MAX_OLD_RECEIVING_CHAINS):  # several DH steps later
        b.decrypt(a.encrypt(b"x", rng=rng))
        a.decrypt(b.encrypt(b"y", rng=rng))
    _refused(b, old, DuplicateMessage)


def test_chain_jump_over_limit() -> None:
    a, b, rng = established_pair()
    msgs = [a.encrypt(b"x", rng=rng) for _ in range(MAX_FORWARD_SKIP + 2)]
    last = wire.decode(msgs[-1])
    assert isinstance(last, wire.RatchetMessage) and last.counter == MAX_FORWARD_SKIP + 1
    _refused(b, msgs[-1], TooManySkipped)


def test_chain_jump_at_limit_is_accepted() -> None:
    a, b, rng = established_pair()
    msgs = [a.encrypt(b"x", rng=rng) for _ in range(MAX_FORWARD_SKIP + 1)]
    assert b.decrypt(msgs[-1]) == b"x"  # skips exactly MAX_FORWARD_SKIP keys
    assert len(b._ratchet.skipped) == MAX_FORWARD_SKIP


def test_forged_counter_cannot_burn_keys() -> None:
    # A network attacker raises the counter of a real message: the header is authenticated,
    # so the message fails and no keys are skipped or stored.
    a, b, rng = established_pair()
    data = bytearray(a.encrypt(b"x", rng=rng))
    data[RATCHET_HEADER_LEN - 1] += 100
    _refused(b, bytes(data), InvalidMessage)
    assert not b._ratchet.skipped


def test_forged_previous_counter_on_new_chain_is_refused() -> None:
    a, b, rng = established_pair()
    b.decrypt(a.encrypt(b"x", rng=rng))
    reply = b.encrypt(b"y", rng=rng)
    a.decrypt(reply)
    new_chain = bytearray(a.encrypt(b"z", rng=rng))
    new_chain[2 + 32 : 2 + 36] = (MAX_FORWARD_SKIP + 50).to_bytes(4, "big")
    _refused(b, bytes(new_chain), TooManySkipped)


def test_skipped_keys_are_bounded_oldest_dropped_first() -> None:
    a, b, rng = established_pair()
    # Several chains, each leaving skipped keys behind, exceeding the global bound.
    kept_first: bytes | None = None
    total = 0
    while total <= MAX_SKIPPED_KEYS + 10:
        msgs = [a.encrypt(b"m", rng=rng) for _ in range(MAX_FORWARD_SKIP)]
        if kept_first is None:
            kept_first = msgs[0]
        b.decrypt(msgs[-1])
        total += MAX_FORWARD_SKIP - 1
        a.decrypt(b.encrypt(b"r", rng=rng))
    assert len(b._ratchet.skipped) <= MAX_SKIPPED_KEYS
    assert kept_first is not None
    # The oldest skipped key was dropped: that message is now refused.
    with pytest.raises(DuplicateMessage):
        b.decrypt(kept_first)


def test_old_receiving_chains_are_bounded() -> None:
    a, b, rng = established_pair()
    for _ in range(MAX_OLD_RECEIVING_CHAINS + 3):
        a.encrypt(b"lost", rng=rng)  # leaves a skipped key on each chain
        b.decrypt(a.encrypt(b"x", rng=rng))
        a.decrypt(b.encrypt(b"y", rng=rng))
    assert len(b._ratchet.old_chains) <= MAX_OLD_RECEIVING_CHAINS
    chains = {chain for chain, _ in b._ratchet.skipped}
    assert len(chains) <= MAX_OLD_RECEIVING_CHAINS + 1


@pytest.mark.parametrize("position", range(RATCHET_HEADER_LEN))
def test_tampered_header_byte(position: int) -> None:
    a, b, rng = established_pair()
    data = bytearray(a.encrypt(b"attack at dawn", rng=rng))
    data[position] ^= 0x01
    _refused(b, bytes(data), ProtocolError)
    assert b.decrypt(a.encrypt(b"still fine", rng=rng)) == b"still fine"


def test_tampered_ciphertext_and_tag() -> None:
    a, b, rng = established_pair()
    data = a.encrypt(b"attack at dawn", rng=rng)
    for position in range(RATCHET_HEADER_LEN, len(data)):
        forged = bytearray(data)
        forged[position] ^= 0x80
        _refused(b, bytes(forged), InvalidMessage)
    assert b.decrypt(data) == b"attack at dawn"


def test_truncated_message() -> None:
    a, b, rng = established_pair()
    data = a.encrypt(b"attack at dawn", rng=rng)
    for cut in range(len(data)):
        _refused(b, data[:cut], ProtocolError)
    assert b.decrypt(data) == b"attack at dawn"


def test_new_ratchet_key_from_attacker_is_refused() -> None:
    a, b, rng = established_pair()
    data = bytearray(a.encrypt(b"x", rng=rng))
    data[2:34] = DhPrivateKey.generate(rng).public_key().public_bytes_raw()
    _refused(b, bytes(data), InvalidMessage)


def test_low_order_ratchet_key_is_refused() -> None:
    a, b, rng = established_pair()
    data = bytearray(a.encrypt(b"x", rng=rng))
    data[2:34] = bytes(32)  # u = 0: the all-zero shared secret
    _refused(b, bytes(data), InvalidKey)


def test_reflected_message_is_refused() -> None:
    a, _b, rng = established_pair()
    own = a.encrypt(b"to bob", rng=rng)
    _refused(a, own, ProtocolError)


def test_message_from_another_session_is_refused() -> None:
    _a, b, _rng = established_pair("one")
    c, _d, rng2 = established_pair("two")
    _refused(b, c.encrypt(b"x", rng=rng2), ProtocolError)


def test_failed_decrypt_does_not_prevent_later_success() -> None:
    a, b, rng = established_pair()
    msgs = [a.encrypt(f"{i}".encode(), rng=rng) for i in range(3)]
    forged = bytearray(msgs[2])
    forged[-1] ^= 1
    _refused(b, bytes(forged), InvalidMessage)
    assert [b.decrypt(m) for m in msgs] == [b"0", b"1", b"2"]
