"""AES-256-GCM with 96-bit nonces, failing with one opaque :class:`InvalidMessage`."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealpost._errors import InvalidMessage

__all__ = ["KEY_LEN", "NONCE_LEN", "TAG_LEN", "aead_decrypt", "aead_encrypt"]

KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt and authenticate; returns ciphertext with the 16-byte tag appended."""
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Authenticate and decrypt, or raise :class:`InvalidMessage` (whatever went wrong)."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except (InvalidTag, ValueError):
        raise InvalidMessage() from None
