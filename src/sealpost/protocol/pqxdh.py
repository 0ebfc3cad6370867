"""PQXDH key agreement (Signal's specification, revision 3) with X25519 and ML-KEM-768.

Parameters: curve X25519, hash SHA-256, pqkem ML-KEM-768, and our own info strings.
Identity keys are the devices' identity keys (DIK, X25519); their binding to an account is
the AIK-signed device certificate, which travels in the bundle and in the PreKeyMessage.

Initiator A, with B's verified bundle (IK_B, SPK_B, optional OPK_B, PQPK_B)::

    EK_A  fresh X25519 key
    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
    DH4 = DH(EK_A, OPK_B)   (only with a one-time prekey)
    (SS, CT) = ML-KEM-768.Encaps(PQPK_B)
    SK = HKDF-SHA256(salt = 32 zero bytes,
                     ikm  = 0xFF*32 || DH1 || DH2 || DH3 [|| DH4] || SS,
                     info = INFO || SHA-256(transcript), L = 32)
    AD = AIK_A || IK_A || AIK_B || IK_B

The responder computes the same from its private keys and the PreKeyMessage. Beyond the
specification we bind a transcript hash (both device certificates, EK_A, the signed prekey,
the one-time prekey, the ML-KEM prekey and ciphertext) into ``info``, so the session key
commits to exactly which keys were used (defence in depth against KEM re-encapsulation and
key-confusion attacks). A classical-only session (no ML-KEM prekey, allowed explicitly) uses
a different info string and no SS, so the two modes can never produce the same key.

Replay: with a one-time prekey, a replayed PreKeyMessage fails because that prekey was
deleted. Without one (last-resort prekeys only), the responder must detect replays by the
base key EK_A, which :class:`~sealpost.protocol.session.Session` exposes for that purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealpost._errors import NotPostQuantum, UnknownPreKey
from sealpost.crypto.dh import DhPrivateKey, DhPublicKey
from sealpost.crypto.kdf import hkdf, sha256
from sealpost.crypto.kem import Kem
from sealpost.entropy import Rng
from sealpost.protocol.bundle import VerifiedBundle
from sealpost.protocol.keys import (
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    SignedPreKeyPair,
    VerifiedDevice,
)
from sealpost.protocol.wire import (
    DeviceCertificate,
    KemPreKey,
    KemPreKeyKind,
    OneTimePreKey,
    SignedPreKey,
)

__all__ = [
    "INFO_CLASSICAL",
    "INFO_PQ",
    "Agreement",
    "PreKeyParameters",
    "initiate",
    "respond",
]

INFO_PQ = b"sealpost/v1/PQXDH_CURVE25519_SHA-256_ML-KEM-768"
INFO_CLASSICAL = b"sealpost/v1/X3DH_CURVE25519_SHA-256"
_TRANSCRIPT_CONTEXT = b"sealpost/v1/pqxdh-transcript\x00"
_F = b"\xff" * 32
_SALT = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class PreKeyParameters:
    """What the initiator tells the responder (the PreKeyMessage minus its ratchet part)."""

    certificate: DeviceCertificate
    base_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_kind: KemPreKeyKind | None
    kem_prekey_id: int | None
    kem_ciphertext: bytes | None


@dataclass(frozen=True, slots=True)
class Agreement:
    """The outcome of PQXDH on either side. ``repr`` hides the secret key."""

    shared_key: bytes
    associated_data: bytes
    post_quantum: bool

    def __repr__(self) -> str:
        return f"Agreement(post_quantum={self.post_quantum}, shared_key=<hidden>)"


def _transcript(
    initiator: DeviceCertificate,
    responder: DeviceCertificate,
    base_key: bytes,
    spk: SignedPreKey,
    opk: OneTimePreKey | None,
    kem: KemPreKey | None,
    kem_ciphertext: bytes | None,
) -> bytes:
    flags = (1 if opk is not None else 0) | (2 if kem is not None else 0)
    parts = [
        _TRANSCRIPT_CONTEXT,
        bytes((flags,)),
        initiator.encode(),
        responder.encode(),
        base_key,
        spk.encode(),
    ]
    if opk is not None:
        parts.append(opk.encode())
    if kem is not None and kem_ciphertext is not None:
        parts += [kem.encode(), kem_ciphertext]
    return sha256(b"".join(parts))


def _derive(dhs: list[bytes], kem_secret: bytes | None, transcript_hash: bytes) -> bytes:
    info = (INFO_PQ if kem_secret is not None else INFO_CLASSICAL) + transcript_hash
    ikm = _F + b"".join(dhs) + (kem_secret or b"")
    return hkdf(ikm, salt=_SALT, info=info, length=32)


def _associated_data(initiator: DeviceCertificate, responder: DeviceCertificate) -> bytes:
    return (
        initiator.account_key
        + initiator.identity_key
        + responder.account_key
        + responder.identity_key
    )


def initiate(
    local: DeviceKeys, remote: VerifiedBundle, *, rng: Rng, kem: Kem
) -> tuple[Agreement, PreKeyParameters]:
    """Run the initiator's side of PQXDH against a verified bundle."""
    ek = DhPrivateKey.generate(rng)
    spk_b = remote.signed_prekey
    dhs = [
        local.identity_key.exchange(spk_b),
        ek.exchange(remote.device.identity_key),
        ek.exchange(spk_b),
    ]
    if remote.one_time_prekey is not None:
        dhs.append(ek.exchange(remote.one_time_prekey))
    kem_secret = kem_ct = None
    kem_record = remote.bundle.kem_prekey
    if remote.kem_prekey is not None:
        kem_secret, kem_ct = kem.encapsulate(remote.kem_prekey)
    base_key = ek.public_key().public_bytes_raw()
    bundle = remote.bundle
    th = _transcript(
        local.certificate,
        bundle.certificate,
        base_key,
        bundle.signed_prekey,
        bundle.one_time_prekey,
        kem_record,
        kem_ct,
    )
    agreement = Agreement(
        _derive(dhs, kem_secret, th),
        _associated_data(local.certificate, bundle.certificate),
        kem_secret is not None,
    )
    params = PreKeyParameters(
        local.certificate,
        base_key,
        bundle.signed_prekey.key_id,
        bundle.one_time_prekey.key_id if bundle.one_time_prekey is not None else None,
        kem_record.kind if kem_record is not None and kem_ct is not None else None,
        kem_record.key_id if kem_record is not None and kem_ct is not None else None,
        kem_ct,
    )
    return agreement, params


def respond(
    local: DeviceKeys,
    initiator: VerifiedDevice,
    params: PreKeyParameters,
    *,
    signed_prekey: SignedPreKeyPair,
    one_time_prekey: OneTimePreKeyPair | None,
    kem_prekey: KemPreKeyPair | None,
    allow_classical: bool = False,
) -> Agreement:
    """Run the responder's side. The caller looked the prekeys up by the ids in ``params``;
    a missing or mismatched one raises :class:`UnknownPreKey`."""
    if params.kem_ciphertext is None and not allow_classical:
        raise NotPostQuantum("initiator did not use an ML-KEM prekey")
    if signed_prekey.key_id != params.signed_prekey_id:
        raise UnknownPreKey(f"signed prekey {params.signed_prekey_id} not available")
    if params.one_time_prekey_id is not None and (
        one_time_prekey is None or one_time_prekey.key_id != params.one_time_prekey_id
    ):
        raise UnknownPreKey(f"one-time prekey {params.one_time_prekey_id} not available")
    if params.kem_ciphertext is not None and (
        kem_prekey is None
        or kem_prekey.key_id != params.kem_prekey_id
        or kem_prekey.public.kind != params.kem_prekey_kind
    ):
        raise UnknownPreKey(f"ML-KEM prekey {params.kem_prekey_id} not available")
    ek = DhPublicKey.from_public_bytes(params.base_key)
    dhs = [
        signed_prekey.private_key.exchange(initiator.identity_key),
        local.identity_key.exchange(ek),
        signed_prekey.private_key.exchange(ek),
    ]
    opk_record = None
    if params.one_time_prekey_id is not None:
        assert one_time_prekey is not None
        dhs.append(one_time_prekey.private_key.exchange(ek))
        opk_record = one_time_prekey.public
    kem_secret = None
    kem_record = None
    if params.kem_ciphertext is not None:
        assert kem_prekey is not None
        kem_secret = kem_prekey.private_key.decapsulate(params.kem_ciphertext)
        kem_record = kem_prekey.public
    th = _transcript(
        params.certificate,
        local.certificate,
        params.base_key,
        signed_prekey.public,
        opk_record,
        kem_record,
        params.kem_ciphertext,
    )
    return Agreement(
        _derive(dhs, kem_secret, th),
        _associated_data(params.certificate, local.certificate),
        kem_secret is not None,
    )
