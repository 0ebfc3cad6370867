"""Ed25519 (RFC 8032) signing keys, failing with :class:`BadSignature`.

Every signature sealpost makes is over a domain-separated message (a context string naming
what is signed, then the fields), so a signature for one purpose is never valid for another.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from sealpost._errors import BadSignature, DecodeError
from sealpost.entropy import Rng

__all__ = ["ED25519_LEN", "SIGNATURE_LEN", "SigningKey", "VerifyKey"]

ED25519_LEN = 32
SIGNATURE_LEN = 64


class VerifyKey:
    """An Ed25519 public key."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: Ed25519PublicKey, raw: bytes) -> None:
        self._key = key
        self._raw = raw

    @classmethod
    def from_public_bytes(cls, data: bytes) -> VerifyKey:
        if len(data) != ED25519_LEN:
            raise DecodeError(f"Ed25519 public key must be {ED25519_LEN} bytes, got {len(data)}")
        try:
            return cls(Ed25519PublicKey.from_public_bytes(data), bytes(data))
        except ValueError:
            raise DecodeError("invalid Ed25519 public key encoding") from None

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return if ``signature`` is valid over ``message``; else raise :class:`BadSignature`."""
        if len(signature) != SIGNATURE_LEN:
            raise BadSignature("signature has the wrong length")
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise BadSignature("signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self._raw.hex()})"


class SigningKey:
    """An Ed25519 private key. Its ``repr`` never shows the secret."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        pub = key.public_key()
        self._public = VerifyKey(pub, pub.public_bytes_raw())

    @classmethod
    def generate(cls, rng: Rng) -> SigningKey:
        return cls.from_private_bytes(rng(ED25519_LEN))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> SigningKey:
        if len(data) != ED25519_LEN:
            raise DecodeError(f"Ed25519 private key must be {ED25519_LEN} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(data))

    def private_bytes_raw(self) -> bytes:
        return self._key.private_bytes_raw()

    def public_key(self) -> VerifyKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"SigningKey(public={self._public.public_bytes_raw().hex()}, private=<hidden>)"
