"""X25519 (RFC 7748) key pairs and Diffie-Hellman, with the all-zero output refused.

Private keys are built from injected random bytes (``rng(32)``), never generated inside, so
the protocol is reproducible under a seeded RNG. A shared secret that is all zeros (the peer
sent a low-order point) is refused with :class:`InvalidKey`, as RFC 7748 section 6.1 allows
and a messenger must.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sealpost._errors import DecodeError, InvalidKey
from sealpost.entropy import Rng

__all__ = ["X25519_LEN", "DhPrivateKey", "DhPublicKey"]

X25519_LEN = 32


class DhPublicKey:
    """An X25519 public key (32 bytes, RFC 7748 encoding)."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: X25519PublicKey, raw: bytes) -> None:
        self._key = key
        self._raw = raw

    @classmethod
    def from_public_bytes(cls, data: bytes) -> DhPublicKey:
        if len(data) != X25519_LEN:
            raise DecodeError(f"X25519 public key must be {X25519_LEN} bytes, got {len(data)}")
        return cls(X25519PublicKey.from_public_bytes(data), bytes(data))

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DhPublicKey) and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"DhPublicKey({self._raw.hex()})"


class DhPrivateKey:
    """An X25519 private key. Its ``repr`` never shows the secret."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        pub = key.public_key()
        self._public = DhPublicKey(pub, pub.public_bytes_raw())

    @classmethod
    def generate(cls, rng: Rng) -> DhPrivateKey:
        return cls.from_private_bytes(rng(X25519_LEN))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> DhPrivateKey:
        if len(data) != X25519_LEN:
            raise DecodeError(f"X25519 private key must be {X25519_LEN} bytes")
        return cls(X25519PrivateKey.from_private_bytes(data))

    def private_bytes_raw(self) -> bytes:
        return self._key.private_bytes_raw()

    def public_key(self) -> DhPublicKey:
        return self._public

    def exchange(self, peer: DhPublicKey) -> bytes:
        """X25519(self, peer); :class:`InvalidKey` if the result would be all zeros."""
        try:
            return self._key.exchange(peer._key)
        except ValueError:
            # pyca refuses low-order points (all-zero shared secret).
            raise InvalidKey("X25519 public key has low order") from None

    def __repr__(self) -> str:
        return f"DhPrivateKey(public={self._public.public_bytes_raw().hex()}, private=<hidden>)"
