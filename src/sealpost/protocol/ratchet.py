"""The Double Ratchet (Signal's specification), with our KDFs and bounds.

KDFs::

    KDF_RK(rk, dh)  = HKDF-SHA256(salt=rk, ikm=dh, info="sealpost/v1/ratchet-root", L=64)
                      -> (new root key, new chain key)
    KDF_CK(ck)      = (HMAC-SHA256(ck, 0x02) -> next chain key,
                       HMAC-SHA256(ck, 0x01) -> message key mk)
    message keys    = HKDF-Expand-SHA256(prk=mk, info="sealpost/v1/message-keys", L=44)
                      -> AES-256 key (32) || GCM nonce (12)
    ENCRYPT         = AES-256-GCM(key, nonce, plaintext, AD = session AD || header)

Each message key is used for exactly one message, so the nonce derived with it is unique.

Differences from the specification's pseudocode, none of which changes what goes on the
wire for an honest exchange:

- The sending half of a DH ratchet step is taken lazily, at the first encrypt after a new
  ratchet key was received, rather than during the receive. The result is identical, and
  a side that never replies never spends the key generation.
- Receiving is transactional: every derivation goes into locals, and the state is changed
  only after the AEAD tag verified. A forged, corrupted or replayed message leaves the
  state exactly as it was.
- Skipped message keys are bounded: at most :data:`MAX_FORWARD_SKIP` ahead in one chain,
  at most :data:`MAX_SKIPPED_KEYS` kept in all (oldest dropped first), and keys only for
  the current receiving chain and the :data:`MAX_OLD_RECEIVING_CHAINS` before it. The
  public keys of those old chains are remembered so that a replay on one of them is
  reported as a :class:`DuplicateMessage`.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealpost._errors import (
    DecodeError,
    DuplicateMessage,
    InvalidMessage,
    LocalProtocolError,
    SessionNotReady,
    TooManySkipped,
)
from sealpost.crypto.aead import TAG_LEN
from sealpost.crypto.dh import DhPrivateKey, DhPublicKey
from sealpost.crypto.kdf import hkdf, hkdf_expand
from sealpost.entropy import Rng
from sealpost.protocol.consts import (
    MAX_FORWARD_SKIP,
    MAX_OLD_RECEIVING_CHAINS,
    MAX_PLAINTEXT,
    MAX_SKIPPED_KEYS,
)
from sealpost.protocol.wire import RATCHET_HEADER_LEN, WireType

__all__ = ["MESSAGE_KEYS_INFO", "ROOT_INFO", "RatchetState"]

ROOT_INFO = b"sealpost/v1/ratchet-root"
MESSAGE_KEYS_INFO = b"sealpost/v1/message-keys"
_MESSAGE_KEY_SEED = b"\x01"
_CHAIN_KEY_SEED = b"\x02"
_HEADER = struct.Struct(">2s32sII")
_PREFIX = bytes((1, WireType.RATCHET_MESSAGE))
_U32_MAX = 0xFFFFFFFF
try:  # OpenSSL's HMAC without hmac.digest's Python-level dispatch (same function)
    from _hashlib import hmac_digest as _digest
except ImportError:  # pragma: no cover - CPython without OpenSSL
    _digest = hmac.digest  # type: ignore[assignment]


def _kdf_rk(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    out = hkdf(dh_out, salt=root_key, info=ROOT_INFO, length=64)
    return out[:32], out[32:]


def _seal(mk: bytes, plaintext: bytes, aad: bytes) -> bytes:
    km = hkdf_expand(mk, info=MESSAGE_KEYS_INFO, length=44)
    return AESGCM(km[:32]).encrypt(km[32:], plaintext, aad)


def _open(mk: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    km = hkdf_expand(mk, info=MESSAGE_KEYS_INFO, length=44)
    try:
        return AESGCM(km[:32]).decrypt(km[32:], ciphertext, aad)
    except InvalidTag:
        raise InvalidMessage() from None


def _skip(
    chain_key: bytes,
    chain: bytes,
    start: int,
    until: int,
    out: list[tuple[tuple[bytes, int], bytes]],
) -> bytes:
    """Derive the message keys ``start .. until-1`` of ``chain`` into ``out``; return the
    chain key that follows them."""
    for i in range(start, until):
        out.append(((chain, i), _digest(chain_key, _MESSAGE_KEY_SEED, "sha256")))
        chain_key = _digest(chain_key, _CHAIN_KEY_SEED, "sha256")
    return chain_key


class RatchetState:
    """One side's Double Ratchet state. Mutated in place by :meth:`encrypt` and
    :meth:`decrypt`; a failed :meth:`decrypt` changes nothing. ``repr`` shows no secret."""

    __slots__ = (
        "_recv_key_obj",
        "old_chains",
        "prev_n",
        "recv_chain",
        "recv_key",
        "recv_n",
        "root_key",
        "send_chain",
        "send_key",
        "send_n",
        "skipped",
    )

    def __init__(
        self,
        root_key: bytes,
        *,
        send_key: DhPrivateKey | None,
        recv_key: bytes | None,
        send_chain: bytes | None = None,
        send_n: int = 0,
        prev_n: int = 0,
        recv_chain: bytes | None = None,
        recv_n: int = 0,
        skipped: dict[tuple[bytes, int], bytes] | None = None,
        old_chains: list[bytes] | None = None,
    ) -> None:
        self.root_key = root_key
        self.send_key = send_key  # our current ratchet key pair (DHs)
        self.send_chain = send_chain  # CKs; None = take a DH step at the next encrypt
        self.send_n = send_n  # Ns
        self.prev_n = prev_n  # PN
        self.recv_key = recv_key  # DHr, raw public bytes
        self.recv_chain = recv_chain  # CKr; None until a message on DHr arrived
        self.recv_n = recv_n  # Nr
        self.skipped = skipped if skipped is not None else {}
        self.old_chains = old_chains if old_chains is not None else []
        self._recv_key_obj: DhPublicKey | None = None  # parsed recv_key, a cache

    @classmethod
    def initiator(cls, shared_key: bytes, responder_ratchet_key: bytes) -> RatchetState:
        """Alice: the responder's signed prekey is its first ratchet key."""
        return cls(shared_key, send_key=None, recv_key=responder_ratchet_key)

    @classmethod
    def responder(cls, shared_key: bytes, signed_prekey: DhPrivateKey) -> RatchetState:
        """Bob: his signed prekey pair is his first ratchet key pair."""
        return cls(shared_key, send_key=signed_prekey, recv_key=None)

    # ------------------------------------------------------------------ sending

    def encrypt(self, plaintext: bytes, associated_data: bytes, rng: Rng) -> bytes:
        """Encrypt one message; returns the encoded :class:`RatchetMessage`."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"plaintext larger than {MAX_PLAINTEXT} bytes")
        if self.send_chain is None:
            if self.recv_key is None:
                raise SessionNotReady("cannot send before the first message was received")
            new_key = DhPrivateKey.generate(rng)
            remote = self._recv_key_obj
            if remote is None or remote.public_bytes_raw() != self.recv_key:
                remote = DhPublicKey.from_public_bytes(self.recv_key)
            dh_out = new_key.exchange(remote)
            self.root_key, self.send_chain = _kdf_rk(self.root_key, dh_out)
            self.send_key = new_key
            self.prev_n = self.send_n
            self.send_n = 0
        n = self.send_n
        if n >= _U32_MAX:
            raise LocalProtocolError("sending chain exhausted")
        chain_key = self.send_chain
        assert self.send_key is not None
        mk = _digest(chain_key, _MESSAGE_KEY_SEED, "sha256")
        self.send_chain = _digest(chain_key, _CHAIN_KEY_SEED, "sha256")
        self.send_n = n + 1
        header = _HEADER.pack(
            _PREFIX, self.send_key.public_key().public_bytes_raw(), self.prev_n, n
        )
        return header + _seal(mk, plaintext, associated_data + header)

    # ------------------------------------------------------------------ receiving

    def decrypt(self, data: bytes, associated_data: bytes) -> bytes:
        """Decrypt an encoded :class:`RatchetMessage`. On any failure the state is unchanged."""
        if len(data) < RATCHET_HEADER_LEN + TAG_LEN:
            raise DecodeError("truncated ratchet message")
        prefix, pub, pn, n = _HEADER.unpack_from(data)
        if prefix != _PREFIX:
            raise DecodeError("not a version 1 ratchet message")
        aad = associated_data + data[:RATCHET_HEADER_LEN]
        ciphertext = data[RATCHET_HEADER_LEN:]

        skipped_key = (pub, n)
        mk = self.skipped.get(skipped_key)
        if mk is not None:
            plaintext = _open(mk, ciphertext, aad)
            del self.skipped[skipped_key]
            return plaintext

        new_skipped: list[tuple[tuple[bytes, int], bytes]] = []
        if pub == self.recv_key and self.recv_chain is not None:
            # Same chain: a symmetric step, possibly skipping ahead.
            if n < self.recv_n:
                raise DuplicateMessage(pub, n)
            if n - self.recv_n > MAX_FORWARD_SKIP:
                raise TooManySkipped(n - self.recv_n, MAX_FORWARD_SKIP)
            chain_key = _skip(self.recv_chain, pub, self.recv_n, n, new_skipped)
            mk = _digest(chain_key, _MESSAGE_KEY_SEED, "sha256")
            plaintext = _open(mk, ciphertext, aad)
            self.recv_chain = _digest(chain_key, _CHAIN_KEY_SEED, "sha256")
            self.recv_n = n + 1
            if new_skipped:
                self._store_skipped(new_skipped)
            return plaintext

        if pub in self.old_chains:
            # A chain we already left: its keys were used or dropped.
            raise DuplicateMessage(pub, n)
        if pub == self.recv_key:
            # The responder's signed prekey, which never carries messages.
            raise InvalidMessage()

        # A new ratchet key: a DH ratchet step.
        if self.send_key is None:
            raise InvalidMessage()
        if n > MAX_FORWARD_SKIP:
            raise TooManySkipped(n, MAX_FORWARD_SKIP)
        if self.recv_chain is not None and pn > self.recv_n:
            if pn - self.recv_n > MAX_FORWARD_SKIP:
                raise TooManySkipped(pn - self.recv_n, MAX_FORWARD_SKIP)
            assert self.recv_key is not None
            _skip(self.recv_chain, self.recv_key, self.recv_n, pn, new_skipped)
        remote = DhPublicKey.from_public_bytes(pub)
        dh_out = self.send_key.exchange(remote)
        root_key, chain_key = _kdf_rk(self.root_key, dh_out)
        chain_key = _skip(chain_key, pub, 0, n, new_skipped)
        mk = _digest(chain_key, _MESSAGE_KEY_SEED, "sha256")
        plaintext = _open(mk, ciphertext, aad)
        # Authentic: commit the step.
        if self.recv_chain is not None and self.recv_key is not None:
            self.old_chains.append(self.recv_key)
        self.root_key = root_key
        self.recv_key = pub
        self._recv_key_obj = remote
        self.recv_chain = _digest(chain_key, _CHAIN_KEY_SEED, "sha256")
        self.recv_n = n + 1
        self.send_chain = None
        if len(self.old_chains) > MAX_OLD_RECEIVING_CHAINS:
            dropped = set(self.old_chains[:-MAX_OLD_RECEIVING_CHAINS])
            del self.old_chains[:-MAX_OLD_RECEIVING_CHAINS]
            if self.skipped:
                self.skipped = {k: v for k, v in self.skipped.items() if k[0] not in dropped}
        if new_skipped:
            self._store_skipped(new_skipped)
        return plaintext

    def _store_skipped(self, keys: list[tuple[tuple[bytes, int], bytes]]) -> None:
        skipped = self.skipped
        skipped.update(keys)
        excess = len(skipped) - MAX_SKIPPED_KEYS
        if excess > 0:
            for k in list(skipped)[:excess]:
                del skipped[k]

    # ------------------------------------------------------------------ storage

    _FIXED = struct.Struct(">BB32s32s32sQQ32s32sQBH")
    _HAS_SEND_KEY = 0x01
    _HAS_SEND_CHAIN = 0x02
    _HAS_RECV_KEY = 0x04
    _HAS_RECV_CHAIN = 0x08
    _RECORD_VERSION = 1
    _SKIPPED = struct.Struct(">32sI32s")
    _ZERO = b"\x00" * 32

    def to_bytes(self) -> bytes:
        """Serialize losslessly (including the order of skipped keys)."""
        z = self._ZERO
        flags = (
            (self._HAS_SEND_KEY if self.send_key is not None else 0)
            | (self._HAS_SEND_CHAIN if self.send_chain is not None else 0)
            | (self._HAS_RECV_KEY if self.recv_key is not None else 0)
            | (self._HAS_RECV_CHAIN if self.recv_chain is not None else 0)
        )
        parts = [
            self._FIXED.pack(
                self._RECORD_VERSION,
                flags,
                self.root_key,
                self.send_key.private_bytes_raw() if self.send_key is not None else z,
                self.send_chain or z,
                self.send_n,
                self.prev_n,
                self.recv_key or z,
                self.recv_chain or z,
                self.recv_n,
                len(self.old_chains),
                len(self.skipped),
            )
        ]
        parts += self.old_chains
        pack = self._SKIPPED.pack
        parts += [pack(chain, i, mk) for (chain, i), mk in self.skipped.items()]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> RatchetState:
        fixed = cls._FIXED
        if len(data) < fixed.size:
            raise DecodeError("truncated ratchet state")
        (
            version,
            flags,
            root,
            send_key,
            send_chain,
            send_n,
            prev_n,
            recv_key,
            recv_chain,
            recv_n,
            n_old,
            n_skipped,
        ) = fixed.unpack_from(data)
        if version != cls._RECORD_VERSION or flags & ~0x0F:
            raise DecodeError("unsupported ratchet state record")
        if n_old > MAX_OLD_RECEIVING_CHAINS or n_skipped > MAX_SKIPPED_KEYS:
            raise DecodeError("ratchet state exceeds limits")
        expected = fixed.size + 32 * n_old + cls._SKIPPED.size * n_skipped
        if len(data) != expected:
            raise DecodeError("ratchet state has the wrong length")
        pos = fixed.size
        old = [data[pos + 32 * i : pos + 32 * (i + 1)] for i in range(n_old)]
        pos += 32 * n_old
        skipped: dict[tuple[bytes, int], bytes] = {}
        for chain, i, mk in cls._SKIPPED.iter_unpack(data[pos:]):
            skipped[(chain, i)] = mk
        return cls(
            root,
            send_key=DhPrivateKey.from_private_bytes(send_key)
            if flags & cls._HAS_SEND_KEY
            else None,
            send_chain=send_chain if flags & cls._HAS_SEND_CHAIN else None,
            send_n=send_n,
            prev_n=prev_n,
            recv_key=recv_key if flags & cls._HAS_RECV_KEY else None,
            recv_chain=recv_chain if flags & cls._HAS_RECV_CHAIN else None,
            recv_n=recv_n,
            skipped=skipped,
            old_chains=old,
        )

    def __repr__(self) -> str:
        return (
            f"RatchetState(send_n={self.send_n}, recv_n={self.recv_n}, "
            f"skipped={len(self.skipped)}, old_chains={len(self.old_chains)}, secrets=<hidden>)"
        )
