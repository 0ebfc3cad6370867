"""Multi-recipient sealed sender: one shared ciphertext and a small key wrap per device,
as Signal's sealed sender v2 (sans-I/O).

Legacy: clients now send group messages as group-sealed envelopes
(:mod:`sealpost.protocol.group_sealed`, no per-device work). This form is still read, for
messages queued across an upgrade, and the relay still accepts it.

A group message goes to every member device. Sealing it with HPKE once per device (what
:mod:`sealpost.protocol.sealed` does for a 1:1 message) would cost two X25519 operations
and a full copy of the message per device. Instead the sender picks a random content key
``K`` and one ephemeral X25519 key ``e`` and sends the server::

    shared = E (32, e's public key) | AES-256-GCM(K, nonce = 0, inner, AAD = E)
    for each recipient device i with identity key DIK_i:
        kek_i  = HKDF-SHA256(X25519(e, DIK_i), salt = E,
                             info = "sealpost/v1/multi-sealed" || DIK_i, 32)
        wrap_i = AES-256-GCM(kek_i, nonce = 0, K, AAD = E)              (48 bytes)

``K`` and every ``kek_i`` encrypt exactly one message each, so the fixed nonce is safe.
The server stores, for each device, ``0x01 0x22 | wrap_i | shared`` (it builds this
itself: :func:`assemble`) and learns nothing else than for a 1:1 sealed message: the
destination devices and the length.

``inner`` is ``SenderCertificate || SenderKeyMessage``. A recipient opens its wrap, then
the shared part, and checks the sender certificate under the pinned server key
(:func:`unseal_multi`); the caller then decrypts the SenderKeyMessage with the chain it
holds for the *certificate's* device, whose Ed25519 signature proves that device wrote it.
A device that was not wrapped for cannot open the message, whatever the server does.
"""

from __future__ import annotations

from collections.abc import MutableSet, Sequence
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealpost._errors import DecodeError
from sealpost.crypto.aead import aead_decrypt
from sealpost.crypto.dh import DhPrivateKey, DhPublicKey
from sealpost.crypto.kdf import hkdf
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng
from sealpost.protocol.consts import WIRE_VERSION
from sealpost.protocol.sealed import split_sender
from sealpost.protocol.wire import SenderCertificate

__all__ = [
    "MULTI_SEALED_PREFIX",
    "WRAP_LEN",
    "assemble",
    "open_multi",
    "seal_multi",
    "unseal_multi",
]

MULTI_SEALED_TYPE: Final = 0x22
MULTI_SEALED_PREFIX: Final = bytes((WIRE_VERSION, MULTI_SEALED_TYPE))
WRAP_LEN: Final = 48
_INFO: Final = b"sealpost/v1/multi-sealed"
_NONCE: Final = bytes(12)


def _kek(shared_secret: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return hkdf(shared_secret, salt=ephemeral, info=_INFO + recipient, length=32)


def seal_multi(
    inner: bytes, recipients: Sequence[DhPublicKey], rng: Rng
) -> tuple[bytes, list[bytes]]:
    """``(shared, [wrap for each recipient, in order])``."""
    content_key = rng(32)
    ephemeral = X25519PrivateKey.from_private_bytes(rng(32))
    e_public = ephemeral.public_key().public_bytes_raw()
    shared = e_public + AESGCM(content_key).encrypt(_NONCE, inner, e_public)
    wraps = []
    for recipient in recipients:
        raw = recipient.public_bytes_raw()
        try:
            secret = ephemeral.exchange(X25519PublicKey.from_public_bytes(raw))
        except ValueError:
            raise DecodeError("a recipient's identity key has low order") from None
        wraps.append(AESGCM(_kek(secret, e_public, raw)).encrypt(_NONCE, content_key, e_public))
    return shared, wraps


def assemble(wrap: bytes, shared: bytes) -> bytes:
    """What the server stores for one recipient device."""
    if len(wrap) != WRAP_LEN:
        raise DecodeError(f"a key wrap is {WRAP_LEN} bytes")
    return MULTI_SEALED_PREFIX + wrap + shared


def open_multi(body: bytes, identity_key: DhPrivateKey) -> bytes:
    """The inner plaintext of a multi-sealed body wrapped for this device."""
    head = 2 + WRAP_LEN + 32
    if len(body) < head + 16 or body[:2] != MULTI_SEALED_PREFIX:
        raise DecodeError("not a multi-sealed envelope")
    wrap, e_public = body[2 : 2 + WRAP_LEN], body[2 + WRAP_LEN : head]
    secret = identity_key.exchange(DhPublicKey.from_public_bytes(e_public))
    own = identity_key.public_key().public_bytes_raw()
    content_key = aead_decrypt(_kek(secret, e_public, own), _NONCE, wrap, e_public)
    return aead_decrypt(content_key, _NONCE, body[head:], e_public)


def unseal_multi(
    body: bytes,
    identity_key: DhPrivateKey,
    *,
    server_key: VerifyKey,
    now: int,
    verified: MutableSet[bytes] | None = None,
) -> tuple[SenderCertificate, bytes]:
    """``(verified sender certificate, the SenderKeyMessage it carried)``."""
    return split_sender(open_multi(body, identity_key), server_key, now, verified)
