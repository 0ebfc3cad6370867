"""End-to-end verification of a prekey bundle fetched from the (untrusted) server.

A bundle is accepted only when every signature checks and every key decodes:

1. the device certificate is signed by the account identity key it names, and that key is
   the one the caller trusts (if the caller says which);
2. the signed prekey is signed by the certified device signing key;
3. the ML-KEM prekey, if any, is signed by the same key and passes the FIPS 203 modulus
   check; without one the bundle is refused (:class:`NotPostQuantum`) unless the caller
   explicitly allows a classical-only session;
4. every X25519 key has the right size (low-order points fail later, at the DH).
"""

from __future__ import annotations

from dataclasses import dataclass

from sealpost._errors import NotPostQuantum
from sealpost.crypto.dh import DhPublicKey
from sealpost.crypto.kem import KemPublicKey
from sealpost.protocol.keys import VerifiedDevice, verify_certificate
from sealpost.protocol.wire import KemPreKey, PreKeyBundle, SignedPreKey

__all__ = ["VerifiedBundle", "verify_bundle"]


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """A bundle whose every signature has been checked, keys decoded."""

    bundle: PreKeyBundle
    device: VerifiedDevice
    signed_prekey: DhPublicKey
    one_time_prekey: DhPublicKey | None
    kem_prekey: KemPublicKey | None


def verify_bundle(
    bundle: PreKeyBundle,
    *,
    expected_account_key: bytes | None = None,
    allow_classical: bool = False,
) -> VerifiedBundle:
    """Verify ``bundle`` end to end (see the module docstring) or raise a
    :class:`~sealpost.protocol.errors.RemoteProtocolError` subclass."""
    if bundle.kem_prekey is None and not allow_classical:
        raise NotPostQuantum("bundle carries no ML-KEM prekey; refusing a classical-only session")
    device = verify_certificate(bundle.certificate, expected_account_key=expected_account_key)
    spk = bundle.signed_prekey
    device.signing_key.verify(spk.signature, SignedPreKey.CONTEXT + spk.signed_part())
    kem_key = None
    if bundle.kem_prekey is not None:
        kem = bundle.kem_prekey
        device.signing_key.verify(kem.signature, KemPreKey.CONTEXT + kem.signed_part())
        kem_key = KemPublicKey.from_public_bytes(kem.public_key)
    opk = (
        DhPublicKey.from_public_bytes(bundle.one_time_prekey.public_key)
        if bundle.one_time_prekey is not None
        else None
    )
    return VerifiedBundle(
        bundle, device, DhPublicKey.from_public_bytes(spk.public_key), opk, kem_key
    )
