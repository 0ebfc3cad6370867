"""What travels inside the encryption: the plaintext of a ratchet or sender-key message.

Every plaintext is a :class:`Content` encoded as::

    version (1) = 0x01 | kind (1) | body | padding

optionally followed by the sender's newest **signed tree head** of the server's
key-transparency log (``gossip``: the 146-byte SignedTreeHead, starting ``0x01 0x32``;
docs/PROTOCOL.md, key transparency), so that a server showing two users two different logs
is caught when they exchange a message; and padded before encryption to a multiple of
:data:`PAD_BLOCK` bytes (Signal's 160): a
``0x80`` byte then zeros (ISO/IEC 7816-4), so the server and the network learn a length
bucket, not a length. Nothing is ever compressed before it is encrypted.

Common pieces (all integers big-endian): ``name`` is ``length (1) | ASCII``, the username
the sender claims (a receiver that does not know the sender checks it against the
directory); ``token`` is the sender's own 32-byte delivery token, the secret a recipient
needs to send back to it sealed; ``conv`` is ``flags (1) | [group_id (32) if flags & 1]
| [version (4) | state hash (32) if flags & 4]``: the message belongs to that group's
conversation, else to the pairwise one, and was sent under that version of the group's
state (:func:`sealpost.protocol.groupstate.state_hash`), so a member that has not got
that version yet knows it is behind.

``0x01`` text
    ``message_id (16) | sent_at (8, ms) | token | name | expire_timer (4, s) | conv-flags
    (1; & 1 group, & 2 attachment, & 4 state) | [group_id (32)] | [version (4) | state
    hash (32)] | [length (2) | attachment pointer] | length (4) | UTF-8 text``
``0x02`` delivery receipt
    ``sent_at (8, ms) | token | count (2) | message_id (16) x count``
``0x03`` group update (pairwise, to every member of the old and new state)
    ``sent_at | token | name | where (1; 1 inline, 2 attachment) | inline: length (4) |
    group chain (or a single signed state), or attachment: length (2) | attachment
    pointer to the encrypted chain | length (2) | sender-key distribution (0 bytes:
    none)``. A chain over :data:`MAX_INLINE_STATE` bytes travels as an encrypted
    attachment, like a file.
``0x04`` sender key (pairwise: the sender's chain for a group)
    ``sent_at | token | name | length (2) | sender-key distribution``
``0x05`` disappearing-message timer
    ``message_id | sent_at | token | name | conv | expire_timer (4, s; 0 = off)``
``0x06`` delete for everyone
    ``message_id | sent_at | token | name | conv | target message_id (16)``
``0x07`` sent transcript (to the sender's own other devices)
    ``sent_at | destination: kind (1; 0 account, 1 group) | account_id (16) | name, or
    group_id (32) | length (4) | the encoded content sent (unpadded)``
``0x08`` device notice (to the sender's own other devices)
    ``sent_at | event (1; 1 linked, 2 removed) | device_id (4) | name (device name)``
``0x09`` revocation notice (to every contact: the sender revoked one of its devices)
    ``sent_at | length (2) | DeviceRevocation`` (the account key's signed revocation,
    which the receiver checks against the key it holds for the sender)
``0x0a`` group state request (pairwise, to a member that sent under a newer version)
    ``sent_at | token | name | group_id (32) | version (4, the requester's)``

``message_id`` is chosen by the sender at random; receivers use it to drop duplicates,
receipts and deletions name it. The attachment pointer's bytes are
:class:`sealpost.protocol.attachment.AttachmentPointer`'s encoding, parsed by the caller.

Decoding is strict: any trailing byte, wrong length, bad padding, invalid UTF-8 or unknown
kind or flag raises :class:`DecodeError`, and nothing else is raised for any input.

>>> text = TextContent(b"\\x01" * 16, 1_700_000_000_000, b"\\x02" * 32, "alice", "hi")
>>> decode_content(encode_content(text)) == text
True
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sealpost._errors import DecodeError

__all__ = [
    "CONTENT_VERSION",
    "DELIVERY_TOKEN_LEN",
    "DEVICE_LINKED",
    "DEVICE_REMOVED",
    "GOSSIP_LEN",
    "GROUP_ID_LEN",
    "MAX_ATTACHMENT_POINTER",
    "MAX_INLINE_STATE",
    "MAX_NAME",
    "MAX_RECEIPT_IDS",
    "MAX_TEXT_BYTES",
    "MAX_TIMER",
    "MESSAGE_ID_LEN",
    "PAD_BLOCK",
    "STATE_HASH_LEN",
    "Content",
    "ContentKind",
    "DeleteContent",
    "DeviceNotice",
    "GroupStateRequest",
    "GroupUpdateContent",
    "ReceiptContent",
    "RevocationNotice",
    "SenderKeyContent",
    "SentTranscript",
    "TextContent",
    "TimerContent",
    "decode_content",
    "decode_content_with_gossip",
    "decode_unpadded",
    "encode_content",
    "encode_unpadded",
    "pad_encoded",
]

CONTENT_VERSION = 0x01
PAD_BLOCK = 160  # Signal's bucket: hides lengths to within 160 bytes
MESSAGE_ID_LEN = 16
DELIVERY_TOKEN_LEN = 32
ACCOUNT_ID_LEN = 16
GROUP_ID_LEN = 32
MAX_TEXT_BYTES = 64 * 1024  # well under the server's 96 KiB envelope limit after sealing
MAX_RECEIPT_IDS = 1000
MAX_NAME = 64  # usernames are at most 32; room to grow without a new version
MAX_ATTACHMENT_POINTER = 1024
MAX_DISTRIBUTION = 1024  # a sender-key distribution is about 150 bytes
MAX_INLINE_STATE = 16 * 1024  # larger group states travel as attachments
MAX_TIMER = 365 * 24 * 3600  # a disappearing-message timer is at most a year
MAX_TRANSCRIPT = 64 * 1024 + 2048
MAX_REVOCATION = 512  # a DeviceRevocation is about 100 bytes

#: A gossiped SignedTreeHead (sealpost.transparency.log.TREE_HEAD_LEN) and its type prefix.
GOSSIP_LEN = 146
_GOSSIP_PREFIX = b"\x01\x32"

_FLAG_GROUP = 0x01
_FLAG_ATTACHMENT = 0x02
_FLAG_STATE = 0x04  # the group state version and hash the message was sent under
STATE_HASH_LEN = 32

DEVICE_LINKED = 1
DEVICE_REMOVED = 2


class ContentKind:
    TEXT = 0x01
    RECEIPT = 0x02
    GROUP_UPDATE = 0x03
    SENDER_KEY = 0x04
    TIMER = 0x05
    DELETE = 0x06
    TRANSCRIPT = 0x07
    DEVICE_NOTICE = 0x08
    REVOCATION = 0x09
    GROUP_STATE_REQUEST = 0x0A


# ---------------------------------------------------------------------- checks


def _check_id(message_id: bytes) -> None:
    if not isinstance(message_id, bytes) or len(message_id) != MESSAGE_ID_LEN:
        raise DecodeError(f"message ids are {MESSAGE_ID_LEN} bytes")


def _check_token(token: bytes) -> None:
    if not isinstance(token, bytes) or len(token) != DELIVERY_TOKEN_LEN:
        raise DecodeError(f"delivery tokens are {DELIVERY_TOKEN_LEN} bytes")


def _check_u64(value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise DecodeError("timestamps are unsigned 64-bit integers")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.isascii() or not 1 <= len(name) <= MAX_NAME:
        raise DecodeError(f"names are 1 to {MAX_NAME} ASCII characters")
    if not name.isprintable():
        raise DecodeError("names are printable")


def _check_group(group_id: bytes | None) -> None:
    if group_id is not None and (not isinstance(group_id, bytes) or len(group_id) != 32):
        raise DecodeError(f"group ids are {GROUP_ID_LEN} bytes")


def _check_state_ref(group_id: bytes | None, version: int, state_hash: bytes | None) -> None:
    if state_hash is None:
        if version:
            raise DecodeError("a group version comes with its state hash")
        return
    if group_id is None:
        raise DecodeError("only a group message names a group state")
    if not isinstance(state_hash, bytes) or len(state_hash) != STATE_HASH_LEN:
        raise DecodeError(f"group state hashes are {STATE_HASH_LEN} bytes")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 < version < 2**32:
        raise DecodeError("group versions are 1 to 2**32-1")


def _check_timer(timer: int) -> None:
    if not isinstance(timer, int) or isinstance(timer, bool) or not 0 <= timer <= MAX_TIMER:
        raise DecodeError(f"timers are 0 to {MAX_TIMER} seconds")


def _check_blob(value: bytes, limit: int, what: str, *, empty: bool = False) -> None:
    if not isinstance(value, bytes) or len(value) > limit or (not empty and not value):
        raise DecodeError(f"{what} must be 1 to {limit} bytes")


# ---------------------------------------------------------------------- contents


@dataclass(frozen=True, slots=True)
class TextContent:
    message_id: bytes
    sent_at: int  # milliseconds since the epoch, the sender's clock
    delivery_token: bytes
    sender_name: str
    text: str
    group_id: bytes | None = None  # a group's conversation; None: the pairwise one
    attachment: bytes | None = None  # an encoded AttachmentPointer
    expire_timer: int = 0  # seconds after which every device deletes it; 0: never
    group_version: int = 0  # the group state it was sent under (0 and None: not said)
    group_hash: bytes | None = None

    def __post_init__(self) -> None:
        _check_id(self.message_id)
        _check_u64(self.sent_at)
        _check_token(self.delivery_token)
        _check_name(self.sender_name)
        _check_group(self.group_id)
        _check_state_ref(self.group_id, self.group_version, self.group_hash)
        _check_timer(self.expire_timer)
        if self.attachment is not None:
            _check_blob(self.attachment, MAX_ATTACHMENT_POINTER, "an attachment pointer")
        if len(self.text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise DecodeError(f"text over {MAX_TEXT_BYTES} bytes")

    def __repr__(self) -> str:
        return f"TextContent(message_id={self.message_id.hex()}, sent_at={self.sent_at})"


@dataclass(frozen=True, slots=True)
class ReceiptContent:
    sent_at: int
    delivery_token: bytes
    message_ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_u64(self.sent_at)
        _check_token(self.delivery_token)
        if not 1 <= len(self.message_ids) <= MAX_RECEIPT_IDS:
            raise DecodeError(f"a receipt names 1 to {MAX_RECEIPT_IDS} messages")
        for message_id in self.message_ids:
            _check_id(message_id)

    def __repr__(self) -> str:
        return f"ReceiptContent(sent_at={self.sent_at}, count={len(self.message_ids)})"


@dataclass(frozen=True, slots=True)
class GroupUpdateContent:
    """A group's chain of signed states up to its new head (or, from an older client, the
    new state alone), with the sender's current sender key for the group when the
    recipient is (still) a member."""

    sent_at: int
    delivery_token: bytes
    sender_name: str
    state: bytes | None  # an encoded GroupChain or GroupState (inline) ...
    distribution: bytes = b""  # an encoded SenderKeyDistribution, or empty
    state_pointer: bytes | None = None  # ... or an AttachmentPointer to it

    def __post_init__(self) -> None:
        _check_u64(self.sent_at)
        _check_token(self.delivery_token)
        _check_name(self.sender_name)
        if (self.state is None) == (self.state_pointer is None):
            raise DecodeError("a group update carries its state inline or as an attachment")
        if self.state is not None:
            _check_blob(self.state, MAX_INLINE_STATE, "an inline group state")
        if self.state_pointer is not None:
            _check_blob(self.state_pointer, MAX_ATTACHMENT_POINTER, "an attachment pointer")
        _check_blob(self.distribution, MAX_DISTRIBUTION, "a distribution", empty=True)

    def __repr__(self) -> str:
        return f"GroupUpdateContent(sent_at={self.sent_at})"


@dataclass(frozen=True, slots=True)
class SenderKeyContent:
    sent_at: int
    delivery_token: bytes
    sender_name: str
    distribution: bytes  # an encoded SenderKeyDistribution (it holds a chain key: secret)

    def __post_init__(self) -> None:
        _check_u64(self.sent_at)
        _check_token(self.delivery_token)
        _check_name(self.sender_name)
        _check_blob(self.distribution, MAX_DISTRIBUTION, "a distribution")

    def __repr__(self) -> str:
        return f"SenderKeyContent(sent_at={self.sent_at})"


@dataclass(frozen=True, slots=True)
class TimerContent:
    message_id: bytes
    sent_at: int
    delivery_token: bytes
    sender_name: str
    expire_timer: int  # seconds; 0 turns disappearing messages off
    group_id: bytes | None = None
    group_version: int = 0
    group_hash: bytes | None = None

    def __post_init__(self) -> None:
        _check_id(self.message_id)
        _check_u64(self.sent_at)
        _check_token(self.delivery_token)
        _check_name(self.sender_name)
        _check_timer(self.expire_timer)
        _check_group(self.group_id)
        _check_state_ref(self.group_id, self.group_version, self.group_hash)


@dataclass(frozen=True, slots=True)
class DeleteContent:
    message_id: bytes
    sent_at: int
    delivery_token: bytes
    sender_name: str
    target: bytes  # the message id the sender deletes for everyone
    group_id: bytes | None = None
    group_version: int = 0
    group_hash: bytes | None = None

    def __post_init__(self) -> None:
        _check_id(self.message_id)
        _check_u64(self.sent_at)
        _check_token(self.delivery_token)
        _check_name(self.sender_name)
        _check_id(self.target)
        _check_group(self.group_id)
        _check_state_ref(self.group_id, self.group_version, self.group_hash)


@dataclass(frozen=True, slots=True)
class SentTranscript:
    """What this account sent from another of its devices: ``content`` went to the
    account ``account_id`` (named ``name``) or to the group ``group_id``."""

    sent_at: int
    content: bytes  # the encoded content (unpadded) that was sent
    account_id: bytes | None = None
    name: str | None = None
    group_id: bytes | None = None

    def __post_init__(self) -> None:
        _check_u64(self.sent_at)
        _check_blob(self.content, MAX_TRANSCRIPT, "a transcript")
        if self.group_id is not None:
            _check_group(self.group_id)
            if self.account_id is not None or self.name is not None:
                raise DecodeError("a transcript names a group or an account, not both")
        else:
            if not isinstance(self.account_id, bytes) or len(self.account_id) != ACCOUNT_ID_LEN:
                raise DecodeError(f"account ids are {ACCOUNT_ID_LEN} bytes")
            _check_name(self.name or "")

    def __repr__(self) -> str:
        return f"SentTranscript(sent_at={self.sent_at})"


@dataclass(frozen=True, slots=True)
class GroupStateRequest:
    """To a member that sent under a newer group version: send me your chain."""

    sent_at: int
    delivery_token: bytes
    sender_name: str
    group_id: bytes
    version: int  # the requester's current version

    def __post_init__(self) -> None:
        _check_u64(self.sent_at)
        _check_token(self.delivery_token)
        _check_name(self.sender_name)
        if not isinstance(self.group_id, bytes) or len(self.group_id) != GROUP_ID_LEN:
            raise DecodeError(f"group ids are {GROUP_ID_LEN} bytes")
        if not isinstance(self.version, int) or not 0 < self.version < 2**32:
            raise DecodeError("group versions are 1 to 2**32-1")


@dataclass(frozen=True, slots=True)
class DeviceNotice:
    """To the account's other devices: a device was linked or removed."""

    sent_at: int
    event: int  # DEVICE_LINKED or DEVICE_REMOVED
    device_id: int
    device_name: str

    def __post_init__(self) -> None:
        _check_u64(self.sent_at)
        if self.event not in (DEVICE_LINKED, DEVICE_REMOVED):
            raise DecodeError("unknown device event")
        if not isinstance(self.device_id, int) or not 0 < self.device_id < 2**32:
            raise DecodeError("device ids are unsigned 32-bit integers")
        _check_name(self.device_name)


@dataclass(frozen=True, slots=True)
class RevocationNotice:
    """To every contact: the account key revoked one of this account's devices (the
    ``revocation`` is a :class:`~sealpost.protocol.wire.DeviceRevocation` encoding, parsed
    and verified by the receiver)."""

    sent_at: int
    revocation: bytes

    def __post_init__(self) -> None:
        _check_u64(self.sent_at)
        if not isinstance(self.revocation, bytes) or not 0 < len(self.revocation) <= MAX_REVOCATION:
            raise DecodeError(f"a revocation is 1 to {MAX_REVOCATION} bytes")


Content = (
    TextContent
    | ReceiptContent
    | GroupUpdateContent
    | SenderKeyContent
    | TimerContent
    | DeleteContent
    | SentTranscript
    | DeviceNotice
    | RevocationNotice
    | GroupStateRequest
)


# ---------------------------------------------------------------------- codec


class _Writer:
    __slots__ = ("parts",)

    def __init__(self, kind: int) -> None:
        self.parts = [bytes((CONTENT_VERSION, kind))]

    def raw(self, data: bytes) -> None:
        self.parts.append(data)

    def u8(self, value: int) -> None:
        self.parts.append(bytes((value,)))

    def u32(self, value: int) -> None:
        self.parts.append(struct.pack(">I", value))

    def u64(self, value: int) -> None:
        self.parts.append(struct.pack(">Q", value))

    def name(self, name: str) -> None:
        data = name.encode("ascii")
        self.parts += [bytes((len(data),)), data]

    def var(self, data: bytes, size: int) -> None:
        self.parts += [len(data).to_bytes(size, "big"), data]

    def conv(
        self,
        group_id: bytes | None,
        extra: int = 0,
        version: int = 0,
        state_hash: bytes | None = None,
    ) -> None:
        state = _FLAG_STATE if state_hash is not None else 0
        self.u8((_FLAG_GROUP if group_id is not None else 0) | extra | state)
        if group_id is not None:
            self.raw(group_id)
        if state_hash is not None:
            self.u32(version)
            self.raw(state_hash)

    def bytes(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    __slots__ = ("data", "gossip", "gossip_ok", "pos")

    def __init__(self, data: bytes, *, gossip_ok: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.gossip_ok = gossip_ok
        self.gossip: bytes | None = None

    def raw(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise DecodeError("truncated content")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.raw(1)[0]

    def u32(self) -> int:
        return int(struct.unpack(">I", self.raw(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.raw(8))[0])

    def name(self) -> str:
        data = self.raw(self.u8())
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("names are ASCII") from None

    def var(self, size: int, limit: int) -> bytes:
        length = int.from_bytes(self.raw(size), "big")
        if length > limit:
            raise DecodeError("a length is over its limit")
        return self.raw(length)

    def conv(
        self, allowed: int = _FLAG_GROUP | _FLAG_STATE
    ) -> tuple[bytes | None, int, int, bytes | None]:
        """``(group_id, flags, group version, state hash)``."""
        flags = self.u8()
        if flags & ~allowed or (flags & _FLAG_STATE and not flags & _FLAG_GROUP):
            raise DecodeError("unknown content flags")
        group_id = self.raw(GROUP_ID_LEN) if flags & _FLAG_GROUP else None
        version, state_hash = 0, None
        if flags & _FLAG_STATE:
            version, state_hash = self.u32(), self.raw(STATE_HASH_LEN)
        return group_id, flags, version, state_hash

    def end(self) -> None:
        rest = len(self.data) - self.pos
        if (
            self.gossip_ok
            and rest == GOSSIP_LEN
            and self.data[self.pos : self.pos + 2] == _GOSSIP_PREFIX
        ):
            self.gossip = self.data[self.pos :]
            self.pos = len(self.data)
        if self.pos != len(self.data):
            raise DecodeError("trailing bytes after the content")


def _pad(data: bytes) -> bytes:
    padded = data + b"\x80"
    return padded + b"\x00" * (-len(padded) % PAD_BLOCK)


def _unpad(data: bytes) -> bytes:
    if not data or len(data) % PAD_BLOCK:
        raise DecodeError("content is not padded to its block size")
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != 0x80 or len(data) - end >= PAD_BLOCK:
        raise DecodeError("bad content padding")
    return data[: end - 1]


def encode_unpadded(content: Content) -> bytes:
    """The encoding of ``content`` without padding (what a transcript embeds)."""
    if isinstance(content, TextContent):
        w = _Writer(ContentKind.TEXT)
        w.raw(content.message_id)
        w.u64(content.sent_at)
        w.raw(content.delivery_token)
        w.name(content.sender_name)
        w.u32(content.expire_timer)
        w.conv(
            content.group_id,
            _FLAG_ATTACHMENT if content.attachment is not None else 0,
            content.group_version,
            content.group_hash,
        )
        if content.attachment is not None:
            w.var(content.attachment, 2)
        w.var(content.text.encode("utf-8"), 4)
    elif isinstance(content, ReceiptContent):
        w = _Writer(ContentKind.RECEIPT)
        w.u64(content.sent_at)
        w.raw(content.delivery_token)
        w.raw(struct.pack(">H", len(content.message_ids)))
        w.raw(b"".join(content.message_ids))
    elif isinstance(content, GroupUpdateContent):
        w = _Writer(ContentKind.GROUP_UPDATE)
        w.u64(content.sent_at)
        w.raw(content.delivery_token)
        w.name(content.sender_name)
        if content.state is not None:
            w.u8(1)
            w.var(content.state, 4)
        else:
            assert content.state_pointer is not None
            w.u8(2)
            w.var(content.state_pointer, 2)
        w.var(content.distribution, 2)
    elif isinstance(content, SenderKeyContent):
        w = _Writer(ContentKind.SENDER_KEY)
        w.u64(content.sent_at)
        w.raw(content.delivery_token)
        w.name(content.sender_name)
        w.var(content.distribution, 2)
    elif isinstance(content, TimerContent | DeleteContent):
        timer = isinstance(content, TimerContent)
        w = _Writer(ContentKind.TIMER if timer else ContentKind.DELETE)
        w.raw(content.message_id)
        w.u64(content.sent_at)
        w.raw(content.delivery_token)
        w.name(content.sender_name)
        w.conv(content.group_id, 0, content.group_version, content.group_hash)
        if isinstance(content, TimerContent):
            w.u32(content.expire_timer)
        else:
            w.raw(content.target)
    elif isinstance(content, SentTranscript):
        w = _Writer(ContentKind.TRANSCRIPT)
        w.u64(content.sent_at)
        if content.group_id is not None:
            w.u8(1)
            w.raw(content.group_id)
        else:
            assert content.account_id is not None and content.name is not None
            w.u8(0)
            w.raw(content.account_id)
            w.name(content.name)
        w.var(content.content, 4)
    elif isinstance(content, DeviceNotice):
        w = _Writer(ContentKind.DEVICE_NOTICE)
        w.u64(content.sent_at)
        w.u8(content.event)
        w.u32(content.device_id)
        w.name(content.device_name)
    elif isinstance(content, RevocationNotice):
        w = _Writer(ContentKind.REVOCATION)
        w.u64(content.sent_at)
        w.var(content.revocation, 2)
    elif isinstance(content, GroupStateRequest):
        w = _Writer(ContentKind.GROUP_STATE_REQUEST)
        w.u64(content.sent_at)
        w.raw(content.delivery_token)
        w.name(content.sender_name)
        w.raw(content.group_id)
        w.u32(content.version)
    else:  # pragma: no cover - the type says it cannot happen
        raise TypeError(f"not a content: {type(content).__name__}")
    return w.bytes()


def encode_content(content: Content, gossip: bytes | None = None) -> bytes:
    """The padded plaintext for ``content``, carrying the tree head ``gossip`` if given."""
    return pad_encoded(encode_unpadded(content), gossip)


def pad_encoded(unpadded: bytes, gossip: bytes | None = None) -> bytes:
    """:func:`encode_content` of the content whose :func:`encode_unpadded` is ``unpadded``
    (for a sender that keeps that encoding, to store it too, and encodes once)."""
    if gossip is not None and (len(gossip) != GOSSIP_LEN or gossip[:2] != _GOSSIP_PREFIX):
        raise ValueError("gossip is a 146-byte signed tree head")
    return _pad(unpadded + (gossip or b""))


def decode_content(data: bytes) -> Content:
    """Parse a decrypted plaintext; raises :class:`DecodeError` on anything malformed."""
    return decode_content_with_gossip(data)[0]


def decode_content_with_gossip(data: bytes) -> tuple[Content, bytes | None]:
    """Parse a decrypted plaintext and the tree head it gossips (``None``: none). The head
    is only split off here; its signature and consistency are the caller's to check."""
    if not isinstance(data, bytes):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    r = _Reader(_unpad(data), gossip_ok=True)
    return _decode(r), r.gossip


def decode_unpadded(body: bytes) -> Content:
    """Parse an unpadded encoding (a transcript's embedded content, which gossips nothing)."""
    if not isinstance(body, bytes):
        raise DecodeError(f"expected bytes, got {type(body).__name__}")
    return _decode(_Reader(body))


def _decode(r: _Reader) -> Content:
    body = r.data
    if r.u8() != CONTENT_VERSION:
        raise DecodeError(f"unknown content version {body[0]}")
    kind = r.u8()
    content: Content
    try:
        if kind == ContentKind.TEXT:
            message_id, sent_at, token, name = r.raw(16), r.u64(), r.raw(32), r.name()
            timer = r.u32()
            group_id, flags, version, state_hash = r.conv(
                _FLAG_GROUP | _FLAG_ATTACHMENT | _FLAG_STATE
            )
            attachment = r.var(2, MAX_ATTACHMENT_POINTER) if flags & _FLAG_ATTACHMENT else None
            raw_text = r.var(4, MAX_TEXT_BYTES)
            r.end()
            content = TextContent(
                message_id,
                sent_at,
                token,
                name,
                raw_text.decode("utf-8"),
                group_id,
                attachment,
                timer,
                version,
                state_hash,
            )
        elif kind == ContentKind.RECEIPT:
            sent_at, token = r.u64(), r.raw(32)
            (count,) = struct.unpack(">H", r.raw(2))
            ids = tuple(r.raw(MESSAGE_ID_LEN) for _ in range(count))
            r.end()
            content = ReceiptContent(sent_at, token, ids)
        elif kind == ContentKind.GROUP_UPDATE:
            sent_at, token, name = r.u64(), r.raw(32), r.name()
            where = r.u8()
            state: bytes | None = None
            pointer: bytes | None = None
            if where == 1:
                state = r.var(4, MAX_INLINE_STATE)
            elif where == 2:
                pointer = r.var(2, MAX_ATTACHMENT_POINTER)
            else:
                raise DecodeError("unknown group state location")
            distribution = r.var(2, MAX_DISTRIBUTION)
            r.end()
            content = GroupUpdateContent(sent_at, token, name, state, distribution, pointer)
        elif kind == ContentKind.SENDER_KEY:
            sent_at, token, name = r.u64(), r.raw(32), r.name()
            distribution = r.var(2, MAX_DISTRIBUTION)
            r.end()
            content = SenderKeyContent(sent_at, token, name, distribution)
        elif kind in (ContentKind.TIMER, ContentKind.DELETE):
            message_id, sent_at, token, name = r.raw(16), r.u64(), r.raw(32), r.name()
            group_id, _, version, state_hash = r.conv()
            if kind == ContentKind.TIMER:
                timer = r.u32()
                r.end()
                content = TimerContent(
                    message_id, sent_at, token, name, timer, group_id, version, state_hash
                )
            else:
                target = r.raw(MESSAGE_ID_LEN)
                r.end()
                content = DeleteContent(
                    message_id, sent_at, token, name, target, group_id, version, state_hash
                )
        elif kind == ContentKind.TRANSCRIPT:
            sent_at = r.u64()
            destination = r.u8()
            if destination == 1:
                group, account, dest_name = r.raw(GROUP_ID_LEN), None, None
            elif destination == 0:
                group, account, dest_name = None, r.raw(ACCOUNT_ID_LEN), r.name()
            else:
                raise DecodeError("unknown transcript destination")
            inner = r.var(4, MAX_TRANSCRIPT)
            r.end()
            content = SentTranscript(sent_at, inner, account, dest_name, group)
        elif kind == ContentKind.DEVICE_NOTICE:
            sent_at, event, device_id, device_name = r.u64(), r.u8(), r.u32(), r.name()
            r.end()
            content = DeviceNotice(sent_at, event, device_id, device_name)
        elif kind == ContentKind.REVOCATION:
            sent_at, revocation = r.u64(), r.var(2, MAX_REVOCATION)
            r.end()
            content = RevocationNotice(sent_at, revocation)
        elif kind == ContentKind.GROUP_STATE_REQUEST:
            sent_at, token, name = r.u64(), r.raw(32), r.name()
            group_id, version = r.raw(GROUP_ID_LEN), r.u32()
            r.end()
            content = GroupStateRequest(sent_at, token, name, group_id, version)
        else:
            raise DecodeError(f"unknown content kind 0x{kind:02x}")
    except UnicodeDecodeError:
        raise DecodeError("text is not UTF-8") from None
    return content
