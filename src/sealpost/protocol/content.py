"""What travels inside the encryption: the plaintext of a ratchet message.

Every plaintext is a :class:`Content` encoded as::

    version (1) = 0x01 | kind (1) | body | padding

and padded before encryption to a multiple of :data:`PAD_BLOCK` bytes (Signal's 160): a
``0x80`` byte then zeros (ISO/IEC 7816-4), so the server and the network learn a length
bucket, not a length. Nothing is ever compressed before it is encrypted.

Kinds (all integers big-endian):

``0x01`` text
    ``message_id (16) | sent_at (8, ms) | delivery_token (32) | name_length (1) |
    sender_name (ASCII) | length (4) | UTF-8 text``
``0x02`` delivery receipt
    ``sent_at (8, ms) | delivery_token (32) | count (2) | message_id (16) x count``

``delivery_token`` is the sender's own: the secret a recipient needs to send back to it
sealed (the server checks its hash, never learns who holds it). ``sender_name`` is the
username the sender claims; a receiver that does not know the sender yet checks the claim
against the server's directory before showing it. ``message_id`` is chosen by
the sender at random; receivers use it to drop duplicates and receipts name it.

Decoding is strict: any trailing byte, wrong length, bad padding, invalid UTF-8 or unknown
kind raises :class:`DecodeError`, and nothing else is raised for any input.

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
    "MAX_NAME",
    "MAX_RECEIPT_IDS",
    "MAX_TEXT_BYTES",
    "MESSAGE_ID_LEN",
    "PAD_BLOCK",
    "Content",
    "ContentKind",
    "ReceiptContent",
    "TextContent",
    "decode_content",
    "encode_content",
]

CONTENT_VERSION = 0x01
PAD_BLOCK = 160  # Signal's bucket: hides lengths to within 160 bytes
MESSAGE_ID_LEN = 16
DELIVERY_TOKEN_LEN = 32
MAX_TEXT_BYTES = 64 * 1024  # well under the server's 96 KiB envelope limit after sealing
MAX_RECEIPT_IDS = 1000
MAX_NAME = 64  # usernames are at most 32; room to grow without a new version


class ContentKind:
    TEXT = 0x01
    RECEIPT = 0x02


@dataclass(frozen=True, slots=True)
class TextContent:
    message_id: bytes
    sent_at: int  # milliseconds since the epoch, the sender's clock
    delivery_token: bytes
    sender_name: str
    text: str

    def __post_init__(self) -> None:
        _check_id(self.message_id)
        _check_u64(self.sent_at)
        _check_token(self.delivery_token)
        if not self.sender_name.isascii() or not 1 <= len(self.sender_name) <= MAX_NAME:
            raise DecodeError(f"sender names are 1 to {MAX_NAME} ASCII characters")
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


Content = TextContent | ReceiptContent


def _check_id(message_id: bytes) -> None:
    if not isinstance(message_id, bytes) or len(message_id) != MESSAGE_ID_LEN:
        raise DecodeError(f"message ids are {MESSAGE_ID_LEN} bytes")


def _check_token(token: bytes) -> None:
    if not isinstance(token, bytes) or len(token) != DELIVERY_TOKEN_LEN:
        raise DecodeError(f"delivery tokens are {DELIVERY_TOKEN_LEN} bytes")


def _check_u64(value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise DecodeError("timestamps are unsigned 64-bit integers")


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


def encode_content(content: Content) -> bytes:
    """The padded plaintext for ``content``."""
    if isinstance(content, TextContent):
        text = content.text.encode("utf-8")
        name = content.sender_name.encode("ascii")
        body = (
            bytes((CONTENT_VERSION, ContentKind.TEXT))
            + content.message_id
            + struct.pack(">Q", content.sent_at)
            + content.delivery_token
            + bytes((len(name),))
            + name
            + struct.pack(">I", len(text))
            + text
        )
    elif isinstance(content, ReceiptContent):
        body = (
            bytes((CONTENT_VERSION, ContentKind.RECEIPT))
            + struct.pack(">Q", content.sent_at)
            + content.delivery_token
            + struct.pack(">H", len(content.message_ids))
            + b"".join(content.message_ids)
        )
    else:  # pragma: no cover - the type says it cannot happen
        raise TypeError(f"not a content: {type(content).__name__}")
    return _pad(body)


def decode_content(data: bytes) -> Content:
    """Parse a decrypted plaintext; raises :class:`DecodeError` on anything malformed."""
    if not isinstance(data, bytes):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    body = _unpad(data)
    if len(body) < 2:
        raise DecodeError("truncated content")
    if body[0] != CONTENT_VERSION:
        raise DecodeError(f"unknown content version {body[0]}")
    kind, rest = body[1], body[2:]
    if kind == ContentKind.TEXT:
        fixed = MESSAGE_ID_LEN + 8 + DELIVERY_TOKEN_LEN
        if len(rest) < fixed + 1:
            raise DecodeError("truncated text content")
        name_len = rest[fixed]
        head = fixed + 1 + name_len + 4
        if len(rest) < head:
            raise DecodeError("truncated text content")
        (length,) = struct.unpack_from(">I", rest, head - 4)
        if length > MAX_TEXT_BYTES or len(rest) != head + length:
            raise DecodeError("text length does not match")
        try:
            name = rest[fixed + 1 : fixed + 1 + name_len].decode("ascii")
            text = rest[head:].decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("text is not UTF-8") from None
        return TextContent(
            rest[:MESSAGE_ID_LEN],
            struct.unpack_from(">Q", rest, MESSAGE_ID_LEN)[0],
            rest[MESSAGE_ID_LEN + 8 : fixed],
            name,
            text,
        )
    if kind == ContentKind.RECEIPT:
        head = 8 + DELIVERY_TOKEN_LEN + 2
        if len(rest) < head:
            raise DecodeError("truncated receipt")
        (count,) = struct.unpack_from(">H", rest, head - 2)
        if len(rest) != head + count * MESSAGE_ID_LEN:
            raise DecodeError("receipt length does not match")
        ids = tuple(
            rest[head + i * MESSAGE_ID_LEN : head + (i + 1) * MESSAGE_ID_LEN] for i in range(count)
        )
        return ReceiptContent(struct.unpack_from(">Q", rest)[0], rest[8 : 8 + 32], ids)
    raise DecodeError(f"unknown content kind 0x{kind:02x}")
