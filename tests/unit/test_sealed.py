"""Sealed sender: envelopes only the recipient device opens, with a verified sender."""

from __future__ import annotations

import dataclasses

import pytest

from sealpost.crypto import DhPublicKey, SigningKey
from sealpost.protocol import (
    BadSignature,
    DecodeError,
    InvalidMessage,
    ProtocolError,
    SenderCertificate,
    Session,
    UntrustedIdentity,
    seal,
    unseal,
    wire,
)
from support import NOW, SeededRng, make_party, respond

RNG = SeededRng("sealed")
SERVER = SigningKey.generate(RNG)
ALICE, BOB, CAROL = make_party(RNG), make_party(RNG), make_party(RNG)


def certificate_for(party, *, key: SigningKey = SERVER, expires: int = NOW + 86400):  # type: ignore[no-untyped-def]
    cert = party.device.certificate
    return SenderCertificate.issue(
        key,
        account_id=cert.account_id,
        device_id=cert.device_id,
        signing_key=cert.signing_key,
        identity_key=cert.identity_key,
        expires=expires,
    )


def _first_message() -> bytes:
    return Session.initiate(ALICE.device, BOB.bundle(), rng=RNG).encrypt(b"hello", rng=RNG)


def test_prekey_message_round_trip() -> None:
    message = _first_message()
    envelope = seal(message, certificate_for(ALICE), BOB.device.identity_key.public_key())
    opened = unseal(envelope, BOB.device.identity_key, server_key=SERVER.public_key(), now=NOW)
    assert opened.message.encode() == message
    assert opened.sender.account_id == ALICE.device.certificate.account_id


def test_ratchet_message_round_trip_and_session_check() -> None:
    rng = SeededRng("sealed-pair")
    alice, bob = make_party(rng), make_party(rng)
    a = Session.initiate(alice.device, bob.bundle(), rng=rng)
    b, _ = respond(bob, a.encrypt(b"hi", rng=rng))
    a.decrypt(b.encrypt(b"hello", rng=rng))
    bob_dik = DhPublicKey.from_public_bytes(a.remote_certificate.identity_key)
    envelope = seal(a.encrypt(b"sealed", rng=rng), certificate_for(alice), bob_dik)
    opened = unseal(envelope, bob.device.identity_key, server_key=SERVER.public_key(), now=NOW)
    assert isinstance(opened.message, wire.RatchetMessage)
    opened.check_session(b.remote_certificate)  # the session is with the certified sender
    assert b.decrypt(opened.message) == b"sealed"
    with pytest.raises(UntrustedIdentity):
        opened.check_session(CAROL.device.certificate)


def test_envelope_is_opaque_and_only_recipient_opens_it() -> None:
    envelope = seal(_first_message(), certificate_for(ALICE), BOB.device.identity_key.public_key())
    assert ALICE.device.certificate.account_id not in envelope
    assert ALICE.device.certificate.signing_key not in envelope
    assert isinstance(wire.decode(envelope), wire.SealedEnvelope)
    with pytest.raises(InvalidMessage):
        unseal(envelope, CAROL.device.identity_key, server_key=SERVER.public_key(), now=NOW)


def test_forged_sender_certificate() -> None:
    forged = certificate_for(ALICE, key=SigningKey.generate(RNG))
    envelope = seal(_first_message(), forged, BOB.device.identity_key.public_key())
    with pytest.raises(BadSignature):
        unseal(envelope, BOB.device.identity_key, server_key=SERVER.public_key(), now=NOW)


def test_expired_sender_certificate() -> None:
    envelope = seal(
        _first_message(), certificate_for(ALICE, expires=NOW), BOB.device.identity_key.public_key()
    )
    with pytest.raises(InvalidMessage, match="expired"):
        unseal(envelope, BOB.device.identity_key, server_key=SERVER.public_key(), now=NOW)


def test_certificate_of_another_device_around_a_prekey_message() -> None:
    # Carol's genuine certificate, Alice's message: the inner sender differs.
    envelope = seal(_first_message(), certificate_for(CAROL), BOB.device.identity_key.public_key())
    with pytest.raises(UntrustedIdentity):
        unseal(envelope, BOB.device.identity_key, server_key=SERVER.public_key(), now=NOW)


def test_tampered_envelope_is_refused_everywhere() -> None:
    envelope = seal(_first_message(), certificate_for(ALICE), BOB.device.identity_key.public_key())
    for position in range(len(envelope)):
        forged = bytearray(envelope)
        forged[position] ^= 0x04
        with pytest.raises(ProtocolError):
            unseal(bytes(forged), BOB.device.identity_key, server_key=SERVER.public_key(), now=NOW)


def test_only_messages_can_be_sealed() -> None:
    with pytest.raises(DecodeError):
        seal(
            BOB.device.certificate.encode(),
            certificate_for(ALICE),
            BOB.device.identity_key.public_key(),
        )


def test_sender_certificate_wire_round_trip_and_tamper() -> None:
    cert = certificate_for(ALICE)
    assert wire.decode(cert.encode()) == cert
    cert.verify(SERVER.public_key(), now=NOW)
    with pytest.raises(BadSignature):
        dataclasses.replace(cert, device_id=cert.device_id + 1).verify(SERVER.public_key(), now=NOW)


def test_verified_certificate_cache_skips_only_known_good_certificates() -> None:
    """A certificate is remembered only after it verified; expiry is still checked, and a
    forged one is refused whether or not the set holds others."""
    import os

    from sealpost.crypto.sign import SigningKey
    from sealpost.protocol import Session
    from sealpost.protocol.errors import BadSignature, InvalidMessage
    from sealpost.protocol.sealed import SENDER_CERTIFICATE_LEN, seal, unseal
    from sealpost.protocol.wire import SenderCertificate
    from support import NOW, SeededRng, make_party

    rng = SeededRng("cache")
    alice, bob = make_party(rng), make_party(rng)
    alice_session = Session.initiate(alice.device, bob.bundle(), rng=rng)
    server = SigningKey.generate(os.urandom)
    rogue = SigningKey.generate(os.urandom)
    cert = alice.device.certificate

    def issue(key: SigningKey, expires: int) -> SenderCertificate:
        return SenderCertificate.issue(
            key,
            account_id=cert.account_id,
            device_id=cert.device_id,
            signing_key=cert.signing_key,
            identity_key=cert.identity_key,
            expires=expires,
        )

    good = issue(server, NOW + 100)
    dik = bob.device.identity_key
    verified: set[bytes] = set()
    envelope = seal(alice_session.encrypt(b"one"), good, dik.public_key())
    unseal(envelope, dik, server_key=server.public_key(), now=NOW, verified=verified)
    assert verified == {good.encode()[:SENDER_CERTIFICATE_LEN]}
    with pytest.raises(InvalidMessage):
        unseal(envelope, dik, server_key=server.public_key(), now=NOW + 100, verified=verified)
    forged = seal(alice_session.encrypt(b"two"), issue(rogue, NOW + 100), dik.public_key())
    with pytest.raises(BadSignature):
        unseal(forged, dik, server_key=server.public_key(), now=NOW, verified=verified)
    assert len(verified) == 1
