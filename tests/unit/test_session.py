"""Sessions: PQXDH set-up in every shape, PreKeyMessage wrapping, routing and storage."""

from __future__ import annotations

import pytest

from sealpost.protocol import (
    DuplicateMessage,
    InvalidMessage,
    LocalProtocolError,
    NotPostQuantum,
    Session,
    SessionNotReady,
    UnknownPreKey,
    UntrustedIdentity,
    wire,
)
from sealpost.protocol.consts import MAX_PLAINTEXT
from sealpost.protocol.ratchet import RatchetState
from support import SeededRng, established_pair, make_party, respond


@pytest.mark.parametrize("one_time", [True, False])
def test_pq_session_with_and_without_one_time_prekey(one_time: bool) -> None:
    rng = SeededRng("s")
    alice, bob = make_party(rng), make_party(rng)
    a = Session.initiate(alice.device, bob.bundle(one_time=one_time), rng=rng)
    first = wire.decode(a.encrypt(b"one", rng=rng))
    assert isinstance(first, wire.PreKeyMessage)
    assert (first.one_time_prekey_id is not None) is one_time
    b, text = respond(bob, first.encode(), expected_account_key=alice.account_key)
    assert text == b"one"
    assert a.is_post_quantum and b.is_post_quantum
    assert b.remote_account_key == alice.account_key
    assert a.decrypt(b.encrypt(b"two", rng=rng)) == b"two"


def test_classical_only_needs_consent_on_both_sides() -> None:
    rng = SeededRng("s")
    alice, bob = make_party(rng), make_party(rng)
    with pytest.raises(NotPostQuantum):
        Session.initiate(alice.device, bob.bundle(kem=False), rng=rng)
    a = Session.initiate(alice.device, bob.bundle(kem=False), allow_classical=True, rng=rng)
    assert not a.is_post_quantum
    data = a.encrypt(b"classical", rng=rng)
    with pytest.raises(NotPostQuantum):
        respond(bob, data)
    b, text = respond(bob, data, allow_classical=True)
    assert text == b"classical" and not b.is_post_quantum


def test_initiator_wraps_until_the_first_reply() -> None:
    rng = SeededRng("s")
    alice, bob = make_party(rng), make_party(rng)
    a = Session.initiate(alice.device, bob.bundle(), rng=rng)
    sent = [a.encrypt(f"m{i}".encode(), rng=rng) for i in range(3)]
    assert all(isinstance(wire.decode(m), wire.PreKeyMessage) for m in sent)
    assert a.awaiting_reply
    # The second message arrives first: the responder sets up from it.
    b, text = respond(bob, sent[1])
    assert text == b"m1"
    # The others are routed to the same session by base key.
    for i in (0, 2):
        message = wire.decode(sent[i])
        assert isinstance(message, wire.PreKeyMessage) and b.matches(message)
        assert b.decrypt(sent[i]) == f"m{i}".encode()
    assert a.decrypt(b.encrypt(b"reply", rng=rng)) == b"reply"
    assert not a.awaiting_reply
    assert isinstance(wire.decode(a.encrypt(b"after", rng=rng)), wire.RatchetMessage)


def test_replayed_prekey_message_is_a_duplicate_for_its_session() -> None:
    rng = SeededRng("s")
    alice, bob = make_party(rng), make_party(rng)
    a = Session.initiate(alice.device, bob.bundle(), rng=rng)
    first = a.encrypt(b"once", rng=rng)
    b, _ = respond(bob, first)
    with pytest.raises(DuplicateMessage):
        b.decrypt(first)


def test_prekey_message_of_another_session_is_refused() -> None:
    rng = SeededRng("s")
    alice, bob = make_party(rng), make_party(rng)
    a1 = Session.initiate(alice.device, bob.bundle(), rng=rng)
    a2 = Session.initiate(alice.device, bob.bundle(), rng=rng)
    b, _ = respond(bob, a1.encrypt(b"x", rng=rng))
    before = b.to_bytes()
    with pytest.raises(InvalidMessage):
        b.decrypt(a2.encrypt(b"y", rng=rng))
    assert b.to_bytes() == before


def test_a_decoded_prekey_message_decrypts_as_its_bytes_do() -> None:
    """The receive pipeline hands the session the PreKeyMessage sealed sender decoded; it
    decrypts like the bytes, a replay of it is a duplicate, and one of another session is
    refused with the session unchanged."""
    rng = SeededRng("s")
    alice, bob = make_party(rng), make_party(rng)
    a = Session.initiate(alice.device, bob.bundle(), rng=rng)
    b, _ = respond(bob, a.encrypt(b"first", rng=rng))
    second = wire.decode(a.encrypt(b"second", rng=rng))
    assert isinstance(second, wire.PreKeyMessage)
    assert b.decrypt(second) == b"second"
    with pytest.raises(DuplicateMessage):
        b.decrypt(second)
    other = wire.decode(
        Session.initiate(alice.device, bob.bundle(), rng=rng).encrypt(b"o", rng=rng)
    )
    before = b.to_bytes()
    with pytest.raises(InvalidMessage):
        b.decrypt(other)
    assert b.to_bytes() == before


def test_respond_with_missing_or_wrong_prekeys() -> None:
    rng = SeededRng("s")
    alice, bob = make_party(rng), make_party(rng)
    message = wire.decode(Session.initiate(alice.device, bob.bundle(), rng=rng).encrypt(b"x"))
    assert isinstance(message, wire.PreKeyMessage)
    other = make_party(rng)
    cases = [
        dict(signed_prekey=bob.signed_prekey, one_time_prekey=None, kem_prekey=bob.kem_prekey),
        dict(signed_prekey=bob.signed_prekey, one_time_prekey=bob.one_time_prekey, kem_prekey=None),
        dict(
            signed_prekey=other.signed_prekey.__class__(
                other.signed_prekey.private_key, other.signed_prekey.public
            ),
            one_time_prekey=bob.one_time_prekey,
            kem_prekey=bob.kem_prekey,
        ),
    ]
    # Same ids, other keys: ids match, but the secrets differ, so decryption fails.
    for kwargs in cases[:2]:
        with pytest.raises(UnknownPreKey):
            Session.respond(bob.device, message, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage):
        Session.respond(bob.device, message, **cases[2])  # type: ignore[arg-type]


def test_responder_enforces_the_expected_initiator_identity() -> None:
    rng = SeededRng("s")
    alice, bob, mallory = make_party(rng), make_party(rng), make_party(rng)
    data = Session.initiate(alice.device, bob.bundle(), rng=rng).encrypt(b"x", rng=rng)
    with pytest.raises(UntrustedIdentity):
        respond(bob, data, expected_account_key=mallory.account_key)


def test_responder_cannot_send_before_receiving() -> None:
    party = make_party(SeededRng("s"))
    state = RatchetState.responder(b"\x00" * 32, party.signed_prekey.private_key)
    with pytest.raises(SessionNotReady):
        state.encrypt(b"x", b"", SeededRng("r"))


def test_plaintext_size_limit() -> None:
    a, b, rng = established_pair()
    assert b.decrypt(a.encrypt(b"\x00" * MAX_PLAINTEXT, rng=rng)) == b"\x00" * MAX_PLAINTEXT
    with pytest.raises(LocalProtocolError):
        a.encrypt(b"\x00" * (MAX_PLAINTEXT + 1), rng=rng)


def test_storage_round_trip_mid_conversation() -> None:
    a, b, rng = established_pair()
    in_flight = [a.encrypt(f"{i}".encode(), rng=rng) for i in range(5)]
    b.decrypt(in_flight[3])  # leaves 0, 1, 2 as skipped keys
    restored = Session.from_bytes(b.to_bytes())
    assert restored.to_bytes() == b.to_bytes()
    for i in (0, 2, 1, 4):
        assert restored.decrypt(in_flight[i]) == f"{i}".encode()
    a2 = Session.from_bytes(a.to_bytes())
    assert restored.decrypt(a2.encrypt(b"later", rng=rng)) == b"later"


def test_sessions_are_deterministic_under_a_seed() -> None:
    def run() -> list[bytes]:
        rng = SeededRng("det")
        alice, bob = make_party(rng), make_party(rng)
        a = Session.initiate(alice.device, bob.bundle(kem=False), allow_classical=True, rng=rng)
        out = [a.encrypt(b"x", rng=rng)]
        b, _ = respond(bob, out[0], allow_classical=True)
        out.append(b.encrypt(b"y", rng=rng))
        return out

    assert run() == run()
