"""The keys of DESIGN.md section 2, their certificates and their storage records.

- :class:`AccountIdentity`: the account identity key (AIK, Ed25519). Held by the account's
  devices only; it certifies devices.
- :class:`DeviceKeys`: one device's signing key (DSK, Ed25519), identity key (DIK, X25519)
  and the :class:`~sealpost.protocol.wire.DeviceCertificate` the AIK issued for them.
- :class:`SignedPreKeyPair`, :class:`OneTimePreKeyPair`, :class:`KemPreKeyPair`: prekeys
  with their private halves, as the device stores them.

Each private record has ``to_bytes()`` / ``from_bytes()`` (a storage format, distinct from
the wire format) and a ``repr`` that never shows secret bytes::

    >>> from sealpost.protocol.keys import AccountIdentity, DeviceKeys
    >>> account = AccountIdentity.generate(rng)                         # doctest: +SKIP
    >>> device = DeviceKeys.generate(account, device_id=1, now=now, rng=rng)  # doctest: +SKIP
    >>> verify_certificate(device.certificate)                          # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from sealpost._errors import DecodeError, UntrustedIdentity
from sealpost.crypto.dh import DhPrivateKey, DhPublicKey
from sealpost.crypto.kem import MLKEM768_SEED_LEN, KemPrivateKey, KemPublicKey
from sealpost.crypto.sign import SigningKey, VerifyKey
from sealpost.entropy import Rng
from sealpost.protocol.wire import (
    ACCOUNT_ID_LEN,
    DEVICE_CERTIFICATE_LEN,
    KEM_PREKEY_LEN,
    SIGNED_PREKEY_LEN,
    DeviceCertificate,
    DeviceRevocation,
    KemPreKey,
    KemPreKeyKind,
    OneTimePreKey,
    SignedPreKey,
)

__all__ = [
    "AccountIdentity",
    "DeviceKeys",
    "KemPreKeyPair",
    "OneTimePreKeyPair",
    "SignedPreKeyPair",
    "VerifiedDevice",
    "sign_revocation",
    "verify_certificate",
    "verify_revocation",
]

_RECORD_VERSION = 1


def _record_header(kind: int) -> bytes:
    return bytes((_RECORD_VERSION, kind))


def _check_record(data: bytes, kind: int, length: int, what: str) -> None:
    if len(data) != length or data[0] != _RECORD_VERSION or data[1] != kind:
        raise DecodeError(f"not a valid {what} record")


@dataclass(frozen=True, slots=True)
class VerifiedDevice:
    """A device certificate whose AIK signature has been checked, with its keys decoded."""

    certificate: DeviceCertificate
    account_key: VerifyKey
    signing_key: VerifyKey
    identity_key: DhPublicKey


def verify_certificate(
    cert: DeviceCertificate, *, expected_account_key: bytes | None = None
) -> VerifiedDevice:
    """Check that ``cert`` is signed by the account key it names, and (if given) that this
    account key is the one the caller trusts. Raises :class:`BadSignature`,
    :class:`UntrustedIdentity` or :class:`DecodeError`/:class:`InvalidKey`."""
    if expected_account_key is not None and not hmac.compare_digest(
        cert.account_key, expected_account_key
    ):
        raise UntrustedIdentity("device certificate is signed by a different account key")
    aik = VerifyKey.from_public_bytes(cert.account_key)
    aik.verify(cert.signature, DeviceCertificate.CONTEXT + cert.signed_part())
    return VerifiedDevice(
        cert,
        aik,
        VerifyKey.from_public_bytes(cert.signing_key),
        DhPublicKey.from_public_bytes(cert.identity_key),
    )


def sign_revocation(
    account: AccountIdentity, device_id: int, *, revoked_at: int
) -> DeviceRevocation:
    """The account key's revocation of one of its devices."""
    unsigned = DeviceRevocation(
        account.public_key().public_bytes_raw(), account.account_id, device_id, revoked_at, b""
    )
    signature = account.signing_key.sign(DeviceRevocation.CONTEXT + unsigned.signed_part())
    return DeviceRevocation(
        unsigned.account_key, account.account_id, device_id, revoked_at, signature
    )


def verify_revocation(
    revocation: DeviceRevocation, *, expected_account_key: bytes | None = None
) -> None:
    """Check that ``revocation`` is signed by the account key it names (and that this is
    the key the caller trusts). Raises :class:`BadSignature`, :class:`UntrustedIdentity`
    or :class:`InvalidKey`."""
    if expected_account_key is not None and not hmac.compare_digest(
        revocation.account_key, expected_account_key
    ):
        raise UntrustedIdentity("device revocation is signed by a different account key")
    aik = VerifyKey.from_public_bytes(revocation.account_key)
    aik.verify(revocation.signature, DeviceRevocation.CONTEXT + revocation.signed_part())


class AccountIdentity:
    """The account identity key (AIK) and the account id it is bound to."""

    __slots__ = ("account_id", "signing_key")

    def __init__(self, account_id: bytes, signing_key: SigningKey) -> None:
        if len(account_id) != ACCOUNT_ID_LEN:
            raise DecodeError(f"account id must be {ACCOUNT_ID_LEN} bytes")
        self.account_id = bytes(account_id)
        self.signing_key = signing_key

    @classmethod
    def generate(cls, rng: Rng) -> AccountIdentity:
        return cls(rng(ACCOUNT_ID_LEN), SigningKey.generate(rng))

    def public_key(self) -> VerifyKey:
        return self.signing_key.public_key()

    def certify_device(
        self, device_id: int, signing_key: VerifyKey, identity_key: DhPublicKey, now: int
    ) -> DeviceCertificate:
        """Issue a device certificate over (account, device id, DSK, DIK, created)."""
        unsigned = DeviceCertificate(
            self.public_key().public_bytes_raw(),
            self.account_id,
            device_id,
            signing_key.public_bytes_raw(),
            identity_key.public_bytes_raw(),
            now,
            b"",
        )
        sig = self.signing_key.sign(DeviceCertificate.CONTEXT + unsigned.signed_part())
        return DeviceCertificate(
            unsigned.account_key,
            unsigned.account_id,
            device_id,
            unsigned.signing_key,
            unsigned.identity_key,
            now,
            sig,
        )

    _KIND = 0x01
    _LEN = 2 + ACCOUNT_ID_LEN + 32

    def to_bytes(self) -> bytes:
        return _record_header(self._KIND) + self.account_id + self.signing_key.private_bytes_raw()

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountIdentity:
        _check_record(data, cls._KIND, cls._LEN, "account identity")
        return cls(data[2:18], SigningKey.from_private_bytes(data[18:50]))

    def __repr__(self) -> str:
        return (
            f"AccountIdentity(account_id={self.account_id.hex()}, "
            f"key={self.public_key().public_bytes_raw().hex()}, private=<hidden>)"
        )


class DeviceKeys:
    """One device's signing key (DSK), identity key (DIK) and AIK-issued certificate."""

    __slots__ = ("certificate", "identity_key", "signing_key")

    def __init__(
        self, signing_key: SigningKey, identity_key: DhPrivateKey, certificate: DeviceCertificate
    ) -> None:
        if certificate.signing_key != signing_key.public_key().public_bytes_raw() or (
            certificate.identity_key != identity_key.public_key().public_bytes_raw()
        ):
            raise DecodeError("device certificate does not match the device's keys")
        self.signing_key = signing_key
        self.identity_key = identity_key
        self.certificate = certificate

    @classmethod
    def generate(
        cls, account: AccountIdentity, device_id: int, *, now: int, rng: Rng
    ) -> DeviceKeys:
        dsk = SigningKey.generate(rng)
        dik = DhPrivateKey.generate(rng)
        cert = account.certify_device(device_id, dsk.public_key(), dik.public_key(), now)
        return cls(dsk, dik, cert)

    @property
    def device_id(self) -> int:
        return self.certificate.device_id

    def new_signed_prekey(self, key_id: int, *, now: int, rng: Rng) -> SignedPreKeyPair:
        return SignedPreKeyPair.generate(self.signing_key, key_id, now=now, rng=rng)

    def new_kem_prekey(
        self, key_id: int, kind: KemPreKeyKind, *, now: int, rng: Rng
    ) -> KemPreKeyPair:
        return KemPreKeyPair.generate(self.signing_key, key_id, kind, now=now, rng=rng)

    _KIND = 0x02
    _LEN = 2 + 32 + 32 + DEVICE_CERTIFICATE_LEN

    def to_bytes(self) -> bytes:
        return (
            _record_header(self._KIND)
            + self.signing_key.private_bytes_raw()
            + self.identity_key.private_bytes_raw()
            + self.certificate.encode()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceKeys:
        _check_record(data, cls._KIND, cls._LEN, "device keys")
        return cls(
            SigningKey.from_private_bytes(data[2:34]),
            DhPrivateKey.from_private_bytes(data[34:66]),
            DeviceCertificate.decode(data[66:]),
        )

    def __repr__(self) -> str:
        return f"DeviceKeys(device_id={self.device_id}, private=<hidden>)"


class SignedPreKeyPair:
    """A signed prekey with its private half."""

    __slots__ = ("private_key", "public")

    def __init__(self, private_key: DhPrivateKey, public: SignedPreKey) -> None:
        self.private_key = private_key
        self.public = public

    @classmethod
    def generate(cls, dsk: SigningKey, key_id: int, *, now: int, rng: Rng) -> SignedPreKeyPair:
        priv = DhPrivateKey.generate(rng)
        unsigned = SignedPreKey(key_id, now, priv.public_key().public_bytes_raw(), b"")
        sig = dsk.sign(SignedPreKey.CONTEXT + unsigned.signed_part())
        return cls(priv, SignedPreKey(key_id, now, unsigned.public_key, sig))

    @property
    def key_id(self) -> int:
        return self.public.key_id

    _KIND = 0x03
    _LEN = 2 + 32 + SIGNED_PREKEY_LEN

    def to_bytes(self) -> bytes:
        return (
            _record_header(self._KIND) + self.private_key.private_bytes_raw() + self.public.encode()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedPreKeyPair:
        _check_record(data, cls._KIND, cls._LEN, "signed prekey")
        return cls(DhPrivateKey.from_private_bytes(data[2:34]), SignedPreKey.decode(data[34:]))

    def __repr__(self) -> str:
        return f"SignedPreKeyPair(key_id={self.key_id}, private=<hidden>)"


class OneTimePreKeyPair:
    """A one-time X25519 prekey with its private half."""

    __slots__ = ("private_key", "public")

    def __init__(self, private_key: DhPrivateKey, public: OneTimePreKey) -> None:
        self.private_key = private_key
        self.public = public

    @classmethod
    def generate(cls, key_id: int, *, rng: Rng) -> OneTimePreKeyPair:
        priv = DhPrivateKey.generate(rng)
        return cls(priv, OneTimePreKey(key_id, priv.public_key().public_bytes_raw()))

    @property
    def key_id(self) -> int:
        return self.public.key_id

    _KIND = 0x04
    _LEN = 2 + 32 + 4

    def to_bytes(self) -> bytes:
        return (
            _record_header(self._KIND)
            + self.private_key.private_bytes_raw()
            + struct.pack(">I", self.key_id)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> OneTimePreKeyPair:
        _check_record(data, cls._KIND, cls._LEN, "one-time prekey")
        priv = DhPrivateKey.from_private_bytes(data[2:34])
        (key_id,) = struct.unpack(">I", data[34:38])
        return cls(priv, OneTimePreKey(key_id, priv.public_key().public_bytes_raw()))

    def __repr__(self) -> str:
        return f"OneTimePreKeyPair(key_id={self.key_id}, private=<hidden>)"


class KemPreKeyPair:
    """An ML-KEM-768 prekey (last-resort or one-time) with its private seed."""

    __slots__ = ("private_key", "public")

    def __init__(self, private_key: KemPrivateKey, public: KemPreKey) -> None:
        self.private_key = private_key
        self.public = public

    @classmethod
    def generate(
        cls, dsk: SigningKey, key_id: int, kind: KemPreKeyKind, *, now: int, rng: Rng
    ) -> KemPreKeyPair:
        priv = KemPrivateKey.generate(rng)
        pub = priv.public_key().public_bytes_raw()
        unsigned = KemPreKey(kind, key_id, now, pub, b"")
        sig = dsk.sign(KemPreKey.CONTEXT + unsigned.signed_part())
        return cls(priv, KemPreKey(kind, key_id, now, pub, sig))

    @property
    def key_id(self) -> int:
        return self.public.key_id

    def public_key(self) -> KemPublicKey:
        return self.private_key.public_key()

    _KIND = 0x05
    _LEN = 2 + MLKEM768_SEED_LEN + KEM_PREKEY_LEN

    def to_bytes(self) -> bytes:
        return _record_header(self._KIND) + self.private_key.seed_bytes() + self.public.encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KemPreKeyPair:
        _check_record(data, cls._KIND, cls._LEN, "ML-KEM prekey")
        return cls(
            KemPrivateKey.from_seed_bytes(data[2 : 2 + MLKEM768_SEED_LEN]),
            KemPreKey.decode(data[2 + MLKEM768_SEED_LEN :]),
        )

    def __repr__(self) -> str:
        return (
            f"KemPreKeyPair(key_id={self.key_id}, kind={self.public.kind.name}, private=<hidden>)"
        )
