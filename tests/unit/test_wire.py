"""The wire format: round trips and strict decoding of every structure."""

from __future__ import annotations

import pytest

from sealpost.protocol import DecodeError, UnsupportedVersion, wire
from sealpost.protocol.consts import MAX_WIRE_MESSAGE
from support import SeededRng, established_pair, make_party


def _samples() -> dict[str, bytes]:
    rng = SeededRng("wire")
    bob = make_party(rng)
    a, _b, rng2 = established_pair("wire-pair")
    from sealpost.protocol import Session

    first = Session.initiate(make_party(rng).device, bob.bundle(), rng=rng).encrypt(b"x", rng=rng)
    return {
        "certificate": bob.device.certificate.encode(),
        "signed_prekey": bob.signed_prekey.public.encode(),
        "kem_prekey": bob.kem_prekey.public.encode(),
        "one_time_prekey": bob.one_time_prekey.public.encode(),
        "bundle_full": bob.bundle().encode(),
        "bundle_minimal": bob.bundle(one_time=False, kem=False).encode(),
        "ratchet_message": a.encrypt(b"payload", rng=rng2),
        "prekey_message": first,
    }


SAMPLES = _samples()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name: str) -> None:
    data = SAMPLES[name]
    decoded = wire.decode(data)
    assert decoded.encode() == data


FIXED = [n for n in sorted(SAMPLES) if n not in ("ratchet_message", "prekey_message")]


@pytest.mark.parametrize("name", FIXED)
def test_every_truncation_of_a_fixed_structure_is_refused(name: str) -> None:
    data = SAMPLES[name]
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            wire.decode(data[:cut])


@pytest.mark.parametrize("name", ["ratchet_message", "prekey_message"])
def test_message_truncation_decodes_only_while_a_tag_remains(name: str) -> None:
    # A message ends in its ciphertext; shortening that ciphertext still decodes (and
    # then fails authentication), but never below the 16-byte tag, and never a header.
    data = SAMPLES[name]
    decoded = wire.decode(data)
    ciphertext = decoded.message.ciphertext if name == "prekey_message" else decoded.ciphertext
    shortest = len(data) - (len(ciphertext) - 16)
    for cut in range(len(data)):
        if cut < shortest:
            with pytest.raises(DecodeError):
                wire.decode(data[:cut])
        else:
            wire.decode(data[:cut])


@pytest.mark.parametrize("name", FIXED)
def test_trailing_byte_is_refused(name: str) -> None:
    with pytest.raises(DecodeError):
        wire.decode(SAMPLES[name] + b"\x00")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_unknown_version_is_typed(name: str) -> None:
    data = bytearray(SAMPLES[name])
    data[0] = 2
    with pytest.raises(UnsupportedVersion) as info:
        wire.decode(bytes(data))
    assert info.value.version == 2


def test_unknown_type() -> None:
    with pytest.raises(DecodeError, match="unknown message type"):
        wire.decode(b"\x01\x7f" + b"\x00" * 100)


@pytest.mark.parametrize("data", [b"", b"\x01"])
def test_too_short(data: bytes) -> None:
    with pytest.raises(DecodeError):
        wire.decode(data)


@pytest.mark.parametrize("value", [None, "text", 5, ["list"], object()])
def test_wrong_type_input(value: object) -> None:
    with pytest.raises(DecodeError):
        wire.decode(value)  # type: ignore[arg-type]


def test_oversized_input_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        wire.decode(b"\x01\x10" + b"\x00" * wire.SEALED_ENVELOPE_MAX)


def test_oversized_message_refused() -> None:
    with pytest.raises(DecodeError, match="too large"):
        wire.decode(b"\x01\x10" + b"\x00" * MAX_WIRE_MESSAGE)


def test_bundle_unknown_flag_bits() -> None:
    data = bytearray(SAMPLES["bundle_minimal"])
    data[2] |= 0x80
    with pytest.raises(DecodeError, match="flag"):
        wire.decode(bytes(data))


def test_bundle_flag_without_its_part() -> None:
    data = bytearray(SAMPLES["bundle_minimal"])
    data[2] |= 0x01  # claims a one-time prekey that is not there
    with pytest.raises(DecodeError):
        wire.decode(bytes(data))


def test_kem_prekey_unknown_kind() -> None:
    data = bytearray(SAMPLES["kem_prekey"])
    data[2] = 9
    with pytest.raises(DecodeError, match="kind"):
        wire.decode(bytes(data))


def test_nested_structure_with_wrong_type_byte() -> None:
    data = bytearray(SAMPLES["bundle_minimal"])
    data[4] = wire.WireType.SIGNED_PREKEY  # the certificate's own type byte
    with pytest.raises(DecodeError):
        wire.decode(bytes(data))


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = SAMPLES["certificate"]
    assert wire.decode(bytearray(data)) == wire.decode(memoryview(data))


def test_sizes_are_as_documented() -> None:
    assert len(SAMPLES["certificate"]) == wire.DEVICE_CERTIFICATE_LEN == 190
    assert len(SAMPLES["signed_prekey"]) == wire.SIGNED_PREKEY_LEN == 110
    assert len(SAMPLES["kem_prekey"]) == wire.KEM_PREKEY_LEN == 1263
    assert len(SAMPLES["one_time_prekey"]) == wire.ONE_TIME_PREKEY_LEN == 38
    assert wire.RATCHET_HEADER_LEN == 42
    assert wire.SENDER_CERTIFICATE_LEN == 158
