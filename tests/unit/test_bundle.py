"""End-to-end verification of prekey bundles served by an untrusted server."""

from __future__ import annotations

import dataclasses

import pytest

from sealpost.crypto.kem import MLKEM768_PUBLIC_LEN
from sealpost.protocol import (
    BadSignature,
    InvalidKey,
    KemPreKey,
    NotPostQuantum,
    PreKeyBundle,
    SignedPreKey,
    UntrustedIdentity,
    verify_bundle,
)
from support import NOW, Party, SeededRng, make_party


@pytest.fixture
def bob() -> Party:
    return make_party(SeededRng("bundle"))


def test_valid_bundle(bob: Party) -> None:
    verified = verify_bundle(bob.bundle(), expected_account_key=bob.account_key)
    assert verified.kem_prekey is not None and verified.one_time_prekey is not None


def test_bundle_without_kem_is_refused_unless_allowed(bob: Party) -> None:
    with pytest.raises(NotPostQuantum):
        verify_bundle(bob.bundle(kem=False))
    assert verify_bundle(bob.bundle(kem=False), allow_classical=True).kem_prekey is None


def test_signed_prekey_signed_by_another_device(bob: Party) -> None:
    other = make_party(SeededRng("other"))
    bundle = dataclasses.replace(bob.bundle(), signed_prekey=other.signed_prekey.public)
    with pytest.raises(BadSignature):
        verify_bundle(bundle)


def test_substituted_signed_prekey_key(bob: Party) -> None:
    spk = bob.signed_prekey.public
    forged = dataclasses.replace(spk, public_key=bytes(32 * [7]))
    with pytest.raises(BadSignature):
        verify_bundle(dataclasses.replace(bob.bundle(), signed_prekey=forged))


def test_substituted_kem_prekey(bob: Party) -> None:
    other = make_party(SeededRng("other"))
    with pytest.raises(BadSignature):
        verify_bundle(dataclasses.replace(bob.bundle(), kem_prekey=other.kem_prekey.public))


def test_signature_of_one_kind_is_not_valid_for_another(bob: Party) -> None:
    # Domain separation: the SPK's signature must not verify as a certificate's or KEM's.
    spk = bob.signed_prekey.public
    kem = dataclasses.replace(bob.kem_prekey.public, signature=spk.signature)
    with pytest.raises(BadSignature):
        verify_bundle(dataclasses.replace(bob.bundle(), kem_prekey=kem))


def test_kem_key_failing_the_modulus_check_is_refused_even_if_signed(bob: Party) -> None:
    bad_key = b"\xff" * MLKEM768_PUBLIC_LEN  # every coefficient >= q
    unsigned = KemPreKey(bob.kem_prekey.public.kind, 99, NOW, bad_key, b"")
    sig = bob.device.signing_key.sign(KemPreKey.CONTEXT + unsigned.signed_part())
    bundle = dataclasses.replace(
        bob.bundle(), kem_prekey=dataclasses.replace(unsigned, signature=sig)
    )
    with pytest.raises(InvalidKey):
        verify_bundle(bundle)


def test_bundle_for_another_account_is_untrusted(bob: Party) -> None:
    other = make_party(SeededRng("other"))
    with pytest.raises(UntrustedIdentity):
        verify_bundle(other.bundle(), expected_account_key=bob.account_key)


def test_wire_round_trip_then_verify(bob: Party) -> None:
    bundle = PreKeyBundle.decode(bob.bundle(one_time=False).encode())
    assert verify_bundle(bundle).one_time_prekey is None
    assert isinstance(bundle.signed_prekey, SignedPreKey)
