"""Thin wrappers over pyca/cryptography and the standard library's OpenSSL hashes.

Nothing here implements a primitive: X25519, Ed25519, ML-KEM-768, AES-256-GCM and HKDF come
from pyca/cryptography, HMAC-SHA256 and SHA-256 from OpenSSL via :mod:`hmac`/:mod:`hashlib`.
The wrappers fix sizes, inject randomness, hide secrets from ``repr`` and translate every
failure into a :class:`sealpost.protocol.errors.ProtocolError` subclass.
"""

from sealpost.crypto.aead import aead_decrypt, aead_encrypt
from sealpost.crypto.dh import DhPrivateKey, DhPublicKey
from sealpost.crypto.hpke import HPKE, Hpke, Sealer, hpke_open
from sealpost.crypto.kdf import hkdf, hkdf_expand, hmac_sha256, sha256
from sealpost.crypto.kem import ML_KEM_768, Kem, KemPrivateKey, KemPublicKey, MlKem768
from sealpost.crypto.sign import SigningKey, VerifyKey

__all__ = [
    "HPKE",
    "ML_KEM_768",
    "DhPrivateKey",
    "DhPublicKey",
    "Hpke",
    "Kem",
    "KemPrivateKey",
    "KemPublicKey",
    "MlKem768",
    "Sealer",
    "SigningKey",
    "VerifyKey",
    "aead_decrypt",
    "aead_encrypt",
    "hkdf",
    "hkdf_expand",
    "hmac_sha256",
    "hpke_open",
    "sha256",
]
