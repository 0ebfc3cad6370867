"""A pairwise session between two devices: PQXDH to start, the Double Ratchet after.

Sans-I/O: a session is a state object. The caller loads it, calls :meth:`Session.encrypt`
or :meth:`Session.decrypt`, and persists :meth:`Session.to_bytes` in the same transaction
as the message (DESIGN.md section 6). A failed decrypt leaves the session unchanged.

Starting a session::

    >>> alice = Session.initiate(alice_device, bob_bundle)            # doctest: +SKIP
    >>> first = alice.encrypt(b"hi")        # a PreKeyMessage           # doctest: +SKIP
    >>> msg = wire.decode(first)                                       # doctest: +SKIP
    >>> bob, text = Session.respond(bob_device, msg, signed_prekey=spk,
    ...     one_time_prekey=opk, kem_prekey=kem)                        # doctest: +SKIP
    >>> alice.decrypt(bob.encrypt(b"hello"))                           # doctest: +SKIP
    b'hello'

Until the initiator has received a reply, every message it sends is a PreKeyMessage, so
the responder can set up the session from whichever one arrives first. The responder
routes later PreKeyMessages with the same :attr:`Session.base_key` to the existing session
(:meth:`Session.decrypt` accepts them); a replayed first message then raises
:class:`DuplicateMessage` instead of building a second session.
"""

from __future__ import annotations

import hmac
import struct

from sealpost._errors import DecodeError, InvalidMessage, UnsupportedVersion
from sealpost.crypto.kem import ML_KEM_768, Kem
from sealpost.entropy import Rng, system_rng
from sealpost.protocol.bundle import verify_bundle
from sealpost.protocol.consts import WIRE_VERSION
from sealpost.protocol.keys import (
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    SignedPreKeyPair,
    verify_certificate,
)
from sealpost.protocol.pqxdh import PreKeyParameters, initiate, respond
from sealpost.protocol.ratchet import RatchetState
from sealpost.protocol.wire import (
    DEVICE_CERTIFICATE_LEN,
    DeviceCertificate,
    PreKeyBundle,
    PreKeyMessage,
    RatchetMessage,
    WireType,
)

__all__ = ["Session"]

_RATCHET = WireType.RATCHET_MESSAGE
_PREKEY = WireType.PREKEY_MESSAGE
_AD_LEN = 128


class Session:
    """One device's side of a pairwise session with one remote device."""

    __slots__ = ("_ad", "_base_key", "_pending", "_post_quantum", "_ratchet", "_remote")

    def __init__(
        self,
        *,
        remote: DeviceCertificate,
        associated_data: bytes,
        base_key: bytes,
        post_quantum: bool,
        ratchet: RatchetState,
        pending: bytes | None,
    ) -> None:
        self._remote = remote
        self._ad = associated_data
        self._base_key = base_key
        self._post_quantum = post_quantum
        self._ratchet = ratchet
        self._pending = pending  # PreKeyMessage prefix, until the responder answers

    # ------------------------------------------------------------------ starting

    @classmethod
    def initiate(
        cls,
        local: DeviceKeys,
        bundle: PreKeyBundle,
        *,
        expected_account_key: bytes | None = None,
        allow_classical: bool = False,
        rng: Rng = system_rng,
        kem: Kem = ML_KEM_768,
    ) -> Session:
        """Start a session from a remote device's prekey bundle, verifying it end to end.

        ``expected_account_key`` is the remote account key the caller trusts (from its
        contacts or the key transparency log); a bundle certified by any other raises
        :class:`UntrustedIdentity`. A bundle without an ML-KEM prekey raises
        :class:`NotPostQuantum` unless ``allow_classical``.
        """
        verified = verify_bundle(
            bundle, expected_account_key=expected_account_key, allow_classical=allow_classical
        )
        agreement, params = initiate(local, verified, rng=rng, kem=kem)
        ratchet = RatchetState.initiator(agreement.shared_key, bundle.signed_prekey.public_key)
        return cls(
            remote=bundle.certificate,
            associated_data=agreement.associated_data,
            base_key=params.base_key,
            post_quantum=agreement.post_quantum,
            ratchet=ratchet,
            pending=_prekey_prefix(params),
        )

    @classmethod
    def respond(
        cls,
        local: DeviceKeys,
        message: PreKeyMessage,
        *,
        signed_prekey: SignedPreKeyPair,
        one_time_prekey: OneTimePreKeyPair | None,
        kem_prekey: KemPreKeyPair | None,
        expected_account_key: bytes | None = None,
        allow_classical: bool = False,
    ) -> tuple[Session, bytes]:
        """Accept a PreKeyMessage: verify the initiator's certificate, run PQXDH with the
        prekeys the message names (looked up by the caller) and decrypt the message.

        Returns the new session and the first plaintext. On any failure nothing is
        created; the caller must delete the one-time prekeys only after success.
        """
        initiator = verify_certificate(
            message.certificate, expected_account_key=expected_account_key
        )
        params = _params_of(message)
        agreement = respond(
            local,
            initiator,
            params,
            signed_prekey=signed_prekey,
            one_time_prekey=one_time_prekey,
            kem_prekey=kem_prekey,
            allow_classical=allow_classical,
        )
        ratchet = RatchetState.responder(agreement.shared_key, signed_prekey.private_key)
        plaintext = ratchet.decrypt(message.message.encode(), agreement.associated_data)
        session = cls(
            remote=message.certificate,
            associated_data=agreement.associated_data,
            base_key=message.base_key,
            post_quantum=agreement.post_quantum,
            ratchet=ratchet,
            pending=None,
        )
        return session, plaintext

    # ------------------------------------------------------------------ messages

    def encrypt(self, plaintext: bytes, *, rng: Rng = system_rng) -> bytes:
        """Encrypt ``plaintext``; returns wire bytes (a PreKeyMessage until answered)."""
        message = self._ratchet.encrypt(plaintext, self._ad, rng)
        if self._pending is not None:
            return self._pending + message
        return message

    def decrypt(self, data: bytes | RatchetMessage | PreKeyMessage) -> bytes:
        """Decrypt a message of this session, or raise; on failure nothing changes.

        Accepts wire bytes or an already decoded message. A PreKeyMessage is accepted only
        if it belongs to this session (same base key and initiator certificate).
        """
        if isinstance(data, PreKeyMessage):  # decoded already: not encoded and decoded again
            if not self.matches(data):
                raise InvalidMessage("prekey message belongs to another session")
            return self._ratchet.decrypt(data.message.encode(), self._ad)
        if isinstance(data, RatchetMessage):
            data = data.encode()
        elif not isinstance(data, bytes):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        if len(data) < 2:
            raise DecodeError("truncated message")
        if data[0] != WIRE_VERSION:
            raise UnsupportedVersion(data[0])
        if data[1] == _RATCHET:
            plaintext = self._ratchet.decrypt(data, self._ad)
            self._pending = None  # the responder answered: no more PreKeyMessages
            return plaintext
        if data[1] == _PREKEY:
            prekey_message = PreKeyMessage.decode(data)
            if not self.matches(prekey_message):
                raise InvalidMessage("prekey message belongs to another session")
            return self._ratchet.decrypt(prekey_message.message.encode(), self._ad)
        raise DecodeError(f"not a session message (type 0x{data[1]:02x})")

    def matches(self, message: PreKeyMessage) -> bool:
        """Whether ``message`` was sent by the initiator of this very session."""
        return hmac.compare_digest(message.base_key, self._base_key) and (
            message.certificate == self._remote
        )

    # ------------------------------------------------------------------ facts

    @property
    def remote_certificate(self) -> DeviceCertificate:
        return self._remote

    @property
    def remote_account_key(self) -> bytes:
        return self._remote.account_key

    @property
    def is_post_quantum(self) -> bool:
        """False only for a session the caller explicitly allowed to be classical-only."""
        return self._post_quantum

    @property
    def base_key(self) -> bytes:
        """The initiator's PQXDH ephemeral public key: identifies the session's handshake."""
        return self._base_key

    @property
    def awaiting_reply(self) -> bool:
        """True while this (initiator) side still wraps messages as PreKeyMessages."""
        return self._pending is not None

    # ------------------------------------------------------------------ storage

    _RECORD_VERSION = 1
    _HEAD = struct.Struct(f">BB{DEVICE_CERTIFICATE_LEN}s{_AD_LEN}s32sI")
    _PQ = 0x01

    def to_bytes(self) -> bytes:
        """Serialize losslessly; :meth:`from_bytes` restores an identical session."""
        pending = self._pending or b""
        return (
            self._HEAD.pack(
                self._RECORD_VERSION,
                self._PQ if self._post_quantum else 0,
                self._remote.encode(),
                self._ad,
                self._base_key,
                len(pending),
            )
            + pending
            + self._ratchet.to_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        head = cls._HEAD
        if len(data) < head.size:
            raise DecodeError("truncated session record")
        version, flags, cert, ad, base_key, pending_len = head.unpack_from(data)
        if version != cls._RECORD_VERSION or flags & ~cls._PQ:
            raise DecodeError("unsupported session record")
        pos = head.size
        if len(data) < pos + pending_len:
            raise DecodeError("truncated session record")
        pending = bytes(data[pos : pos + pending_len]) or None
        pos += pending_len
        return cls(
            remote=DeviceCertificate.decode(cert),
            associated_data=ad,
            base_key=base_key,
            post_quantum=bool(flags & cls._PQ),
            ratchet=RatchetState.from_bytes(data[pos:]),
            pending=pending,
        )

    def __repr__(self) -> str:
        return (
            f"Session(remote_device={self._remote.device_id}, "
            f"post_quantum={self._post_quantum}, awaiting_reply={self.awaiting_reply}, "
            f"{self._ratchet!r})"
        )


def _params_of(message: PreKeyMessage) -> PreKeyParameters:
    return PreKeyParameters(
        message.certificate,
        message.base_key,
        message.signed_prekey_id,
        message.one_time_prekey_id,
        message.kem_prekey_kind,
        message.kem_prekey_id,
        message.kem_ciphertext,
    )


def _prekey_prefix(params: PreKeyParameters) -> bytes:
    """The PreKeyMessage bytes that precede its embedded RatchetMessage."""
    # Encode with an empty-bodied placeholder and cut it off: one encoder, no drift.
    placeholder = RatchetMessage(b"\x00" * 32, 0, 0, b"")
    encoded = PreKeyMessage(
        params.certificate,
        params.base_key,
        params.signed_prekey_id,
        params.one_time_prekey_id,
        params.kem_prekey_kind,
        params.kem_prekey_id,
        params.kem_ciphertext,
        placeholder,
    ).encode()
    return encoded[: -len(placeholder.encode())]
