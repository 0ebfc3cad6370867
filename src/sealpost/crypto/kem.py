"""ML-KEM-768 (FIPS 203) key pairs, and the :class:`Kem` seam for encapsulation.

pyca's ``encapsulate()`` draws its randomness internally and takes no RNG, so encapsulation
sits behind the small :class:`Kem` protocol: production code uses :data:`ML_KEM_768`, and
tests that need reproducible output (our known-answer vectors) pass a deterministic one.
Decapsulation is deterministic and always the real thing.

Private keys are stored and rebuilt from their 64-byte seed (d || z), the compact form
FIPS 203 section 7.1 allows. Public keys are checked on import (FIPS 203 section 7.2
modulus check): a malformed key raises :class:`InvalidKey`.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.mlkem import (
    MLKEM768PrivateKey,
    MLKEM768PublicKey,
)

from sealpost._errors import DecodeError, InvalidKey, InvalidMessage
from sealpost.entropy import Rng

__all__ = [
    "MLKEM768_CIPHERTEXT_LEN",
    "MLKEM768_PUBLIC_LEN",
    "MLKEM768_SEED_LEN",
    "MLKEM768_SHARED_LEN",
    "ML_KEM_768",
    "Kem",
    "KemPrivateKey",
    "KemPublicKey",
    "MlKem768",
]

MLKEM768_PUBLIC_LEN = 1184
MLKEM768_CIPHERTEXT_LEN = 1088
MLKEM768_SEED_LEN = 64
MLKEM768_SHARED_LEN = 32


class KemPublicKey:
    """An ML-KEM-768 encapsulation key (1184 bytes)."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: MLKEM768PublicKey, raw: bytes) -> None:
        self._key = key
        self._raw = raw

    @classmethod
    def from_public_bytes(cls, data: bytes) -> KemPublicKey:
        if len(data) != MLKEM768_PUBLIC_LEN:
            raise DecodeError(
                f"ML-KEM-768 public key must be {MLKEM768_PUBLIC_LEN} bytes, got {len(data)}"
            )
        try:
            return cls(MLKEM768PublicKey.from_public_bytes(data), bytes(data))
        except ValueError:
            raise InvalidKey("ML-KEM-768 public key fails the modulus check") from None

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KemPublicKey) and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"KemPublicKey({self._raw[:8].hex()}…)"


class KemPrivateKey:
    """An ML-KEM-768 decapsulation key, held as its 64-byte seed. ``repr`` hides it."""

    __slots__ = ("_key", "_public", "_seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != MLKEM768_SEED_LEN:
            raise DecodeError(f"ML-KEM-768 seed must be {MLKEM768_SEED_LEN} bytes")
        self._seed = bytes(seed)
        self._key = MLKEM768PrivateKey.from_seed_bytes(self._seed)
        pub = self._key.public_key()
        self._public = KemPublicKey(pub, pub.public_bytes_raw())

    @classmethod
    def generate(cls, rng: Rng) -> KemPrivateKey:
        return cls(rng(MLKEM768_SEED_LEN))

    @classmethod
    def from_seed_bytes(cls, seed: bytes) -> KemPrivateKey:
        return cls(seed)

    def seed_bytes(self) -> bytes:
        return self._seed

    def public_key(self) -> KemPublicKey:
        return self._public

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """Return the shared secret. ML-KEM's implicit rejection means a tampered ciphertext
        yields an unrelated secret rather than an error; a wrong length is an error."""
        if len(ciphertext) != MLKEM768_CIPHERTEXT_LEN:
            raise InvalidMessage()
        try:
            return self._key.decapsulate(ciphertext)
        except ValueError:
            raise InvalidMessage() from None

    def __repr__(self) -> str:
        return f"KemPrivateKey(public={self._public._raw[:8].hex()}…, seed=<hidden>)"


class Kem(Protocol):
    """Encapsulation to a public key: returns ``(shared_secret, ciphertext)``."""

    def encapsulate(self, public_key: KemPublicKey) -> tuple[bytes, bytes]: ...


class MlKem768:
    """The real ML-KEM-768 encapsulation (randomness from OpenSSL's CSPRNG)."""

    def encapsulate(self, public_key: KemPublicKey) -> tuple[bytes, bytes]:
        shared, ciphertext = public_key._key.encapsulate()
        return shared, ciphertext


#: The production :class:`Kem`.
ML_KEM_768: Kem = MlKem768()
