"""Decoding and verifying prekeys a device uploads (at registration and later).

Every signed prekey must verify under the device signing key certified by the account key,
exactly as :func:`sealpost.protocol.verify_bundle` will check it on the fetching side, and
every public key must decode (ML-KEM keys pass the FIPS 203 modulus check). The server so
never hands out a bundle that an honest client would refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sealpost._errors import ProtocolError
from sealpost.crypto.dh import DhPublicKey
from sealpost.crypto.kem import KemPublicKey
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.wire import KemPreKey, KemPreKeyKind, OneTimePreKey, SignedPreKey
from sealpost.server.codec import decode_b64, get_b64_list, get_str
from sealpost.server.errors import ApiError, bad_request
from sealpost.server.storage.base import PreKeyUpload

__all__ = ["invalid_key", "parse_prekeys"]

T = TypeVar("T")


def invalid_key(message: str) -> ApiError:
    return ApiError(400, "invalid_key", message)


def _decode(data: bytes, decoder: Callable[[bytes], T], what: str) -> T:
    try:
        return decoder(data)
    except ProtocolError:
        raise invalid_key(f"{what} does not decode") from None


def _signed_prekey(data: bytes, dsk: VerifyKey) -> tuple[int, bytes]:
    spk = _decode(data, SignedPreKey.decode, "signed_prekey")
    try:
        dsk.verify(spk.signature, SignedPreKey.CONTEXT + spk.signed_part())
        DhPublicKey.from_public_bytes(spk.public_key)
    except ProtocolError:
        raise invalid_key("signed_prekey is not validly signed by the device") from None
    return spk.key_id, spk.encode()


def _kem_prekey(data: bytes, dsk: VerifyKey, kind: KemPreKeyKind, what: str) -> tuple[int, bytes]:
    kem = _decode(data, KemPreKey.decode, what)
    if kem.kind != kind:
        raise invalid_key(f"{what} has the wrong kind")
    try:
        dsk.verify(kem.signature, KemPreKey.CONTEXT + kem.signed_part())
        KemPublicKey.from_public_bytes(kem.public_key)
    except ProtocolError:
        raise invalid_key(f"{what} is not validly signed by the device") from None
    return kem.key_id, kem.encode()


def _one_time(data: bytes) -> tuple[int, bytes]:
    opk = _decode(data, OneTimePreKey.decode, "one_time_prekeys")
    try:
        DhPublicKey.from_public_bytes(opk.public_key)
    except ProtocolError:
        raise invalid_key("one_time_prekeys holds an invalid key") from None
    return opk.key_id, opk.encode()


def _unique(items: Sequence[tuple[int, bytes]], what: str) -> Sequence[tuple[int, bytes]]:
    if len({key_id for key_id, _ in items}) != len(items):
        raise bad_request(f"{what} repeats a key id")
    return items


def parse_prekeys(
    doc: dict[str, Any], dsk: VerifyKey, *, limit: int, initial: bool
) -> PreKeyUpload:
    """Read ``signed_prekey``, ``kem_last_resort``, ``one_time_prekeys`` and
    ``kem_one_time_prekeys`` (all base64 wire bytes). ``initial`` requires the first two."""
    spk = lr = None
    if initial or "signed_prekey" in doc:
        spk = _signed_prekey(decode_b64(get_str(doc, "signed_prekey"), "signed_prekey"), dsk)
    if initial or "kem_last_resort" in doc:
        raw = decode_b64(get_str(doc, "kem_last_resort"), "kem_last_resort")
        lr = _kem_prekey(raw, dsk, KemPreKeyKind.LAST_RESORT, "kem_last_resort")
    one_time = [_one_time(d) for d in get_b64_list(doc, "one_time_prekeys", limit=limit)]
    kem_one_time = [
        _kem_prekey(d, dsk, KemPreKeyKind.ONE_TIME, "kem_one_time_prekeys")
        for d in get_b64_list(doc, "kem_one_time_prekeys", limit=limit)
    ]
    return PreKeyUpload(
        signed_prekey=spk,
        kem_last_resort=lr,
        one_time=_unique(one_time, "one_time_prekeys"),
        kem_one_time=_unique(kem_one_time, "kem_one_time_prekeys"),
    )
