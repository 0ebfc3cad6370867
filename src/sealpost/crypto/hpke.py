"""HPKE (RFC 9180) base mode, single shot, from pyca/cryptography.

Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 — exactly the suite of
RFC 9180 Appendix A.2, so the published vectors cover it. The output is ``enc`` (32 bytes,
the ephemeral public key) followed by the AEAD ciphertext with its 16-byte tag.

pyca's ``encrypt()`` draws the ephemeral key internally and takes no RNG, so sealing sits
behind the small :class:`Sealer` protocol (as encapsulation does behind
:class:`~sealpost.crypto.kem.Kem`); opening is deterministic and always the real thing.
"""

from __future__ import annotations

from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from sealpost._errors import InvalidMessage
from sealpost.crypto.dh import DhPrivateKey, DhPublicKey

__all__ = ["HPKE", "HPKE_ENC_LEN", "HPKE_OVERHEAD", "Hpke", "Sealer", "hpke_open"]

HPKE_ENC_LEN: Final = 32
HPKE_OVERHEAD: Final = HPKE_ENC_LEN + 16
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


class Sealer(Protocol):
    """Seals ``plaintext`` to ``recipient``; returns ``enc || ciphertext``."""

    def seal(self, plaintext: bytes, recipient: DhPublicKey, info: bytes) -> bytes: ...


class Hpke:
    """The real HPKE sealer (ephemeral key from OpenSSL's CSPRNG)."""

    def seal(self, plaintext: bytes, recipient: DhPublicKey, info: bytes) -> bytes:
        return _SUITE.encrypt(plaintext, recipient._key, info=info)


#: The production :class:`Sealer`.
HPKE: Sealer = Hpke()


def hpke_open(sealed: bytes, recipient: DhPrivateKey, info: bytes) -> bytes:
    """Open ``enc || ciphertext`` with the recipient's key, or raise :class:`InvalidMessage`."""
    if len(sealed) < HPKE_OVERHEAD:
        raise InvalidMessage()
    try:
        return _SUITE.decrypt(sealed, recipient._key, info=info)
    except (InvalidTag, ValueError):
        raise InvalidMessage() from None
