"""Keys, certificates and their storage records."""

from __future__ import annotations

import dataclasses

import pytest

from sealpost.protocol import (
    AccountIdentity,
    BadSignature,
    DecodeError,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    SignedPreKeyPair,
    UntrustedIdentity,
    verify_certificate,
)
from support import NOW, SeededRng, make_party


def test_certificate_verifies_and_exposes_keys() -> None:
    party = make_party(SeededRng("keys"))
    verified = verify_certificate(party.device.certificate, expected_account_key=party.account_key)
    assert verified.identity_key == party.device.identity_key.public_key()
    assert verified.signing_key == party.device.signing_key.public_key()


@pytest.mark.parametrize(
    "field", ["account_id", "device_id", "signing_key", "identity_key", "created"]
)
def test_changing_any_certified_field_breaks_the_signature(field: str) -> None:
    cert = make_party(SeededRng("keys")).device.certificate
    value = getattr(cert, field)
    forged_value = value + 1 if isinstance(value, int) else bytes([value[0] ^ 1]) + value[1:]
    forged = dataclasses.replace(cert, **{field: forged_value})
    with pytest.raises(BadSignature):
        verify_certificate(forged)


def test_certificate_from_another_account_is_untrusted() -> None:
    rng = SeededRng("keys")
    party, other = make_party(rng), make_party(rng)
    with pytest.raises(UntrustedIdentity):
        verify_certificate(party.device.certificate, expected_account_key=other.account_key)


def test_certificate_resigned_by_attacker_key_is_untrusted() -> None:
    # The server swaps in its own account key and signs a certificate with it.
    rng = SeededRng("keys")
    party = make_party(rng)
    attacker = AccountIdentity(party.account.account_id, AccountIdentity.generate(rng).signing_key)
    forged = attacker.certify_device(
        1, party.device.signing_key.public_key(), party.device.identity_key.public_key(), NOW
    )
    verify_certificate(forged)  # self-consistent...
    with pytest.raises(UntrustedIdentity):  # ...but not the key the contact trusts
        verify_certificate(forged, expected_account_key=party.account_key)


def test_records_round_trip() -> None:
    party = make_party(SeededRng("records"))
    for record in (
        party.account,
        party.device,
        party.signed_prekey,
        party.kem_prekey,
        party.one_time_prekey,
    ):
        restored = type(record).from_bytes(record.to_bytes())  # type: ignore[attr-defined]
        assert restored.to_bytes() == record.to_bytes()


@pytest.mark.parametrize(
    "cls", [AccountIdentity, DeviceKeys, SignedPreKeyPair, OneTimePreKeyPair, KemPreKeyPair]
)
@pytest.mark.parametrize("data", [b"", b"\x01", b"\x02\x01" + b"\x00" * 300, b"\xff" * 2000])
def test_bad_records_are_refused(cls: type, data: bytes) -> None:
    with pytest.raises(DecodeError):
        cls.from_bytes(data)  # type: ignore[attr-defined]


def test_device_keys_refuse_a_certificate_for_other_keys() -> None:
    rng = SeededRng("keys")
    a, b = make_party(rng), make_party(rng)
    with pytest.raises(DecodeError):
        DeviceKeys(a.device.signing_key, a.device.identity_key, b.device.certificate)


def test_generation_is_deterministic_under_a_seed() -> None:
    one, two = make_party(SeededRng("same")), make_party(SeededRng("same"))
    assert one.device.to_bytes() == two.device.to_bytes()
    assert one.kem_prekey.to_bytes() == two.kem_prekey.to_bytes()


def test_device_revocation_signs_verifies_and_decodes_strictly() -> None:
    import os

    from sealpost._errors import BadSignature, DecodeError, UntrustedIdentity
    from sealpost.protocol.keys import AccountIdentity, sign_revocation, verify_revocation
    from sealpost.protocol.wire import DEVICE_REVOCATION_LEN, DeviceRevocation

    account = AccountIdentity.generate(os.urandom)
    revocation = sign_revocation(account, 3, revoked_at=1_700_000_000)
    raw = revocation.encode()
    assert len(raw) == DEVICE_REVOCATION_LEN
    decoded = DeviceRevocation.decode(raw)
    assert decoded == revocation
    key = account.public_key().public_bytes_raw()
    verify_revocation(decoded, expected_account_key=key)
    other = AccountIdentity.generate(os.urandom)
    with pytest.raises(UntrustedIdentity):
        verify_revocation(decoded, expected_account_key=other.public_key().public_bytes_raw())
    for at in (20, 45, 60, len(raw) - 1):  # key, device id, time, signature
        bad = bytearray(raw)
        bad[at] ^= 1
        with pytest.raises((BadSignature, DecodeError)):
            verify_revocation(DeviceRevocation.decode(bytes(bad)))
    for cut in (0, 1, 2, len(raw) - 1):
        with pytest.raises(DecodeError):
            DeviceRevocation.decode(raw[:cut])
    with pytest.raises(DecodeError):
        DeviceRevocation.decode(raw + b"\x00")
