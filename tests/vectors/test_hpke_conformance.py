"""HPKE conformance: RFC 9180 Appendix A vectors for the suite sealed sender uses,
DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 + ChaCha20-Poly1305 (A.2, base mode).

Our wrapper opens single-shot messages with empty associated data, while every RFC
encryption carries AAD ("Count-N"); so the vectors are checked against the very pyca suite
object our wrapper uses (``sealpost.crypto.hpke._SUITE``) through pyca's private AAD entry
point (tests only), and our wrapper itself is checked on key derivation, on refusing the
vector without its AAD, and on its own round trip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.bindings._rust import openssl as rust_openssl

from sealpost.crypto import DhPrivateKey, hpke_open
from sealpost.crypto.hpke import _SUITE, HPKE
from sealpost.protocol import InvalidMessage

BASE, CHACHA20_POLY1305 = 0, 3


def _our_suite_vectors(vectors_dir: Path) -> list[dict[str, Any]]:
    data = json.loads((vectors_dir / "hpke-rfc9180-x25519-sha256.json").read_text())
    chosen = [
        v
        for v in data["vectors"]
        if int(v["mode"]) == BASE and int(v["aead_id"]) == CHACHA20_POLY1305
    ]
    assert chosen, "RFC 9180 A.2 base-mode vector missing from the file"
    return chosen


def test_recipient_key_derivation(vectors_dir: Path) -> None:
    for vector in _our_suite_vectors(vectors_dir):
        key = DhPrivateKey.from_private_bytes(bytes.fromhex(vector["skRm"]))
        assert key.public_key().public_bytes_raw().hex() == vector["pkRm"]


def test_first_encryption_opens_with_our_suite(vectors_dir: Path) -> None:
    for vector in _our_suite_vectors(vectors_dir):
        first = next(e for e in vector["encryptions"] if int(e["sequence_number"]) == 0)
        key = DhPrivateKey.from_private_bytes(bytes.fromhex(vector["skRm"]))
        sealed = bytes.fromhex(vector["enc"]) + bytes.fromhex(first["ct"])
        opened = rust_openssl.hpke._decrypt_with_aad(
            _SUITE,
            sealed,
            key._key,
            info=bytes.fromhex(vector["info"]),
            aad=bytes.fromhex(first["aad"]),
        )
        assert opened.hex() == first["pt"]
        # With the wrong AAD (ours is empty) the same bytes must not open.
        with pytest.raises(InvalidMessage):
            hpke_open(sealed, key, bytes.fromhex(vector["info"]))


def test_wrapper_round_trip_and_info_binding() -> None:
    recipient = DhPrivateKey.from_private_bytes(bytes(range(32)))
    sealed = HPKE.seal(b"payload", recipient.public_key(), b"info")
    assert hpke_open(sealed, recipient, b"info") == b"payload"
    with pytest.raises(InvalidMessage):
        hpke_open(sealed, recipient, b"other info")
    with pytest.raises(InvalidMessage):
        hpke_open(sealed[:20], recipient, b"info")
