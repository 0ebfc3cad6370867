"""Sender keys: a group message is encrypted once, signed, and fanned out (sans-I/O).

Each member device keeps, per group, a *sender chain*: a chain id, an iteration counter, a
32-byte chain key and an Ed25519 signing key. It shares the chain's current state with
every other member device over their pairwise (Double Ratchet) sessions as a
:class:`SenderKeyDistribution`; a member added later gets the chain as it is then, and
cannot derive the keys of earlier iterations (the chain only runs forward). Any removal
makes every remaining member start a new chain (a new chain id and keys) before its next
message, shared only with the remaining members: a removed member, which keeps its old
chains, cannot decrypt anything sent after.

Key schedule (as Signal's sender keys): for iteration ``i`` with chain key ``ck_i``::

    message_key_i = HMAC-SHA256(ck_i, 0x01)        ck_{i+1} = HMAC-SHA256(ck_i, 0x02)
    key (32) || nonce (12) = HKDF-SHA256(message_key_i, salt = 32 zero bytes,
                                         info = "sealpost/v1/sender-key", 44)

Each chain also has a random 32-byte *envelope key*, under which its owner hides its
group messages from the server (:mod:`sealpost.protocol.group_sealed`).

Wire (big-endian)::

    SenderKeyDistribution = 0x01 0x33 | group_id (32) | chain_id (4) | iteration (4) |
                            chain_key (32) | signing public key (32) |
                            envelope key (32)                                   = 138 bytes
    SenderKeyMessage      = 0x01 0x31 | group_id (32) | chain_id (4) | iteration (4) |
                            AES-256-GCM ciphertext (AAD = the 42 header bytes) |
                            Ed25519 signature (64) over "sealpost/v1/sender-key-message\\0"
                            || everything before it

The signature means a member that knows a chain key still cannot forge a message from that
chain's owner. A receiver verifies the signature before touching its state, keeps at most
:data:`MAX_SKIPPED_KEYS` skipped message keys (oldest dropped) and skips at most
:data:`MAX_FORWARD_SKIP` iterations ahead, as in 1:1 sessions. Decrypting never changes a
state in place: it returns the new state, so a failed store commit loses nothing.
"""

from __future__ import annotations

import hmac
import struct
from collections import OrderedDict
from typing import Final

from sealpost._errors import (
    DecodeError,
    DuplicateMessage,
    InvalidMessage,
    TooManySkipped,
)
from sealpost.crypto.aead import aead_decrypt, aead_encrypt
from sealpost.crypto.kdf import hkdf, hmac_sha256
from sealpost.crypto.sign import SigningKey, VerifyKey
from sealpost.entropy import Rng
from sealpost.protocol.consts import MAX_FORWARD_SKIP, MAX_SKIPPED_KEYS, WIRE_VERSION
from sealpost.protocol.group_sealed import ENVELOPE_KEY_LEN, envelope_id

__all__ = [
    "DISTRIBUTION_LEN",
    "GROUP_ID_LEN",
    "LEGACY_DISTRIBUTION_LEN",
    "OwnSenderChain",
    "ReceivingSenderChain",
    "sender_key_header",
]

GROUP_ID_LEN: Final = 32
_LEGACY_DISTRIBUTION: Final = 0x30  # before envelope keys: still read, never written
_DISTRIBUTION: Final = 0x33
_MESSAGE: Final = 0x31
_HEADER = struct.Struct(">2s32sII")  # prefix, group id, chain id, iteration
HEADER_LEN: Final = _HEADER.size  # 42
LEGACY_DISTRIBUTION_LEN: Final = HEADER_LEN + 32 + 32  # 106
DISTRIBUTION_LEN: Final = LEGACY_DISTRIBUTION_LEN + ENVELOPE_KEY_LEN  # 138
_SIG: Final = 64
_INFO: Final = b"sealpost/v1/sender-key"
_SIG_CONTEXT: Final = b"sealpost/v1/sender-key-message\x00"
_ZERO_SALT: Final = bytes(32)
_MAX_ITERATION: Final = 2**32 - 1


def _keys(message_key: bytes) -> tuple[bytes, bytes]:
    okm = hkdf(message_key, salt=_ZERO_SALT, info=_INFO, length=44)
    return okm[:32], okm[32:]


def _step(chain_key: bytes) -> tuple[bytes, bytes]:
    """``(message key, next chain key)``."""
    return hmac_sha256(chain_key, b"\x01"), hmac_sha256(chain_key, b"\x02")


def sender_key_header(message: bytes) -> tuple[bytes, int, int]:
    """``(group id, chain id, iteration)`` of an encoded SenderKeyMessage (unverified)."""
    if len(message) < HEADER_LEN + 16 + _SIG:
        raise DecodeError("truncated sender-key message")
    prefix, group_id, chain_id, iteration = _HEADER.unpack_from(message)
    if prefix[0] != WIRE_VERSION or prefix[1] != _MESSAGE:
        raise DecodeError("not a sender-key message")
    return bytes(group_id), chain_id, iteration


class OwnSenderChain:
    """This device's sender chain for one group (mutable: each message steps it)."""

    __slots__ = (
        "_envelope_id",
        "chain_id",
        "chain_key",
        "envelope_key",
        "group_id",
        "iteration",
        "signing_key",
    )

    def __init__(
        self,
        group_id: bytes,
        chain_id: int,
        iteration: int,
        chain_key: bytes,
        signing_key: SigningKey,
        envelope_key: bytes,
    ) -> None:
        if (
            len(group_id) != GROUP_ID_LEN
            or len(chain_key) != 32
            or len(envelope_key) != ENVELOPE_KEY_LEN
        ):
            raise DecodeError("malformed sender chain")
        self.group_id = group_id
        self.chain_id = chain_id
        self.iteration = iteration
        self.chain_key = chain_key
        self.signing_key = signing_key
        self.envelope_key = envelope_key
        self._envelope_id: bytes | None = None

    @classmethod
    def create(cls, group_id: bytes, *, rng: Rng) -> OwnSenderChain:
        chain_id = int.from_bytes(rng(4), "big")
        return cls(group_id, chain_id, 0, rng(32), SigningKey.generate(rng), rng(32))

    @property
    def envelope_id(self) -> bytes:
        """The id receivers know this chain's envelopes by."""
        if self._envelope_id is None:
            self._envelope_id = envelope_id(self.envelope_key)
        return self._envelope_id

    def distribution(self) -> bytes:
        """The chain as it is now, for another member device (secret: send it only inside
        a pairwise session)."""
        return (
            _HEADER.pack(
                bytes((WIRE_VERSION, _DISTRIBUTION)), self.group_id, self.chain_id, self.iteration
            )
            + self.chain_key
            + self.signing_key.public_key().public_bytes_raw()
            + self.envelope_key
        )

    def encrypt(self, plaintext: bytes) -> bytes:
        """One SenderKeyMessage; the chain steps forward."""
        if self.iteration >= _MAX_ITERATION:
            raise InvalidMessage("sender chain exhausted; rotate")
        message_key, next_key = _step(self.chain_key)
        key, nonce = _keys(message_key)
        header = _HEADER.pack(
            bytes((WIRE_VERSION, _MESSAGE)), self.group_id, self.chain_id, self.iteration
        )
        body = header + aead_encrypt(key, nonce, plaintext, header)
        self.chain_key, self.iteration = next_key, self.iteration + 1
        return body + self.signing_key.sign(_SIG_CONTEXT + body)

    _RECORD = struct.Struct(">B32sII32s32s32s")

    def to_bytes(self) -> bytes:
        return self._RECORD.pack(
            2,
            self.group_id,
            self.chain_id,
            self.iteration,
            self.chain_key,
            self.signing_key.private_bytes_raw(),
            self.envelope_key,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> OwnSenderChain:
        """A stored chain. A record of version 1 (before envelope keys) is refused with
        :class:`DecodeError`: its owner starts a new chain instead."""
        if len(data) != cls._RECORD.size or data[0] != 2:
            raise DecodeError("not a sender chain record of this version")
        _, group_id, chain_id, iteration, chain_key, private, envelope = cls._RECORD.unpack(data)
        return cls(
            group_id,
            chain_id,
            iteration,
            chain_key,
            SigningKey.from_private_bytes(private),
            envelope,
        )

    def __repr__(self) -> str:
        return f"OwnSenderChain(chain_id={self.chain_id}, iteration={self.iteration}, <hidden>)"


class ReceivingSenderChain:
    """Another member device's sender chain, as far as this device has followed it."""

    __slots__ = (
        "_envelope_id",
        "chain_id",
        "chain_key",
        "envelope_key",
        "group_id",
        "iteration",
        "skipped",
        "verify_key",
    )

    def __init__(
        self,
        group_id: bytes,
        chain_id: int,
        iteration: int,
        chain_key: bytes,
        verify_key: VerifyKey,
        skipped: OrderedDict[int, bytes] | None = None,
        envelope_key: bytes | None = None,
    ) -> None:
        if envelope_key is not None and len(envelope_key) != ENVELOPE_KEY_LEN:
            raise DecodeError("malformed sender chain")
        self.group_id = group_id
        self.chain_id = chain_id
        self.iteration = iteration  # the next iteration expected
        self.chain_key = chain_key  # the chain key of ``iteration``
        self.verify_key = verify_key
        self.skipped: OrderedDict[int, bytes] = skipped or OrderedDict()
        # None for a chain that came in a legacy (106-byte) distribution: its messages
        # can only arrive in per-device wrapped envelopes (0x22)
        self.envelope_key = envelope_key
        self._envelope_id: bytes | None = None

    @property
    def envelope_id(self) -> bytes | None:
        """The id of this chain's group-sealed envelopes (``None`` without a key)."""
        if self._envelope_id is None and self.envelope_key is not None:
            self._envelope_id = envelope_id(self.envelope_key)
        return self._envelope_id

    @classmethod
    def from_distribution(cls, data: bytes) -> ReceivingSenderChain:
        """A chain from a SenderKeyDistribution (138 bytes, or a legacy 106-byte one
        without an envelope key)."""
        if len(data) < HEADER_LEN:
            raise DecodeError("truncated sender-key distribution")
        prefix, group_id, chain_id, iteration = _HEADER.unpack_from(data)
        if prefix[0] != WIRE_VERSION or prefix[1] not in (_DISTRIBUTION, _LEGACY_DISTRIBUTION):
            raise DecodeError("not a sender-key distribution")
        legacy = prefix[1] == _LEGACY_DISTRIBUTION
        if len(data) != (LEGACY_DISTRIBUTION_LEN if legacy else DISTRIBUTION_LEN):
            raise DecodeError(
                f"a sender-key distribution is {DISTRIBUTION_LEN} bytes "
                f"({LEGACY_DISTRIBUTION_LEN} before envelope keys)"
            )
        chain_key = data[HEADER_LEN : HEADER_LEN + 32]
        verify_key = VerifyKey.from_public_bytes(data[HEADER_LEN + 32 : HEADER_LEN + 64])
        envelope = None if legacy else bytes(data[LEGACY_DISTRIBUTION_LEN:])
        return cls(
            bytes(group_id),
            chain_id,
            iteration,
            bytes(chain_key),
            verify_key,
            envelope_key=envelope,
        )

    def decrypt(self, message: bytes) -> tuple[bytes, ReceivingSenderChain]:
        """``(plaintext, the chain after it)``; this object is left as it was."""
        group_id, chain_id, iteration = sender_key_header(message)
        if not hmac.compare_digest(group_id, self.group_id) or chain_id != self.chain_id:
            raise InvalidMessage("a message of another chain")
        body, signature = message[:-_SIG], message[-_SIG:]
        self.verify_key.verify(signature, _SIG_CONTEXT + body)
        header, ciphertext = body[:HEADER_LEN], body[HEADER_LEN:]
        skipped = OrderedDict(self.skipped)
        chain_key, next_iteration = self.chain_key, self.iteration
        if iteration < self.iteration:
            message_key = skipped.pop(iteration, None)
            if message_key is None:
                raise DuplicateMessage(struct.pack(">I", self.chain_id), iteration)
        else:
            if iteration - self.iteration > MAX_FORWARD_SKIP:
                raise TooManySkipped(iteration - self.iteration, MAX_FORWARD_SKIP)
            while next_iteration < iteration:
                skipped_key, chain_key = _step(chain_key)
                skipped[next_iteration] = skipped_key
                next_iteration += 1
            message_key, chain_key = _step(chain_key)
            next_iteration += 1
            while len(skipped) > MAX_SKIPPED_KEYS:
                skipped.popitem(last=False)
        key, nonce = _keys(message_key)
        plaintext = aead_decrypt(key, nonce, ciphertext, header)
        advanced = ReceivingSenderChain(
            self.group_id,
            self.chain_id,
            next_iteration,
            chain_key,
            self.verify_key,
            skipped,
            self.envelope_key,
        )
        advanced._envelope_id = self._envelope_id
        return plaintext, advanced

    # record: version 1 = no envelope key (legacy distribution), 2 = with one
    _RECORD = struct.Struct(">B32sII32s32sH")

    def to_bytes(self) -> bytes:
        head = self._RECORD.pack(
            1 if self.envelope_key is None else 2,
            self.group_id,
            self.chain_id,
            self.iteration,
            self.chain_key,
            self.verify_key.public_bytes_raw(),
            len(self.skipped),
        )
        skipped = b"".join(struct.pack(">I", i) + k for i, k in self.skipped.items())
        return head + (self.envelope_key or b"") + skipped

    @classmethod
    def from_bytes(cls, data: bytes) -> ReceivingSenderChain:
        head = cls._RECORD
        if len(data) < head.size or data[0] not in (1, 2):
            raise DecodeError("not a receiving sender chain record")
        _, group_id, chain_id, iteration, chain_key, public, count = head.unpack_from(data)
        at = head.size
        envelope = None
        if data[0] == 2:
            envelope = bytes(data[at : at + ENVELOPE_KEY_LEN])
            at += ENVELOPE_KEY_LEN
        if count > MAX_SKIPPED_KEYS or len(data) != at + 36 * count:
            raise DecodeError("malformed receiving sender chain record")
        skipped: OrderedDict[int, bytes] = OrderedDict()
        for n in range(count):
            pos = at + 36 * n
            skipped[struct.unpack_from(">I", data, pos)[0]] = bytes(data[pos + 4 : pos + 36])
        return cls(
            group_id,
            chain_id,
            iteration,
            chain_key,
            VerifyKey.from_public_bytes(public),
            skipped,
            envelope,
        )

    def __repr__(self) -> str:
        return f"ReceivingSenderChain(chain_id={self.chain_id}, iteration={self.iteration})"
