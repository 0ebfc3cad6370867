"""Our crypto wrappers against independently published vectors (../shared/vectors).

RFC 5869 (HKDF), RFC 7748 (X25519), RFC 8032 (Ed25519), Wycheproof (HKDF, X25519, Ed25519,
AES-GCM, ML-KEM-768) and CCTV (ML-KEM modulus check). Each test goes through the
``sealpost.crypto`` wrapper, so what is checked is what the protocol calls.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from sealpost.crypto import (
    DhPrivateKey,
    DhPublicKey,
    KemPrivateKey,
    KemPublicKey,
    SigningKey,
    VerifyKey,
    aead_decrypt,
    aead_encrypt,
    hkdf,
    hkdf_expand,
)
from sealpost.protocol import (
    BadSignature,
    DecodeError,
    InvalidKey,
    InvalidMessage,
    ProtocolError,
)


def _json(vectors_dir: Path, name: str) -> Any:
    return json.loads((vectors_dir / name).read_text())


def _wycheproof_tests(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(group, test) for group in data["testGroups"] for test in group["tests"]]


def _find(obj: Any, pred: Any) -> list[Any]:
    """Every dict nested in ``obj`` for which ``pred`` holds (the small-KAT file nests)."""
    found = []
    if isinstance(obj, dict):
        if pred(obj):
            found.append(obj)
        for value in obj.values():
            found += _find(value, pred)
    elif isinstance(obj, list):
        for value in obj:
            found += _find(value, pred)
    return found


# ------------------------------------------------------------------ HKDF


def test_hkdf_rfc5869(vectors_dir: Path) -> None:
    kats = _json(vectors_dir, "rfc-small-kats.json")
    cases = _find(
        kats, lambda d: "okm" in {k.lower() for k in d} and "ikm" in {k.lower() for k in d}
    )
    assert len(cases) >= 3, "RFC 5869 A.1-A.3 not found"
    for case in cases:
        c = {k.lower(): v for k, v in case.items()}
        okm = hkdf(
            bytes.fromhex(c["ikm"]),
            salt=bytes.fromhex(c.get("salt", "")),
            info=bytes.fromhex(c.get("info", "")),
            length=int(c.get("l", c.get("length", len(c["okm"]) // 2))),
        )
        assert okm.hex() == c["okm"].lower()
        if "prk" in c:
            expanded = hkdf_expand(
                bytes.fromhex(c["prk"]), info=bytes.fromhex(c.get("info", "")), length=len(okm)
            )
            assert expanded == okm


def test_hkdf_wycheproof(vectors_dir: Path) -> None:
    tests = _wycheproof_tests(_json(vectors_dir, "wycheproof/hkdf_sha256_test.json"))
    assert len(tests) > 50
    for _, t in tests:
        args = (bytes.fromhex(t["ikm"]), bytes.fromhex(t["salt"]), bytes.fromhex(t["info"]))
        if t["result"] == "invalid":
            # pyca refuses over-long output (> 255 * 32) with ValueError; the wrapper is
            # called only with fixed lengths, so it passes that through.
            with pytest.raises(ValueError):
                hkdf(args[0], salt=args[1], info=args[2], length=t["size"])
        else:
            okm = hkdf(args[0], salt=args[1], info=args[2], length=t["size"])
            assert okm.hex() == t["okm"], t["tcId"]


# ------------------------------------------------------------------ X25519


def test_x25519_rfc7748(vectors_dir: Path) -> None:
    kats = _json(vectors_dir, "rfc-small-kats.json")
    steps = _find(kats, lambda d: {"scalar", "u"} <= set(d) and ("output" in d or "out" in d))
    assert steps, "RFC 7748 section 5.2 vectors not found"
    for s in steps:
        out = DhPrivateKey.from_private_bytes(bytes.fromhex(s["scalar"])).exchange(
            DhPublicKey.from_public_bytes(bytes.fromhex(s["u"]))
        )
        assert out.hex() == s.get("output", s.get("out"))


def test_x25519_iterated(vectors_dir: Path) -> None:
    it = _json(vectors_dir, "rfc-small-kats.json")["x25519_rfc7748_iterated"]
    k, u = bytes.fromhex(it["start_k"]), bytes.fromhex(it["start_u"])
    for i in range(1, 1001):  # the 1,000,000-step value takes minutes; checked upstream
        k, u = DhPrivateKey.from_private_bytes(k).exchange(DhPublicKey.from_public_bytes(u)), k
        if i in (1, 1000):
            assert k.hex() == it[f"after_{i}"]


def test_x25519_rfc7748_diffie_hellman(vectors_dir: Path) -> None:
    v = _json(vectors_dir, "rfc-small-kats.json")["x25519_rfc7748_section6_1"]
    alice = DhPrivateKey.from_private_bytes(bytes.fromhex(v["alice_private"]))
    bob = DhPrivateKey.from_private_bytes(bytes.fromhex(v["bob_private"]))
    assert alice.public_key().public_bytes_raw().hex() == v["alice_public"]
    assert bob.public_key().public_bytes_raw().hex() == v["bob_public"]
    assert alice.exchange(bob.public_key()).hex() == v["shared"]
    assert bob.exchange(alice.public_key()).hex() == v["shared"]


def test_x25519_wycheproof(vectors_dir: Path) -> None:
    tests = _wycheproof_tests(_json(vectors_dir, "wycheproof/x25519_test.json"))
    assert len(tests) > 500
    for _, t in tests:
        private = DhPrivateKey.from_private_bytes(bytes.fromhex(t["private"]))
        public = DhPublicKey.from_public_bytes(bytes.fromhex(t["public"]))
        if t["shared"] == "00" * 32:
            with pytest.raises(InvalidKey):
                private.exchange(public)
        elif t["result"] == "valid":
            assert private.exchange(public).hex() == t["shared"], t["tcId"]
        else:
            with contextlib.suppress(InvalidKey):
                assert private.exchange(public).hex() == t["shared"], t["tcId"]


# ------------------------------------------------------------------ Ed25519


def test_ed25519_rfc8032(vectors_dir: Path) -> None:
    kats = _json(vectors_dir, "rfc-small-kats.json")
    cases = _find(
        kats,
        lambda d: (
            {k.lower() for k in d} >= {"secret_key", "public_key", "signature"}
            or {k.lower() for k in d} >= {"sk", "pk", "sig"}
        ),
    )
    assert len(cases) >= 3, "RFC 8032 section 7.1 tests not found"
    for case in cases:
        c = {k.lower(): v for k, v in case.items()}
        sk = bytes.fromhex(c.get("secret_key", c.get("sk", "")))
        pk = bytes.fromhex(c.get("public_key", c.get("pk", "")))
        msg = bytes.fromhex(c.get("message", c.get("msg", "")))
        sig = bytes.fromhex(c.get("signature", c.get("sig", "")))
        key = SigningKey.from_private_bytes(sk[:32])
        assert key.public_key().public_bytes_raw() == pk
        assert key.sign(msg) == sig
        VerifyKey.from_public_bytes(pk).verify(sig, msg)


def test_ed25519_wycheproof(vectors_dir: Path) -> None:
    tests = _wycheproof_tests(_json(vectors_dir, "wycheproof/ed25519_test.json"))
    assert len(tests) > 100
    for group, t in tests:
        pk = bytes.fromhex(group["publicKey"]["pk"])
        sig, msg = bytes.fromhex(t["sig"]), bytes.fromhex(t["msg"])
        if t["result"] == "valid":
            VerifyKey.from_public_bytes(pk).verify(sig, msg)
        else:
            with pytest.raises((BadSignature, DecodeError)):
                VerifyKey.from_public_bytes(pk).verify(sig, msg)


def test_ed25519_cctv_edge_cases_raise_only_our_errors(vectors_dir: Path) -> None:
    cases = _json(vectors_dir, "cctv-ed25519/ed25519vectors.json")
    assert len(cases) > 100
    for case in cases:
        with contextlib.suppress(BadSignature, DecodeError):
            VerifyKey.from_public_bytes(bytes.fromhex(case["key"])).verify(
                bytes.fromhex(case["sig"]), case["msg"].encode()
            )


# ------------------------------------------------------------------ AES-256-GCM


def test_aes_gcm_wycheproof(vectors_dir: Path) -> None:
    tests = [
        (g, t)
        for g, t in _wycheproof_tests(_json(vectors_dir, "wycheproof/aes_gcm_test.json"))
        if g["ivSize"] == 96 and g["tagSize"] == 128
    ]
    assert len(tests) > 100
    for _, t in tests:
        key, iv = bytes.fromhex(t["key"]), bytes.fromhex(t["iv"])
        aad, msg = bytes.fromhex(t["aad"]), bytes.fromhex(t["msg"])
        sealed = bytes.fromhex(t["ct"] + t["tag"])
        if t["result"] == "valid":
            assert aead_encrypt(key, iv, msg, aad) == sealed, t["tcId"]
            assert aead_decrypt(key, iv, sealed, aad) == msg
        else:
            with pytest.raises(InvalidMessage):
                aead_decrypt(key, iv, sealed, aad)


# ------------------------------------------------------------------ ML-KEM-768


def test_mlkem768_wycheproof(vectors_dir: Path) -> None:
    tests = _wycheproof_tests(_json(vectors_dir, "wycheproof/mlkem_768_test.json"))
    valid = 0
    for _, t in tests:
        if "seed" not in t:
            continue
        seed, c = bytes.fromhex(t["seed"]), bytes.fromhex(t.get("c", ""))
        if t["result"] == "valid":
            key = KemPrivateKey.from_seed_bytes(seed)
            assert key.public_key().public_bytes_raw().hex() == t["ek"], t["tcId"]
            assert key.decapsulate(c).hex() == t["K"], t["tcId"]
            valid += 1
        else:
            with pytest.raises(ProtocolError):
                KemPrivateKey.from_seed_bytes(seed).decapsulate(c)
    assert valid > 100


def test_mlkem768_cctv_modulus_keys_rejected(vectors_dir: Path) -> None:
    lines = gzip.decompress(
        (vectors_dir / "cctv-mlkem/modulus-ML-KEM-768.txt.gz").read_bytes()
    ).split()
    assert len(lines) == 780
    for line in lines:
        with pytest.raises(InvalidKey):
            KemPublicKey.from_public_bytes(bytes.fromhex(line.decode()))


def test_mlkem768_expanded_key_vectors_are_out_of_reach() -> None:
    # strcmp and semi-expanded decapsulation vectors use the 2400-byte expanded key; pyca
    # loads ML-KEM private keys from their 64-byte seed only, as do we.
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

    loaders = [n for n in dir(MLKEM768PrivateKey) if "expanded" in n.lower()]
    if not loaders:
        pytest.skip("pyca cannot load an expanded ML-KEM decapsulation key (seed only)")
    pytest.fail(f"pyca now offers {loaders}: test the CCTV strcmp vectors for real")
