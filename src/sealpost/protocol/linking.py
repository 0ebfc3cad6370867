"""Linking a new device to an account: the link code, the confirmation code and the
provisioning message, sans-I/O.

The flow (the relay only forwards opaque bytes over a short-lived channel)::

    new device                            relay                      existing device
    ----------                            -----                      ---------------
    X25519 key x, ML-KEM-768 key k
    open channel, upload k's public  ->   channel id c
    show link code (c, X, H(K), name)  ~~~~~~~ QR or text ~~~~~~~>  parse the code
                                          <-  fetch K for c          check H(K)
    show confirmation code  ............ the user compares ..........  show name and code,
                                                                       ask to confirm
                                          <-  provisioning message   seal account material
    open it, register with a certificate                             to (X, K)
    signed by the account key

Link code (bytes, shown as ``sealpost-link:`` + unpadded base64url)::

    version (1) = 0x01 | channel id (16) | X25519 public (32) | SHA-256(ML-KEM public) (32) |
    name length (1) | device name (ASCII, 1-32)

Confirmation code: the first 4 bytes of ``SHA-256("sealpost/v1/link-confirm" || code
bytes || ML-KEM public)`` as a 6-digit number (``int % 10**6``), shown ``123 456``. Both
devices compute it from what they hold, so a code swapped in transit (QR phishing: an
attacker's link code presented as the user's own) shows a different name or a different
number from what the user's new device shows, and the user who did not start a link has
nothing to compare with: the confirmation is the defence, which is why it is not skippable.

Provisioning message (existing -> new)::

    version (1) = 0x01 | ephemeral X25519 public E (32) | ML-KEM ciphertext (1088) |
    AES-256-GCM ciphertext of the payload

with ``key = HKDF-SHA256(ikm = X25519(e, X) || ML-KEM shared secret, salt = channel id,
info = "sealpost/v1/link" || X || E || SHA-256(ML-KEM public), 32)``; the nonce is zero
(each key encrypts one message) and the associated data is the 1 + 32 + 1088 header.
Hybrid, like PQXDH: the account key it carries stays secret unless both X25519 and
ML-KEM-768 fall. The payload is UTF-8 JSON (see :func:`open_provisioning`'s caller).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from sealpost._errors import DecodeError
from sealpost.crypto.aead import aead_decrypt, aead_encrypt
from sealpost.crypto.dh import DhPrivateKey, DhPublicKey
from sealpost.crypto.kdf import hkdf
from sealpost.crypto.kem import ML_KEM_768, Kem, KemPrivateKey, KemPublicKey
from sealpost.entropy import Rng

__all__ = [
    "CODE_PREFIX",
    "KEM_CIPHERTEXT_LEN",
    "MAX_PAYLOAD",
    "LinkCode",
    "LinkSecrets",
    "confirmation_code",
    "open_provisioning",
    "seal_provisioning",
]

LINK_VERSION = 0x01
CODE_PREFIX = "sealpost-link:"
CHANNEL_LEN = 16
KEM_CIPHERTEXT_LEN = 1088
MAX_DEVICE_NAME = 32
MAX_PAYLOAD = 4 * 1024 * 1024  # contacts and groups of a large account
_CONFIRM = b"sealpost/v1/link-confirm"
_INFO = b"sealpost/v1/link"
_ZERO_NONCE = bytes(12)


def _check_device_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name.isascii()
        or not name.isprintable()
        or not 1 <= len(name) <= MAX_DEVICE_NAME
    ):
        raise DecodeError(f"device names are 1 to {MAX_DEVICE_NAME} printable ASCII characters")


@dataclass(frozen=True, slots=True)
class LinkCode:
    """What the new device shows: where to find it and which keys are its."""

    channel: bytes
    dh_public: bytes
    kem_digest: bytes
    device_name: str

    def __post_init__(self) -> None:
        if len(self.channel) != CHANNEL_LEN or len(self.dh_public) != 32:
            raise DecodeError("malformed link code")
        if len(self.kem_digest) != 32:
            raise DecodeError("malformed link code")
        _check_device_name(self.device_name)

    def to_bytes(self) -> bytes:
        name = self.device_name.encode("ascii")
        return (
            bytes((LINK_VERSION,))
            + self.channel
            + self.dh_public
            + self.kem_digest
            + bytes((len(name),))
            + name
        )

    def to_text(self) -> str:
        return CODE_PREFIX + base64.urlsafe_b64encode(self.to_bytes()).decode().rstrip("=")

    @classmethod
    def from_bytes(cls, data: bytes) -> LinkCode:
        if len(data) < 82 or data[0] != LINK_VERSION:
            raise DecodeError("not a sealpost link code (or of another version)")
        if len(data) != 82 + data[81]:
            raise DecodeError("malformed link code")
        try:
            name = data[82:].decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("malformed link code") from None
        return cls(data[1:17], data[17:49], data[49:81], name)

    @classmethod
    def from_text(cls, text: str) -> LinkCode:
        text = text.strip()
        if not text.startswith(CODE_PREFIX):
            raise DecodeError(f"a link code starts with {CODE_PREFIX!r}")
        body = text[len(CODE_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise DecodeError("a link code is base64url") from None
        return cls.from_bytes(raw)

    def check_kem(self, kem_public: bytes) -> KemPublicKey:
        """The ML-KEM key the relay handed over, if it is the one the code names."""
        if not hmac.compare_digest(hashlib.sha256(kem_public).digest(), self.kem_digest):
            raise DecodeError("the relay's key for this link is not the one in the code")
        return KemPublicKey.from_public_bytes(kem_public)


def confirmation_code(code: LinkCode, kem_public: bytes) -> str:
    """The 6-digit code both devices show for the user to compare."""
    digest = hashlib.sha256(_CONFIRM + code.to_bytes() + kem_public).digest()
    number = int.from_bytes(digest[:4], "big") % 1_000_000
    return f"{number // 1000:03d} {number % 1000:03d}"


class LinkSecrets:
    """The new device's ephemeral keys for one link (never stored)."""

    __slots__ = ("dh", "kem")

    def __init__(self, dh: DhPrivateKey, kem: KemPrivateKey) -> None:
        self.dh = dh
        self.kem = kem

    @classmethod
    def generate(cls, rng: Rng) -> LinkSecrets:
        return cls(DhPrivateKey.generate(rng), KemPrivateKey.generate(rng))

    def kem_public(self) -> bytes:
        return self.kem.public_key().public_bytes_raw()

    def code(self, channel: bytes, device_name: str) -> LinkCode:
        return LinkCode(
            channel,
            self.dh.public_key().public_bytes_raw(),
            hashlib.sha256(self.kem_public()).digest(),
            device_name,
        )

    def __repr__(self) -> str:
        return "LinkSecrets(<hidden>)"


def _key(dh_secret: bytes, kem_secret: bytes, code: LinkCode, ephemeral: bytes) -> bytes:
    return hkdf(
        dh_secret + kem_secret,
        salt=code.channel,
        info=_INFO + code.dh_public + ephemeral + code.kem_digest,
        length=32,
    )


def seal_provisioning(
    payload: bytes, code: LinkCode, kem_public: bytes, *, rng: Rng, kem: Kem = ML_KEM_768
) -> bytes:
    """Encrypt ``payload`` (the account material) to the new device of ``code``."""
    if len(payload) > MAX_PAYLOAD:
        raise DecodeError("the provisioning payload is too large")
    kem_key = code.check_kem(kem_public)
    ephemeral = DhPrivateKey.generate(rng)
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    dh_secret = ephemeral.exchange(DhPublicKey.from_public_bytes(code.dh_public))
    kem_secret, kem_ciphertext = kem.encapsulate(kem_key)
    header = bytes((LINK_VERSION,)) + ephemeral_public + kem_ciphertext
    key = _key(dh_secret, kem_secret, code, ephemeral_public)
    return header + aead_encrypt(key, _ZERO_NONCE, payload, header)


def open_provisioning(message: bytes, secrets: LinkSecrets, code: LinkCode) -> bytes:
    """The payload, or :class:`InvalidMessage` / :class:`DecodeError`."""
    head = 1 + 32 + KEM_CIPHERTEXT_LEN
    if len(message) < head + 16 or len(message) > head + MAX_PAYLOAD + 16:
        raise DecodeError("malformed provisioning message")
    if message[0] != LINK_VERSION:
        raise DecodeError("provisioning message of another version")
    ephemeral_public = message[1:33]
    dh_secret = secrets.dh.exchange(DhPublicKey.from_public_bytes(ephemeral_public))
    kem_secret = secrets.kem.decapsulate(message[33:head])
    key = _key(dh_secret, kem_secret, code, ephemeral_public)
    return aead_decrypt(key, _ZERO_NONCE, message[head:], message[:head])
