"""Decoders and session decrypt on arbitrary input: accept, or raise our error, nothing
else (h11's fuzzing rule), and never change state on refusal. Thousands of cases each."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpost.crypto import SigningKey
from sealpost.protocol import (
    DecodeError,
    ProtocolError,
    SenderCertificate,
    Session,
    seal,
    unseal,
    wire,
)
from sealpost.protocol.ratchet import RatchetState
from support import NOW, SeededRng, established_pair, make_party

_RNG = SeededRng("robust")
_BOB = make_party(_RNG)
_A, _B, _PAIR_RNG = established_pair("robust-pair")
_ALICE = make_party(_RNG)
_FIRST = Session.initiate(_ALICE.device, _BOB.bundle(), rng=_RNG).encrypt(b"hi")
_SERVER = SigningKey.generate(_RNG)
_SENDER = SenderCertificate.issue(
    _SERVER,
    account_id=_ALICE.device.certificate.account_id,
    device_id=1,
    signing_key=_ALICE.device.certificate.signing_key,
    identity_key=_ALICE.device.certificate.identity_key,
    expires=NOW + 60,
)
_SEALED = seal(_FIRST, _SENDER, _BOB.device.identity_key.public_key())
SAMPLES = [
    _BOB.device.certificate.encode(),
    _BOB.signed_prekey.public.encode(),
    _BOB.kem_prekey.public.encode(),
    _BOB.one_time_prekey.public.encode(),
    _BOB.bundle().encode(),
    _BOB.bundle(one_time=False).encode(),
    _A.encrypt(b"a message", rng=_PAIR_RNG),
    _FIRST,
    _SENDER.encode(),
    _SEALED,
]
MANY = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid structure with a few edits: flips, cuts, insertions, deletions."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "overwrite"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


def _decode_or_decode_error(data: bytes) -> None:
    try:
        decoded = wire.decode(data)
    except DecodeError:
        return
    assert decoded.encode() == data  # whatever decodes re-encodes to the same bytes


@MANY
@given(st.binary(max_size=2048))
def test_random_bytes_into_decode(data: bytes) -> None:
    _decode_or_decode_error(data)


@MANY
@given(st.sampled_from(list(wire.WireType)), st.binary(max_size=3000))
def test_random_body_with_valid_prefix_into_decode(wire_type: int, body: bytes) -> None:
    _decode_or_decode_error(bytes((1, wire_type)) + body)


@MANY
@given(mutated())
def test_mutated_structures_into_decode(data: bytes) -> None:
    _decode_or_decode_error(data)


def _decrypt_refused_or_fine(data: bytes) -> None:
    before = _B.to_bytes()
    try:
        _B.decrypt(data)
    except ProtocolError:
        assert _B.to_bytes() == before
        return
    # Every byte of a message is authenticated: only an unmodified original can decrypt.
    assert data in SAMPLES, "a mutated message decrypted"


@SOME
@given(mutated())
def test_mutated_messages_into_session_decrypt(data: bytes) -> None:
    _decrypt_refused_or_fine(data)


@SOME
@given(st.binary(max_size=512))
def test_random_bytes_into_session_decrypt(data: bytes) -> None:
    _decrypt_refused_or_fine(data)


@SOME
@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1), st.binary(max_size=80))
def test_forged_ratchet_messages_into_session_decrypt(
    key: bytes, counter: int, body: bytes
) -> None:
    data = wire.RatchetMessage(key, 0, counter, body.ljust(16, b"\x00")).encode()
    _decrypt_refused_or_fine(data)


@SOME
@given(mutated())
def test_mutated_prekey_messages_into_respond(data: bytes) -> None:
    try:
        message = wire.decode(data)
    except DecodeError:
        return
    if not isinstance(message, wire.PreKeyMessage):
        return
    try:
        Session.respond(
            _BOB.device,
            message,
            signed_prekey=_BOB.signed_prekey,
            one_time_prekey=_BOB.one_time_prekey,
            kem_prekey=_BOB.kem_prekey,
        )
    except ProtocolError:
        return
    # Only the untouched original may succeed.
    assert data == _FIRST or message.encode() == _FIRST


@SOME
@given(st.binary(max_size=600))
def test_random_storage_records(data: bytes) -> None:
    for loader in (Session.from_bytes, RatchetState.from_bytes):
        with contextlib.suppress(DecodeError):
            loader(data)


@SOME
@given(mutated())
def test_mutated_envelopes_into_unseal(data: bytes) -> None:
    try:
        opened = unseal(data, _BOB.device.identity_key, server_key=_SERVER.public_key(), now=NOW)
    except ProtocolError:
        return
    assert data == _SEALED and opened.sender == _SENDER
