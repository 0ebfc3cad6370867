"""The sealpost wire format, version 1: every structure that crosses the network.

Each structure starts with two bytes, the wire version (``0x01``) and a type code, followed
by fixed-size fields in network byte order (big-endian). Keys and signatures have fixed
sizes, so nearly everything is fixed-length; the one variable part of a message, its
ciphertext, runs to the end of the buffer and is bounded. docs/PROTOCOL.md describes every
byte.

Decoding is strict: a wrong version, an unknown type, a wrong length, a bad flag bit or a
trailing byte raises :class:`DecodeError` (or :class:`UnsupportedVersion`). No input can
make it raise anything else, loop or allocate more than its input::

    >>> from sealpost.protocol import wire
    >>> msg = wire.decode(data)        # doctest: +SKIP
    >>> isinstance(msg, wire.RatchetMessage)   # doctest: +SKIP

Structures hold public bytes only; turning them into key objects (which validates curve
points and the ML-KEM modulus) happens where they are used, in :mod:`.bundle` and
:mod:`.pqxdh`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final

from sealpost._errors import DecodeError, InvalidMessage, UnsupportedVersion
from sealpost.crypto.aead import TAG_LEN
from sealpost.crypto.kem import MLKEM768_CIPHERTEXT_LEN, MLKEM768_PUBLIC_LEN
from sealpost.crypto.sign import SigningKey, VerifyKey
from sealpost.protocol.consts import MAX_WIRE_MESSAGE, WIRE_VERSION

__all__ = [
    "ACCOUNT_ID_LEN",
    "DEVICE_CERTIFICATE_LEN",
    "DEVICE_REVOCATION_LEN",
    "KEM_PREKEY_LEN",
    "ONE_TIME_PREKEY_LEN",
    "RATCHET_HEADER_LEN",
    "SEALED_ENVELOPE_MAX",
    "SENDER_CERTIFICATE_LEN",
    "SIGNED_PREKEY_LEN",
    "DeviceCertificate",
    "DeviceRevocation",
    "KemPreKey",
    "KemPreKeyKind",
    "OneTimePreKey",
    "PreKeyBundle",
    "PreKeyMessage",
    "RatchetMessage",
    "SealedEnvelope",
    "SenderCertificate",
    "SignedPreKey",
    "WireMessage",
    "WireType",
    "decode",
]

ACCOUNT_ID_LEN: Final = 16
_KEY: Final = 32
_SIG: Final = 64


class WireType(IntEnum):
    """The type byte that follows the version byte."""

    DEVICE_CERTIFICATE = 0x01
    SIGNED_PREKEY = 0x02
    KEM_PREKEY = 0x03
    ONE_TIME_PREKEY = 0x04
    PREKEY_BUNDLE = 0x05
    DEVICE_REVOCATION = 0x06
    RATCHET_MESSAGE = 0x10
    PREKEY_MESSAGE = 0x11
    SENDER_CERTIFICATE = 0x20
    SEALED_ENVELOPE = 0x21


class KemPreKeyKind(IntEnum):
    """Whether an ML-KEM prekey may be used many times or once."""

    LAST_RESORT = 0x01
    ONE_TIME = 0x02


def _prefix(wire_type: WireType) -> bytes:
    return bytes((WIRE_VERSION, wire_type))


def _check_prefix(data: bytes, wire_type: WireType) -> None:
    if len(data) < 2:
        raise DecodeError("truncated: no version and type")
    if data[0] != WIRE_VERSION:
        raise UnsupportedVersion(data[0])
    if data[1] != wire_type:
        raise DecodeError(f"expected type 0x{wire_type:02x}, got 0x{data[1]:02x}")


def _check_len(data: bytes, expected: int, what: str) -> None:
    if len(data) != expected:
        raise DecodeError(f"{what} must be {expected} bytes, got {len(data)}")


# --------------------------------------------------------------------------- certificates

_CERT_BODY = struct.Struct(">2s32s16sI32s32sQ")
DEVICE_CERTIFICATE_LEN: Final = _CERT_BODY.size + _SIG  # 190


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """The account identity key's statement that a device belongs to the account.

    ``signature`` is Ed25519 by ``account_key`` over ``CONTEXT || signed_part()``.
    """

    CONTEXT: ClassVar[bytes] = b"sealpost/v1/device-certificate\x00"

    account_key: bytes  # AIK, Ed25519 public, 32
    account_id: bytes  # 16
    device_id: int  # u32
    signing_key: bytes  # DSK, Ed25519 public, 32
    identity_key: bytes  # DIK, X25519 public, 32
    created: int  # u64 seconds since the epoch
    signature: bytes  # 64

    def signed_part(self) -> bytes:
        return _CERT_BODY.pack(
            _prefix(WireType.DEVICE_CERTIFICATE),
            self.account_key,
            self.account_id,
            self.device_id,
            self.signing_key,
            self.identity_key,
            self.created,
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> DeviceCertificate:
        _check_prefix(data, WireType.DEVICE_CERTIFICATE)
        _check_len(data, DEVICE_CERTIFICATE_LEN, "device certificate")
        _, aik, account_id, device_id, dsk, dik, created = _CERT_BODY.unpack_from(data)
        return cls(aik, account_id, device_id, dsk, dik, created, bytes(data[_CERT_BODY.size :]))


_REVOCATION_BODY = struct.Struct(">2s32s16sIQ")
DEVICE_REVOCATION_LEN: Final = _REVOCATION_BODY.size + _SIG  # 126


@dataclass(frozen=True, slots=True)
class DeviceRevocation:
    """The account identity key's statement that a device no longer belongs to the
    account. ``signature`` is Ed25519 by ``account_key`` over ``CONTEXT ||
    signed_part()``. A revoked device id is never encrypted to again."""

    CONTEXT: ClassVar[bytes] = b"sealpost/v1/device-revocation\x00"

    account_key: bytes  # AIK, Ed25519 public, 32
    account_id: bytes  # 16
    device_id: int  # u32
    revoked_at: int  # u64 seconds since the epoch
    signature: bytes  # 64

    def signed_part(self) -> bytes:
        return _REVOCATION_BODY.pack(
            _prefix(WireType.DEVICE_REVOCATION),
            self.account_key,
            self.account_id,
            self.device_id,
            self.revoked_at,
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> DeviceRevocation:
        _check_prefix(data, WireType.DEVICE_REVOCATION)
        _check_len(data, DEVICE_REVOCATION_LEN, "device revocation")
        _, aik, account_id, device_id, revoked_at = _REVOCATION_BODY.unpack_from(data)
        return cls(aik, account_id, device_id, revoked_at, bytes(data[_REVOCATION_BODY.size :]))


# --------------------------------------------------------------------------- prekeys

_SPK_BODY = struct.Struct(">2sIQ32s")
SIGNED_PREKEY_LEN: Final = _SPK_BODY.size + _SIG  # 110


@dataclass(frozen=True, slots=True)
class SignedPreKey:
    """A medium-term X25519 prekey signed by the device signing key."""

    CONTEXT: ClassVar[bytes] = b"sealpost/v1/signed-prekey\x00"

    key_id: int  # u32
    created: int  # u64
    public_key: bytes  # 32
    signature: bytes  # 64

    def signed_part(self) -> bytes:
        return _SPK_BODY.pack(
            _prefix(WireType.SIGNED_PREKEY), self.key_id, self.created, self.public_key
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignedPreKey:
        _check_prefix(data, WireType.SIGNED_PREKEY)
        _check_len(data, SIGNED_PREKEY_LEN, "signed prekey")
        _, key_id, created, pub = _SPK_BODY.unpack_from(data)
        return cls(key_id, created, pub, bytes(data[_SPK_BODY.size :]))


_KEM_BODY = struct.Struct(f">2sBIQ{MLKEM768_PUBLIC_LEN}s")
KEM_PREKEY_LEN: Final = _KEM_BODY.size + _SIG  # 1263


@dataclass(frozen=True, slots=True)
class KemPreKey:
    """An ML-KEM-768 prekey (last-resort or one-time) signed by the device signing key."""

    CONTEXT: ClassVar[bytes] = b"sealpost/v1/kem-prekey\x00"

    kind: KemPreKeyKind
    key_id: int  # u32
    created: int  # u64
    public_key: bytes  # 1184
    signature: bytes  # 64

    def signed_part(self) -> bytes:
        return _KEM_BODY.pack(
            _prefix(WireType.KEM_PREKEY), self.kind, self.key_id, self.created, self.public_key
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> KemPreKey:
        _check_prefix(data, WireType.KEM_PREKEY)
        _check_len(data, KEM_PREKEY_LEN, "ML-KEM prekey")
        _, kind, key_id, created, pub = _KEM_BODY.unpack_from(data)
        try:
            kind = KemPreKeyKind(kind)
        except ValueError:
            raise DecodeError(f"unknown ML-KEM prekey kind {kind}") from None
        return cls(kind, key_id, created, pub, bytes(data[_KEM_BODY.size :]))


_OPK = struct.Struct(">2sI32s")
ONE_TIME_PREKEY_LEN: Final = _OPK.size  # 38


@dataclass(frozen=True, slots=True)
class OneTimePreKey:
    """A single-use X25519 prekey. Unsigned, as in Signal: a substituted one-time prekey
    costs the attacker nothing it could not do by withholding it, since the other three DH
    outputs and the ML-KEM secret still protect the session."""

    key_id: int
    public_key: bytes

    def encode(self) -> bytes:
        return _OPK.pack(_prefix(WireType.ONE_TIME_PREKEY), self.key_id, self.public_key)

    @classmethod
    def decode(cls, data: bytes) -> OneTimePreKey:
        _check_prefix(data, WireType.ONE_TIME_PREKEY)
        _check_len(data, ONE_TIME_PREKEY_LEN, "one-time prekey")
        _, key_id, pub = _OPK.unpack_from(data)
        return cls(key_id, pub)


_FLAG_ONE_TIME: Final = 0x01
_FLAG_KEM: Final = 0x02
_FLAGS_KNOWN: Final = _FLAG_ONE_TIME | _FLAG_KEM


def _check_flags(flags: int) -> None:
    if flags & ~_FLAGS_KNOWN:
        raise DecodeError(f"unknown flag bits 0x{flags:02x}")


@dataclass(frozen=True, slots=True)
class PreKeyBundle:
    """What an initiator fetches to start a session with one device."""

    certificate: DeviceCertificate
    signed_prekey: SignedPreKey
    one_time_prekey: OneTimePreKey | None
    kem_prekey: KemPreKey | None

    def encode(self) -> bytes:
        flags = (_FLAG_ONE_TIME if self.one_time_prekey else 0) | (
            _FLAG_KEM if self.kem_prekey else 0
        )
        parts = [
            _prefix(WireType.PREKEY_BUNDLE),
            bytes((flags,)),
            self.certificate.encode(),
            self.signed_prekey.encode(),
        ]
        if self.one_time_prekey is not None:
            parts.append(self.one_time_prekey.encode())
        if self.kem_prekey is not None:
            parts.append(self.kem_prekey.encode())
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> PreKeyBundle:
        _check_prefix(data, WireType.PREKEY_BUNDLE)
        if len(data) < 3:
            raise DecodeError("truncated prekey bundle")
        flags = data[2]
        _check_flags(flags)
        expected = 3 + DEVICE_CERTIFICATE_LEN + SIGNED_PREKEY_LEN
        expected += ONE_TIME_PREKEY_LEN if flags & _FLAG_ONE_TIME else 0
        expected += KEM_PREKEY_LEN if flags & _FLAG_KEM else 0
        _check_len(data, expected, "prekey bundle")
        pos = 3
        cert = DeviceCertificate.decode(data[pos : pos + DEVICE_CERTIFICATE_LEN])
        pos += DEVICE_CERTIFICATE_LEN
        spk = SignedPreKey.decode(data[pos : pos + SIGNED_PREKEY_LEN])
        pos += SIGNED_PREKEY_LEN
        opk = None
        if flags & _FLAG_ONE_TIME:
            opk = OneTimePreKey.decode(data[pos : pos + ONE_TIME_PREKEY_LEN])
            pos += ONE_TIME_PREKEY_LEN
        kem = None
        if flags & _FLAG_KEM:
            kem = KemPreKey.decode(data[pos : pos + KEM_PREKEY_LEN])
        return cls(cert, spk, opk, kem)


# --------------------------------------------------------------------------- messages

_RATCHET_HEADER = struct.Struct(">2s32sII")
RATCHET_HEADER_LEN: Final = _RATCHET_HEADER.size  # 42
_RATCHET_PREFIX: Final = bytes((WIRE_VERSION, WireType.RATCHET_MESSAGE))


@dataclass(frozen=True, slots=True)
class RatchetMessage:
    """One Double Ratchet message. The 42-byte header is authenticated as associated data."""

    ratchet_key: bytes  # sender's current ratchet public key, 32
    previous_counter: int  # u32: messages in the sender's previous sending chain
    counter: int  # u32: this message's index in its chain
    ciphertext: bytes  # AES-256-GCM output, tag included

    def header(self) -> bytes:
        return _RATCHET_HEADER.pack(
            _RATCHET_PREFIX, self.ratchet_key, self.previous_counter, self.counter
        )

    def encode(self) -> bytes:
        return self.header() + self.ciphertext

    @classmethod
    def decode(cls, data: bytes) -> RatchetMessage:
        _check_prefix(data, WireType.RATCHET_MESSAGE)
        if len(data) < RATCHET_HEADER_LEN + TAG_LEN:
            raise DecodeError("truncated ratchet message")
        if len(data) > MAX_WIRE_MESSAGE:
            raise DecodeError("ratchet message too large")
        _, key, pn, n = _RATCHET_HEADER.unpack_from(data)
        return cls(key, pn, n, bytes(data[RATCHET_HEADER_LEN:]))


_PKM_FIXED = struct.Struct(f">2sB{DEVICE_CERTIFICATE_LEN}s32sI")
_U32 = struct.Struct(">I")
_KEM_REF = struct.Struct(f">BI{MLKEM768_CIPHERTEXT_LEN}s")


@dataclass(frozen=True, slots=True)
class PreKeyMessage:
    """The initiator's messages until the responder first answers: the PQXDH parameters
    around a :class:`RatchetMessage`, so that any one of them lets the responder set up the
    session."""

    certificate: DeviceCertificate  # the initiator's device
    base_key: bytes  # EK_A, X25519 public, 32
    signed_prekey_id: int
    one_time_prekey_id: int | None
    kem_prekey_kind: KemPreKeyKind | None
    kem_prekey_id: int | None
    kem_ciphertext: bytes | None  # 1088
    message: RatchetMessage

    def encode(self) -> bytes:
        has_kem = self.kem_ciphertext is not None
        flags = (_FLAG_ONE_TIME if self.one_time_prekey_id is not None else 0) | (
            _FLAG_KEM if has_kem else 0
        )
        parts = [
            _PKM_FIXED.pack(
                bytes((WIRE_VERSION, WireType.PREKEY_MESSAGE)),
                flags,
                self.certificate.encode(),
                self.base_key,
                self.signed_prekey_id,
            )
        ]
        if self.one_time_prekey_id is not None:
            parts.append(_U32.pack(self.one_time_prekey_id))
        if has_kem:
            assert self.kem_prekey_kind is not None and self.kem_prekey_id is not None
            parts.append(
                _KEM_REF.pack(self.kem_prekey_kind, self.kem_prekey_id, self.kem_ciphertext)
            )
        parts.append(self.message.encode())
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> PreKeyMessage:
        _check_prefix(data, WireType.PREKEY_MESSAGE)
        if len(data) > MAX_WIRE_MESSAGE:
            raise DecodeError("prekey message too large")
        if len(data) < _PKM_FIXED.size:
            raise DecodeError("truncated prekey message")
        _, flags, cert_bytes, base_key, spk_id = _PKM_FIXED.unpack_from(data)
        _check_flags(flags)
        pos = _PKM_FIXED.size
        opk_id = None
        if flags & _FLAG_ONE_TIME:
            if len(data) < pos + _U32.size:
                raise DecodeError("truncated prekey message")
            (opk_id,) = _U32.unpack_from(data, pos)
            pos += _U32.size
        kind = kem_id = ct = None
        if flags & _FLAG_KEM:
            if len(data) < pos + _KEM_REF.size:
                raise DecodeError("truncated prekey message")
            raw_kind, kem_id, ct = _KEM_REF.unpack_from(data, pos)
            try:
                kind = KemPreKeyKind(raw_kind)
            except ValueError:
                raise DecodeError(f"unknown ML-KEM prekey kind {raw_kind}") from None
            pos += _KEM_REF.size
        cert = DeviceCertificate.decode(cert_bytes)
        message = RatchetMessage.decode(data[pos:])
        return cls(cert, base_key, spk_id, opk_id, kind, kem_id, ct, message)


# --------------------------------------------------------------------------- sealed sender

_SENDER_BODY = struct.Struct(">2s16sI32s32sQ")
SENDER_CERTIFICATE_LEN: Final = _SENDER_BODY.size + _SIG  # 158


@dataclass(frozen=True, slots=True)
class SenderCertificate:
    """The server's short-lived statement binding a device to its account, for sealed sender.

    A recipient checks it (signature by the server key it pinned, not expired) and that the
    sender's ratchet session is with the very device and identity key it names.
    ``signature`` is Ed25519 by the server key over ``CONTEXT || signed_part()``.
    """

    CONTEXT: ClassVar[bytes] = b"sealpost/v1/sender-certificate\x00"

    account_id: bytes  # 16
    device_id: int  # u32
    signing_key: bytes  # the device's DSK, 32
    identity_key: bytes  # the device's DIK, 32
    expires: int  # u64 seconds since the epoch
    signature: bytes  # 64

    @classmethod
    def issue(
        cls,
        server_key: SigningKey,
        *,
        account_id: bytes,
        device_id: int,
        signing_key: bytes,
        identity_key: bytes,
        expires: int,
    ) -> SenderCertificate:
        """Issue a certificate (server side)."""
        if (
            len(account_id) != ACCOUNT_ID_LEN
            or len(signing_key) != _KEY
            or len(identity_key) != _KEY
        ):
            raise DecodeError("sender certificate fields have the wrong size")
        unsigned = cls(account_id, device_id, signing_key, identity_key, expires, b"")
        sig = server_key.sign(cls.CONTEXT + unsigned.signed_part())
        return cls(account_id, device_id, signing_key, identity_key, expires, sig)

    def verify(self, server_key: VerifyKey, *, now: int) -> None:
        """Raise :class:`BadSignature` unless signed by ``server_key``, and
        :class:`InvalidMessage` if expired at ``now``."""
        server_key.verify(self.signature, self.CONTEXT + self.signed_part())
        if now >= self.expires:
            raise InvalidMessage("sender certificate expired")

    def signed_part(self) -> bytes:
        return _SENDER_BODY.pack(
            _prefix(WireType.SENDER_CERTIFICATE),
            self.account_id,
            self.device_id,
            self.signing_key,
            self.identity_key,
            self.expires,
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SenderCertificate:
        _check_prefix(data, WireType.SENDER_CERTIFICATE)
        _check_len(data, SENDER_CERTIFICATE_LEN, "sender certificate")
        _, account_id, device_id, dsk, dik, expires = _SENDER_BODY.unpack_from(data)
        return cls(account_id, device_id, dsk, dik, expires, bytes(data[_SENDER_BODY.size :]))


_SEALED_MIN: Final = 2 + 32 + 16  # prefix, HPKE enc, AEAD tag
SEALED_ENVELOPE_MAX: Final = MAX_WIRE_MESSAGE + SENDER_CERTIFICATE_LEN + _SEALED_MIN


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    """An HPKE-sealed ``SenderCertificate || message`` (see :mod:`.sealed`): opaque to
    everyone but the recipient device."""

    payload: bytes  # HPKE enc (32) || ciphertext with tag

    def encode(self) -> bytes:
        return _prefix(WireType.SEALED_ENVELOPE) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> SealedEnvelope:
        _check_prefix(data, WireType.SEALED_ENVELOPE)
        if len(data) < _SEALED_MIN:
            raise DecodeError("truncated sealed envelope")
        if len(data) > SEALED_ENVELOPE_MAX:
            raise DecodeError("sealed envelope too large")
        return cls(bytes(data[2:]))


WireMessage = (
    DeviceCertificate
    | SignedPreKey
    | KemPreKey
    | OneTimePreKey
    | PreKeyBundle
    | RatchetMessage
    | PreKeyMessage
    | SenderCertificate
    | SealedEnvelope
)

_DECODERS: Final = {
    WireType.DEVICE_CERTIFICATE: DeviceCertificate.decode,
    WireType.SIGNED_PREKEY: SignedPreKey.decode,
    WireType.KEM_PREKEY: KemPreKey.decode,
    WireType.ONE_TIME_PREKEY: OneTimePreKey.decode,
    WireType.PREKEY_BUNDLE: PreKeyBundle.decode,
    WireType.RATCHET_MESSAGE: RatchetMessage.decode,
    WireType.PREKEY_MESSAGE: PreKeyMessage.decode,
    WireType.SENDER_CERTIFICATE: SenderCertificate.decode,
    WireType.SEALED_ENVELOPE: SealedEnvelope.decode,
}


def decode(data: bytes) -> WireMessage:
    """Decode any sealpost wire structure, or raise :class:`DecodeError`.

    Accepts ``bytes``-like input; never raises anything but :class:`DecodeError` (or its
    subclass :class:`UnsupportedVersion`).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > SEALED_ENVELOPE_MAX:
        raise DecodeError(f"message of {len(data)} bytes exceeds {SEALED_ENVELOPE_MAX}")
    if len(data) < 2:
        raise DecodeError("truncated: no version and type")
    if data[0] != WIRE_VERSION:
        raise UnsupportedVersion(data[0])
    decoder = _DECODERS.get(data[1])  # type: ignore[call-overload]
    if decoder is None:
        raise DecodeError(f"unknown message type 0x{data[1]:02x}")
    return decoder(data)  # type: ignore[no-any-return]
