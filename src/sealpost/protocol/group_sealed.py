"""Group-sealed envelope: one ciphertext for every member device, no per-device work
(sans-I/O).

A group message already has a per-sender secret that exactly the right devices hold: the
sender's chain, shared over pairwise sessions with the certified devices of the current
members only. Each chain also carries a random 32-byte *envelope key* ``EK`` (in its
:class:`~sealpost.protocol.senderkeys.SenderKeyDistribution`), and the sender hides
``SenderCertificate || SenderKeyMessage`` from the server under it, once::

    key = HKDF-Expand-SHA256(EK, "sealpost/v1/group-sealed key", 32)
    id  = HKDF-Expand-SHA256(EK, "sealpost/v1/group-sealed id", 16)
    envelope = 0x01 0x23 | id (16) | nonce (12, random) |
               AES-256-GCM(key, nonce, inner, AAD = 0x01 0x23 | id)

The relay stores this same body for every recipient device. A recipient finds the chain by
``id`` (its envelope key was distributed to it with the chain), opens the envelope, checks
the sender certificate under the pinned server key and that it names the chain's owner,
then decrypts the SenderKeyMessage, whose Ed25519 signature proves the owner wrote it.

Compared with a per-device key wrap (:mod:`sealpost.protocol.sealed_multi`, Signal's
sealed sender v2) nothing is lost: a device that can open the envelope holds the chain and
can read the message anyway; a device the sender did not give its chain (a removed member,
a device the account key did not certify, one the server injected) can open neither. The
sender does no public-key operation per device, which is what makes a 1000-member send
cheap. The random nonce bounds a key to 2^32 envelopes, which the chain's 32-bit iteration
counter already enforces (a chain is rotated before then).
"""

from __future__ import annotations

from collections.abc import MutableSet
from typing import Final

from sealpost._errors import DecodeError
from sealpost.crypto.aead import aead_decrypt, aead_encrypt
from sealpost.crypto.kdf import hkdf_expand
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng
from sealpost.protocol.consts import WIRE_VERSION
from sealpost.protocol.sealed import split_sender
from sealpost.protocol.wire import SenderCertificate

__all__ = [
    "ENVELOPE_ID_LEN",
    "ENVELOPE_KEY_LEN",
    "GROUP_SEALED_MIN",
    "GROUP_SEALED_PREFIX",
    "envelope_id",
    "group_envelope_id",
    "open_group",
    "seal_group",
    "unseal_group",
]

GROUP_SEALED_TYPE: Final = 0x23
GROUP_SEALED_PREFIX: Final = bytes((WIRE_VERSION, GROUP_SEALED_TYPE))
ENVELOPE_KEY_LEN: Final = 32
ENVELOPE_ID_LEN: Final = 16
_NONCE_LEN: Final = 12
_HEAD: Final = 2 + ENVELOPE_ID_LEN
#: The shortest well-formed envelope (an empty inner plaintext).
GROUP_SEALED_MIN: Final = _HEAD + _NONCE_LEN + 16
_KEY_INFO: Final = b"sealpost/v1/group-sealed key"
_ID_INFO: Final = b"sealpost/v1/group-sealed id"


def _check_key(envelope_key: bytes) -> None:
    if len(envelope_key) != ENVELOPE_KEY_LEN:
        raise DecodeError(f"an envelope key is {ENVELOPE_KEY_LEN} bytes")


def envelope_id(envelope_key: bytes) -> bytes:
    """The 16-byte id under which receivers look an envelope key up."""
    _check_key(envelope_key)
    return hkdf_expand(envelope_key, info=_ID_INFO, length=ENVELOPE_ID_LEN)


def seal_group(inner: bytes, envelope_key: bytes, rng: Rng) -> bytes:
    """The envelope the relay stores, as it is, for every recipient device."""
    _check_key(envelope_key)
    head = GROUP_SEALED_PREFIX + envelope_id(envelope_key)
    key = hkdf_expand(envelope_key, info=_KEY_INFO, length=32)
    nonce = rng(_NONCE_LEN)
    return head + nonce + aead_encrypt(key, nonce, inner, head)


def group_envelope_id(body: bytes) -> bytes:
    """The envelope id of a group-sealed body (raises :class:`DecodeError` if it is not
    one)."""
    if len(body) < GROUP_SEALED_MIN or body[:2] != GROUP_SEALED_PREFIX:
        raise DecodeError("not a group-sealed envelope")
    return bytes(body[2:_HEAD])


def open_group(body: bytes, envelope_key: bytes) -> bytes:
    """The inner plaintext, or :class:`InvalidMessage` if the key or body is wrong."""
    _check_key(envelope_key)
    group_envelope_id(body)
    key = hkdf_expand(envelope_key, info=_KEY_INFO, length=32)
    nonce = body[_HEAD : _HEAD + _NONCE_LEN]
    return aead_decrypt(key, nonce, body[_HEAD + _NONCE_LEN :], body[:_HEAD])


def unseal_group(
    body: bytes,
    envelope_key: bytes,
    *,
    server_key: VerifyKey,
    now: int,
    verified: MutableSet[bytes] | None = None,
) -> tuple[SenderCertificate, bytes]:
    """``(verified sender certificate, the SenderKeyMessage it carried)``. The caller
    checks that the certificate names the owner of the chain ``envelope_key`` came with."""
    return split_sender(open_group(body, envelope_key), server_key, now, verified)
