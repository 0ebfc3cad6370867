"""Key derivation: HKDF-SHA256 (RFC 5869) and HMAC-SHA256.

HKDF comes from pyca/cryptography. HMAC-SHA256 and SHA-256 come from the standard
library's ``hmac.digest`` / ``hashlib``, which call OpenSSL's implementations: the same
primitive pyca would call, without the per-call object overhead that matters in the
ratchet's hot path.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

__all__ = ["HASH_LEN", "hkdf", "hkdf_expand", "hmac_sha256", "sha256"]

HASH_LEN = 32
_SHA256 = hashes.SHA256()


def hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Extract-and-Expand with SHA-256 (RFC 5869 section 2)."""
    return HKDF(_SHA256, length, salt, info).derive(ikm)


def hkdf_expand(prk: bytes, *, info: bytes, length: int) -> bytes:
    """HKDF-Expand only, for a key that is already uniformly random (RFC 5869 section 2.3)."""
    return HKDFExpand(_SHA256, length, info).derive(prk)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104)."""
    return hmac.digest(key, data, "sha256")


def sha256(data: bytes) -> bytes:
    """SHA-256."""
    return hashlib.sha256(data).digest()
