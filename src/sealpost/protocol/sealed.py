"""Sealed sender: the server delivers a message without learning who sent it.

The sender seals ``SenderCertificate || message`` (the message being a Ratchet- or
PreKeyMessage) with HPKE to the recipient device's identity key (DIK). The server sees only
the destination it is told and an opaque :class:`SealedEnvelope`. The recipient opens it and
trusts the sender only when three things hold:

1. the sender certificate is signed by the server key the recipient pinned, and unexpired
   (it binds account id, device id, signing key and identity key);
2. the inner message comes from that very device: for a PreKeyMessage, its AIK-signed
   device certificate names the same account, device, signing and identity keys; for a
   RatchetMessage, the session it decrypts in is with that device
   (:meth:`UnsealedMessage.check_session`);
3. the inner message then decrypts in that session (only the session peer can produce it).

So a server that forges a certificate fails (1); one that pairs a genuine certificate with
someone else's message fails (2); nobody without the session keys passes (3).

Padding: sealing does not hide the length of what is sealed. Callers pad plaintexts before
ratchet encryption (never compress before encrypting).
"""

from __future__ import annotations

import hmac
from collections.abc import MutableSet
from dataclasses import dataclass

from sealpost._errors import DecodeError, InvalidMessage, UntrustedIdentity
from sealpost.crypto.dh import DhPrivateKey, DhPublicKey
from sealpost.crypto.hpke import HPKE, Sealer, hpke_open
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.wire import (
    SENDER_CERTIFICATE_LEN,
    DeviceCertificate,
    PreKeyMessage,
    RatchetMessage,
    SealedEnvelope,
    SenderCertificate,
    WireType,
    decode,
)

__all__ = [
    "SEALED_INFO",
    "SENDER_CERTIFICATE_LEN",
    "SealedEnvelope",
    "SenderCertificate",
    "UnsealedMessage",
    "check_sender",
    "seal",
    "split_sender",
    "unseal",
]

SEALED_INFO = b"sealpost/v1/sealed-sender"
VERIFIED_CACHE_LIMIT = 4096  # certificates remembered as verified (cleared when full)


@dataclass(frozen=True, slots=True)
class UnsealedMessage:
    """An opened envelope: a verified sender certificate and the message it carried."""

    sender: SenderCertificate
    message: RatchetMessage | PreKeyMessage

    def check_session(self, remote: DeviceCertificate) -> None:
        """Raise :class:`UntrustedIdentity` unless ``remote`` (the device certificate of
        the session the message will be decrypted in) is the certified sender."""
        _check_same_device(self.sender, remote)


def _check_same_device(sender: SenderCertificate, device: DeviceCertificate) -> None:
    same = (
        hmac.compare_digest(sender.account_id, device.account_id)
        and sender.device_id == device.device_id
        and hmac.compare_digest(sender.signing_key, device.signing_key)
        and hmac.compare_digest(sender.identity_key, device.identity_key)
    )
    if not same:
        raise UntrustedIdentity("sealed message's sender certificate names another device")


def check_sender(
    sender: SenderCertificate,
    encoded: bytes,
    server_key: VerifyKey,
    now: int,
    verified: MutableSet[bytes] | None,
) -> None:
    """Verify a sender certificate (``encoded`` is its wire form) under the pinned server
    key, unless ``verified`` remembers it; its expiry is always checked."""
    if verified is not None and encoded in verified:
        if now >= sender.expires:
            raise InvalidMessage("sender certificate expired")
        return
    sender.verify(server_key, now=now)
    if verified is not None:
        if len(verified) >= VERIFIED_CACHE_LIMIT:
            verified.clear()
        verified.add(encoded)


def split_sender(
    inner: bytes,
    server_key: VerifyKey,
    now: int,
    verified: MutableSet[bytes] | None,
) -> tuple[SenderCertificate, bytes]:
    """``(verified sender certificate, the rest)`` of a group envelope's inner plaintext
    ``SenderCertificate || SenderKeyMessage``."""
    if len(inner) < SENDER_CERTIFICATE_LEN + 2:
        raise InvalidMessage()
    encoded = inner[:SENDER_CERTIFICATE_LEN]
    try:
        sender = SenderCertificate.decode(encoded)
    except DecodeError:
        raise InvalidMessage() from None
    check_sender(sender, encoded, server_key, now, verified)
    return sender, inner[SENDER_CERTIFICATE_LEN:]


def seal(
    message: bytes,
    sender: SenderCertificate,
    recipient_identity_key: DhPublicKey,
    *,
    sealer: Sealer = HPKE,
) -> bytes:
    """Seal an encoded Ratchet- or PreKeyMessage to the recipient device; returns the
    encoded :class:`SealedEnvelope` (``0x01 0x21 || enc || ciphertext``)."""
    if len(message) < 2 or message[1] not in (
        WireType.RATCHET_MESSAGE,
        WireType.PREKEY_MESSAGE,
    ):
        raise DecodeError("only ratchet and prekey messages can be sealed")
    inner = sender.encode() + message
    return SealedEnvelope(sealer.seal(inner, recipient_identity_key, SEALED_INFO)).encode()


def unseal(
    envelope: bytes | SealedEnvelope,
    identity_key: DhPrivateKey,
    *,
    server_key: VerifyKey,
    now: int,
    verified: MutableSet[bytes] | None = None,
) -> UnsealedMessage:
    """Open an envelope sealed to this device and verify its sender certificate.

    Raises :class:`DecodeError` for a malformed envelope, :class:`InvalidMessage` when it
    cannot be opened or the certificate has expired, :class:`BadSignature` for a forged
    certificate, and :class:`UntrustedIdentity` when a PreKeyMessage's device certificate
    names another device than the sender certificate.

    ``verified``, if given, is a set of encoded sender certificates whose signature was
    already checked under this same ``server_key``: a certificate in it is not verified
    again (its expiry still is), and one that verifies is added. A sender reuses its
    certificate for a day, so this saves a signature check per message.
    """
    if isinstance(envelope, SealedEnvelope):
        sealed = envelope
    else:
        decoded = decode(envelope)
        if not isinstance(decoded, SealedEnvelope):
            raise DecodeError("not a sealed envelope")
        sealed = decoded
    inner = hpke_open(sealed.payload, identity_key, SEALED_INFO)
    if len(inner) < SENDER_CERTIFICATE_LEN + 2:
        raise InvalidMessage()
    try:
        sender = SenderCertificate.decode(inner[:SENDER_CERTIFICATE_LEN])
        message = decode(inner[SENDER_CERTIFICATE_LEN:])
    except DecodeError:
        raise InvalidMessage() from None
    if not isinstance(message, RatchetMessage | PreKeyMessage):
        raise InvalidMessage()
    check_sender(sender, inner[:SENDER_CERTIFICATE_LEN], server_key, now, verified)
    if isinstance(message, PreKeyMessage):
        _check_same_device(sender, message.certificate)
    return UnsealedMessage(sender, message)
