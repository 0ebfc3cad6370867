"""What the key-transparency log holds and signs: :class:`LogEntry` and :class:`SignedTreeHead`.

Every change to an account's keys (registration, a device linked, a device revoked, a new
account key) appends one :class:`LogEntry` to the server's Merkle log
(:mod:`sealpost.transparency.merkle`); its leaf hash is ``SHA-256(0x00 || encode())``.
The entry names the account (id, username), its identity key (AIK) and commits to the
exact set of device certificates and revocations the directory serves for it
(:func:`devices_commitment`), so a client that fetched a contact's devices can check them
against the log, and a client monitoring its own account sees any device it did not add.
``sequence`` counts an account's entries from 1, so a dropped or replayed entry shows.

The server signs the log's state as a :class:`SignedTreeHead` with its log key.

An account that is removed (by the server's operator, ``sealpost admin accounts remove``,
or later at its own request) gets one last entry, a :class:`DeletionEntry`: the log stays
append-only (the account's earlier entries stay), the account map's value for the name
becomes the deletion's, and the entry is signed by the log key itself, so a client shown it
knows the server stands by the removal (it is not a lookup that merely failed). The name
can be registered again only after ``free_after``; that new account is another account id
and identity key, which former contacts' clients show as a key change.

Encodings (integers big-endian, as everywhere in sealpost; times in milliseconds since the
Unix epoch)::

    LogEntry        0x01 0x30 | account_id (16) | sequence (u64) | timestamp (u64) |
                    account_key (32) | devices (32) | username length (u8) | username
    DeletionEntry   0x01 0x34 | account_id (16) | sequence (u64) | timestamp (u64) |
                    account_key (32) | cause (u8) | free_after (u64) |
                    username length (u8) | username | Ed25519 signature (64) over
                    "sealpost/v1/kt-deletion\\0" || every byte before it
    SignedTreeHead  0x01 0x32 | tree_size (u64) | timestamp (u64) | root (32) |
                    map_root (32) | Ed25519 signature (64) over
                    "sealpost/v1/tree-head\\0" || bytes[0:82]
    map key         SHA-256("sealpost/v1/kt-map-key\\0" || username)
    map value       SHA-256("sealpost/v1/kt-map-value\\0" || index (u64) || entry leaf hash)

The head's ``map_root`` is the root of the account map (:mod:`sealpost.transparency.smt`)
after the first ``tree_size`` entries: each username's map key maps to the value of its
account's newest entry among them. Heads of the first format (``0x01 0x31``, 114 bytes,
no map root) are no longer signed or accepted; :func:`legacy_head_anchor` reads one that a
client kept, so that the first new head can still be proven consistent with it.
    devices         SHA-256("sealpost/v1/kt-devices\\0" ||
                            u32 count || (u32 length || certificate)* ||
                            u32 count || (u32 length || revocation)*)
                    each list sorted bytewise, no duplicates

Decoding is strict: a version other than 0x01 raises :class:`UnsupportedVersion`; any other
wrong byte, length or field raises :class:`DecodeError`. Building a structure from fields
that cannot be encoded raises :class:`LogEntryError` (the caller's bug). A tree head whose
signature does not verify raises :class:`BadSignature`.

Example::

    >>> entry = LogEntry(account_id, "alice", aik, devices_commitment([cert], []),
    ...                  sequence=1, timestamp=now_ms)                    # doctest: +SKIP
    >>> size = append(store, size, [entry.leaf_hash()])                   # doctest: +SKIP
    >>> sth = SignedTreeHead.sign(log_key, tree_size=size, timestamp=now_ms,
    ...                           root=root(store, size), map_root=mroot) # doctest: +SKIP
    >>> SignedTreeHead.decode(sth.encode()).verify(log_key.public_key())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Final

from sealpost._errors import DecodeError, LocalProtocolError, UnsupportedVersion
from sealpost.crypto.sign import SIGNATURE_LEN, SigningKey, VerifyKey
from sealpost.transparency.merkle import HASH_LEN, leaf_hash

__all__ = [
    "ACCOUNT_ID_LEN",
    "DELETION_ENTRY_TYPE",
    "LOG_ENTRY_TYPE",
    "MAX_USERNAME",
    "TREE_HEAD_LEN",
    "TREE_HEAD_TYPE",
    "DeletionCause",
    "DeletionEntry",
    "LogEntry",
    "LogEntryError",
    "SignedTreeHead",
    "account_map_key",
    "account_map_value",
    "decode_entry",
    "devices_commitment",
    "legacy_head_anchor",
]

_VERSION: Final = 0x01
#: Type bytes, after the wire structures' 0x01-0x21 (docs/PROTOCOL.md section 1).
LOG_ENTRY_TYPE: Final = 0x30
TREE_HEAD_TYPE: Final = 0x32
LEGACY_TREE_HEAD_TYPE: Final = 0x31
DELETION_ENTRY_TYPE: Final = 0x34  # 0x33 is the account map's MapProof

ACCOUNT_ID_LEN: Final = 16
_KEY_LEN: Final = 32
_U64_MAX: Final = 2**64 - 1

#: Usernames as the server stores them (lower-cased; the relay's USERNAME_PATTERN), so one
#: name has one encoding and one leaf.
MAX_USERNAME: Final = 32
_USERNAME: Final = re.compile(rb"[a-z0-9_.-]{3,32}")

#: Items in one devices commitment, and the size of one: an account has a handful of
#: devices; the bounds only keep the encoding's u32 fields honest.
_MAX_DEVICE_ITEMS: Final = 2**16
_MAX_DEVICE_ITEM_LEN: Final = 2**16
_DEVICES_CONTEXT: Final = b"sealpost/v1/kt-devices\x00"

_ENTRY_FIXED: Final = struct.Struct(">BB16sQQ32s32sB")  # up to the username: 99 bytes
_HEAD_BODY: Final = struct.Struct(">BBQQ32s32s")  # the signed part: 82 bytes
TREE_HEAD_LEN: Final = _HEAD_BODY.size + SIGNATURE_LEN  # 146
_LEGACY_BODY: Final = struct.Struct(">BBQQ32s")
LEGACY_TREE_HEAD_LEN: Final = _LEGACY_BODY.size + SIGNATURE_LEN  # 114
_DELETION_FIXED: Final = struct.Struct(">BB16sQQ32sBQB")  # up to the username: 76 bytes
_MAP_KEY_CONTEXT: Final = b"sealpost/v1/kt-map-key\x00"
_MAP_VALUE_CONTEXT: Final = b"sealpost/v1/kt-map-value\x00"


class LogEntryError(LocalProtocolError):
    """Fields that the log's encodings cannot carry: the caller's bug, never the peer's."""


def _check_u64(value: int, what: str, error: type[Exception], minimum: int = 0) -> None:
    if not isinstance(value, int) or not minimum <= value <= _U64_MAX:
        raise error(f"{what} must be an integer in {minimum}..2**64-1")


def _check_bytes(value: bytes, length: int, what: str, error: type[Exception]) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise error(f"{what} must be {length} bytes")


def _check_username(raw: bytes, error: type[Exception]) -> None:
    if _USERNAME.fullmatch(raw) is None:
        raise error("a username is 3 to 32 of a-z 0-9 _ . -")


def _check_kind(data: bytes, kind: int, what: str) -> None:
    """The two bytes every log structure starts with: the version, then its type."""
    if len(data) < 2:
        raise DecodeError(f"not {what}")
    if data[0] != _VERSION:
        raise UnsupportedVersion(data[0])
    if data[1] != kind:
        raise DecodeError(f"not {what}")


def _decode_leaf(
    data: bytes, kind: int, fixed: struct.Struct, what: str, trailer: int = 0
) -> tuple[tuple[Any, ...], str, bytes]:
    """The framing both kinds of log leaf share: version and type, the ``fixed`` fields
    ending in the username's length byte, the username, then exactly ``trailer`` bytes.
    Returns the fields between the type and the length byte, the username and the trailer."""
    data = bytes(data)
    _check_kind(data, kind, what)
    size = fixed.size
    if len(data) < size or len(data) != size + data[size - 1] + trailer:
        raise DecodeError(f"{what} of the wrong length")
    fields = fixed.unpack_from(data)
    name = data[size : size + fields[-1]]
    _check_username(name, DecodeError)
    return fields[2:-1], name.decode("ascii"), data[size + fields[-1] :]


def devices_commitment(certificates: Iterable[bytes], revocations: Iterable[bytes]) -> bytes:
    """The 32-byte commitment a :class:`LogEntry` makes to an account's devices.

    ``certificates`` are the account's current DeviceCertificate encodings and
    ``revocations`` its device revocation encodings, exactly as the directory serves them.
    Order does not matter (each list is sorted bytewise); a duplicate or an empty item is
    refused, so that one set of devices has one commitment."""
    parts = [_DEVICES_CONTEXT]
    for what, items in (("certificate", certificates), ("revocation", revocations)):
        ordered = sorted(bytes(item) for item in items)
        if len(ordered) > _MAX_DEVICE_ITEMS:
            raise LogEntryError(f"more than {_MAX_DEVICE_ITEMS} {what}s")
        parts.append(len(ordered).to_bytes(4, "big"))
        for i, item in enumerate(ordered):
            if not 0 < len(item) <= _MAX_DEVICE_ITEM_LEN:
                raise LogEntryError(f"a {what} is 1 to {_MAX_DEVICE_ITEM_LEN} bytes")
            if i and item == ordered[i - 1]:
                raise LogEntryError(f"the same {what} twice")
            parts.append(len(item).to_bytes(4, "big"))
            parts.append(item)
    return hashlib.sha256(b"".join(parts)).digest()


def account_map_key(username: str) -> bytes:
    """The account map's key for a (lower-cased) username."""
    raw = username.encode("ascii") if username.isascii() else b""
    _check_username(raw, LogEntryError)
    return hashlib.sha256(_MAP_KEY_CONTEXT + raw).digest()


def account_map_value(index: int, entry_leaf_hash: bytes) -> bytes:
    """The account map's value for the entry at ``index`` whose leaf hash is given."""
    _check_u64(index, "index", LogEntryError)
    _check_bytes(entry_leaf_hash, HASH_LEN, "entry_leaf_hash", LogEntryError)
    return hashlib.sha256(_MAP_VALUE_CONTEXT + index.to_bytes(8, "big") + entry_leaf_hash).digest()


def legacy_head_anchor(data: bytes) -> tuple[int, bytes]:
    """``(tree_size, root)`` of a tree head of the first format (``0x01 0x31``), which a
    client verified when it kept it; :class:`DecodeError` for anything else."""
    data = bytes(data)
    if len(data) != LEGACY_TREE_HEAD_LEN or data[:2] != bytes([_VERSION, LEGACY_TREE_HEAD_TYPE]):
        raise DecodeError("not a tree head of the first format")
    _, _, tree_size, _, root = _LEGACY_BODY.unpack_from(data)
    _check_u64(tree_size, "tree_size", DecodeError)
    return int(tree_size), bytes(root)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One state of one account, as the log records it."""

    account_id: bytes  # 16
    username: str  # 3-32 of a-z 0-9 _ . -
    account_key: bytes  # AIK, Ed25519 public, 32
    devices: bytes  # devices_commitment(...), 32
    sequence: int  # u64, this account's entries counted from 1
    timestamp: int  # u64, milliseconds since the epoch

    def __post_init__(self) -> None:
        _check_bytes(self.account_id, ACCOUNT_ID_LEN, "account_id", LogEntryError)
        if not isinstance(self.username, str) or not self.username.isascii():
            raise LogEntryError("a username is 3 to 32 of a-z 0-9 _ . -")
        _check_username(self.username.encode("ascii"), LogEntryError)
        _check_bytes(self.account_key, _KEY_LEN, "account_key", LogEntryError)
        _check_bytes(self.devices, HASH_LEN, "devices", LogEntryError)
        _check_u64(self.sequence, "sequence", LogEntryError, minimum=1)
        _check_u64(self.timestamp, "timestamp", LogEntryError)

    def encode(self) -> bytes:
        name = self.username.encode("ascii")
        return (
            _ENTRY_FIXED.pack(
                _VERSION,
                LOG_ENTRY_TYPE,
                self.account_id,
                self.sequence,
                self.timestamp,
                self.account_key,
                self.devices,
                len(name),
            )
            + name
        )

    def leaf_hash(self) -> bytes:
        """This entry's leaf in the Merkle log: ``SHA-256(0x00 || encode())``."""
        return leaf_hash(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> LogEntry:
        fields, name, _ = _decode_leaf(data, LOG_ENTRY_TYPE, _ENTRY_FIXED, "a log entry")
        account_id, sequence, timestamp, account_key, devices = fields
        _check_u64(sequence, "sequence", DecodeError, minimum=1)
        return cls(account_id, name, account_key, devices, sequence, timestamp)


@dataclass(frozen=True, slots=True)
class SignedTreeHead:
    """The log key's statement that the log had ``tree_size`` entries with hash ``root``
    at ``timestamp`` (milliseconds since the epoch), and that the account map over them
    had root ``map_root``."""

    CONTEXT: ClassVar[bytes] = b"sealpost/v1/tree-head\x00"

    tree_size: int  # u64
    timestamp: int  # u64, milliseconds
    root: bytes  # 32
    map_root: bytes  # 32, the account map's root (sealpost.transparency.smt)
    signature: bytes  # 64, Ed25519 by the log key over CONTEXT || signed_part()

    def __post_init__(self) -> None:
        _check_u64(self.tree_size, "tree_size", LogEntryError)
        _check_u64(self.timestamp, "timestamp", LogEntryError)
        _check_bytes(self.root, HASH_LEN, "root", LogEntryError)
        _check_bytes(self.map_root, HASH_LEN, "map_root", LogEntryError)
        _check_bytes(self.signature, SIGNATURE_LEN, "signature", LogEntryError)

    @classmethod
    def sign(
        cls, log_key: SigningKey, *, tree_size: int, timestamp: int, root: bytes, map_root: bytes
    ) -> SignedTreeHead:
        unsigned = cls(tree_size, timestamp, root, map_root, bytes(SIGNATURE_LEN))
        signature = log_key.sign(cls.CONTEXT + unsigned.signed_part())
        return cls(tree_size, timestamp, root, map_root, signature)

    def signed_part(self) -> bytes:
        return _HEAD_BODY.pack(
            _VERSION, TREE_HEAD_TYPE, self.tree_size, self.timestamp, self.root, self.map_root
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    def verify(self, log_key: VerifyKey) -> None:
        """Return if the log key signed this head; else raise :class:`BadSignature`."""
        log_key.verify(self.signature, self.CONTEXT + self.signed_part())

    @classmethod
    def decode(cls, data: bytes) -> SignedTreeHead:
        data = bytes(data)
        _check_kind(data, TREE_HEAD_TYPE, "a signed tree head")
        if len(data) != TREE_HEAD_LEN:
            raise DecodeError("a signed tree head of the wrong length")
        _, _, tree_size, timestamp, root, map_root = _HEAD_BODY.unpack_from(data)
        return cls(tree_size, timestamp, root, map_root, data[_HEAD_BODY.size :])


class DeletionCause(IntEnum):
    """Who had an account removed (a :class:`DeletionEntry`'s ``cause`` byte)."""

    OPERATOR = 1  # the server's operator (sealpost admin accounts remove)
    ACCOUNT = 2  # the account itself, by a request its device signed


@dataclass(frozen=True, slots=True)
class DeletionEntry:
    """The last entry of a removed account: from ``timestamp`` on the name has no account,
    and it may be registered again (as another account) from ``free_after`` on. Signed by
    the log key (:meth:`sign`), over ``CONTEXT || signed_part()``."""

    CONTEXT: ClassVar[bytes] = b"sealpost/v1/kt-deletion\x00"

    account_id: bytes  # 16
    username: str  # the removed account's (lower case)
    account_key: bytes  # 32, the removed account's AIK
    sequence: int  # u64, after the account's last entry
    timestamp: int  # u64, milliseconds: when it was removed
    cause: DeletionCause
    free_after: int  # u64, milliseconds: the name is held until then
    signature: bytes  # 64

    def __post_init__(self) -> None:
        _check_bytes(self.account_id, ACCOUNT_ID_LEN, "account_id", LogEntryError)
        if not isinstance(self.username, str) or not self.username.isascii():
            raise LogEntryError("a username is 3 to 32 of a-z 0-9 _ . -")
        _check_username(self.username.encode("ascii"), LogEntryError)
        _check_bytes(self.account_key, _KEY_LEN, "account_key", LogEntryError)
        _check_u64(self.sequence, "sequence", LogEntryError, minimum=2)
        _check_u64(self.timestamp, "timestamp", LogEntryError)
        _check_u64(self.free_after, "free_after", LogEntryError)
        if self.cause not in tuple(DeletionCause):
            raise LogEntryError("cause must be a DeletionCause")
        _check_bytes(self.signature, SIGNATURE_LEN, "signature", LogEntryError)

    @classmethod
    def sign(
        cls,
        log_key: SigningKey,
        *,
        account_id: bytes,
        username: str,
        account_key: bytes,
        sequence: int,
        timestamp: int,
        cause: DeletionCause,
        free_after: int,
    ) -> DeletionEntry:
        unsigned = cls(
            account_id,
            username,
            account_key,
            sequence,
            timestamp,
            DeletionCause(cause),
            free_after,
            bytes(SIGNATURE_LEN),
        )
        signature = log_key.sign(cls.CONTEXT + unsigned.signed_part())
        return dataclasses.replace(unsigned, signature=signature)

    def signed_part(self) -> bytes:
        name = self.username.encode("ascii")
        return (
            _DELETION_FIXED.pack(
                _VERSION,
                DELETION_ENTRY_TYPE,
                self.account_id,
                self.sequence,
                self.timestamp,
                self.account_key,
                int(self.cause),
                self.free_after,
                len(name),
            )
            + name
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encode())

    def verify(self, log_key: VerifyKey) -> None:
        """Return if the log key signed this entry; else raise :class:`BadSignature`."""
        log_key.verify(self.signature, self.CONTEXT + self.signed_part())

    @classmethod
    def decode(cls, data: bytes) -> DeletionEntry:
        fields, name, signature = _decode_leaf(
            data, DELETION_ENTRY_TYPE, _DELETION_FIXED, "a deletion entry", SIGNATURE_LEN
        )
        account_id, sequence, timestamp, account_key, cause, free_after = fields
        _check_u64(sequence, "sequence", DecodeError, minimum=2)
        if cause not in tuple(DeletionCause):
            raise DecodeError("unknown deletion cause")
        return cls(
            account_id,
            name,
            account_key,
            sequence,
            timestamp,
            DeletionCause(cause),
            free_after,
            signature,
        )


def decode_entry(data: bytes) -> LogEntry | DeletionEntry:
    """A log leaf of either kind, by its type byte (strict, as each decoder)."""
    data = bytes(data)
    if len(data) >= 2 and data[0] == _VERSION and data[1] == DELETION_ENTRY_TYPE:
        return DeletionEntry.decode(data)
    return LogEntry.decode(data)
