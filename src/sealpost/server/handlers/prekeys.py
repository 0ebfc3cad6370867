"""Decoding and verifying prekeys a device uploads (at registration and later).

Every signed prekey must verify under the device signing key certified by the account key,
exactly as :func:`sealpost.protocol.verify_bundle` will check it on the fetching side, and
every public key must decode (ML-KEM keys pass the FIPS 203 modulus check). The server so
never hands out a bundle that an honest client would refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from sealpost._errors import ProtocolError
from sealpost.crypto.dh import DhPublicKey
from sealpost.crypto.kem import KemPublicKey
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.wire import KemPreKey, KemPreKeyKind, OneTimePreKey, SignedPreKey
from sealpost.server.errors import ApiError, bad_request, too_large
from sealpost.server.storage.base import PreKeyUpload

__all__ = ["invalid_key", "parse_prekeys"]

T = TypeVar("T")


class _HasPreKeys(Protocol):
    """What :class:`~sealpost.server.schema.UploadPreKeys`, a registration and an added
    device have in common."""

    @property
    def signed_prekey(self) -> bytes | None: ...
    @property
    def kem_last_resort(self) -> bytes | None: ...
    @property
    def one_time_prekeys(self) -> list[bytes]: ...
    @property
    def kem_one_time_prekeys(self) -> list[bytes]: ...


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


def parse_prekeys(body: _HasPreKeys, dsk: VerifyKey, *, limit: int) -> PreKeyUpload:
    """Verify the decoded ``signed_prekey``, ``kem_last_resort``, ``one_time_prekeys`` and
    ``kem_one_time_prekeys`` (wire bytes; which are required is the body type's business),
    at most ``limit`` of each list."""
    for what, items in (
        ("one_time_prekeys", body.one_time_prekeys),
        ("kem_one_time_prekeys", body.kem_one_time_prekeys),
    ):
        if len(items) > limit:
            raise too_large(f"{what} holds more than {limit} items")
    spk = None if body.signed_prekey is None else _signed_prekey(body.signed_prekey, dsk)
    lr = None
    if body.kem_last_resort is not None:
        lr = _kem_prekey(body.kem_last_resort, dsk, KemPreKeyKind.LAST_RESORT, "kem_last_resort")
    one_time = [_one_time(d) for d in body.one_time_prekeys]
    kem_one_time = [
        _kem_prekey(d, dsk, KemPreKeyKind.ONE_TIME, "kem_one_time_prekeys")
        for d in body.kem_one_time_prekeys
    ]
    return PreKeyUpload(
        signed_prekey=spk,
        kem_last_resort=lr,
        one_time=_unique(one_time, "one_time_prekeys"),
        kem_one_time=_unique(kem_one_time, "kem_one_time_prekeys"),
    )
