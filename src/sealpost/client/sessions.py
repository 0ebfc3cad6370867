"""A remote device's sessions as stored: the current one first, then a few older ones.

Two devices that start a session with each other at the same moment end up with two; a
message may still arrive in the older one. Like libsignal's ``SessionRecord`` we keep the
newest :data:`MAX_ARCHIVED` previous sessions and try them, newest first, when the current
one cannot decrypt.

Encoding: ``version (1) = 0x01 | count (1) | (length (4) | Session.to_bytes()) x count``.
"""

from __future__ import annotations

import struct

from sealpost._errors import DecodeError
from sealpost.protocol import Session

__all__ = ["MAX_ARCHIVED", "decode_sessions", "encode_sessions"]

MAX_ARCHIVED = 4
_VERSION = 0x01


def encode_sessions(sessions: list[Session]) -> bytes:
    kept = sessions[: 1 + MAX_ARCHIVED]
    parts = [bytes((_VERSION, len(kept)))]
    for session in kept:
        data = session.to_bytes()
        parts.append(struct.pack(">I", len(data)) + data)
    return b"".join(parts)


def decode_sessions(data: bytes) -> list[Session]:
    if len(data) < 2 or data[0] != _VERSION:
        raise DecodeError("not a session record")
    count, offset, out = data[1], 2, []
    for _ in range(count):
        if offset + 4 > len(data):
            raise DecodeError("truncated session record")
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise DecodeError("truncated session record")
        out.append(Session.from_bytes(data[offset : offset + length]))
        offset += length
    if offset != len(data) or not out:
        raise DecodeError("bad session record")
    return out
