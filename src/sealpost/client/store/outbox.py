"""The outbox: every send a batch committed, as the bytes that go to the server, until
the server has answered for it.

A send batch is committed in one transaction: its ratchet steps, its history rows
(status ``QUEUED``) and ONE outbox row holding every send of the batch, in order (one row
per batch keeps the commit cheap). Only then does anything go to the server. When the
server's answers come, :meth:`OutboxRepository.settle` removes the sends that are settled
(stored, refused, or encrypted anew for a changed device list) and keeps the others (the
connection was lost before the answer): they go again, the same bytes, by
:meth:`~sealpost.client.services.delivery.Delivery.flush_outbox`. Sending the same bytes
twice reuses no key; receivers drop a message id they already have.

Each send keeps, beside its bytes, what is needed to encrypt it anew (its content, its
conversation and how many attempts it has had), so a send the server refuses for an
outdated device list is retried whether it was sent live or again after a crash.

Payload, binary (big endian; a row holds a whole batch, so it is written without JSON or
base64, a third smaller than before)::

    payload   = 0x03 | count (4) | send * count
    send      = send id seed (1: 0 or 16 | bytes)
                | uuid (1: 0 or 16 | bytes: a history message, else none)
                | envelopes (messages) | tokens | envelopes (own)
                | 0x00 | 0x01 shared (4 | bytes) envelopes (wraps)        -- multi
                | 0x00 | 0x01 retry
    envelopes = count (4) | (account (1 | bytes) | device (4) | body (4 | bytes)) * count
    tokens    = count (2) | (account (1 | bytes) | token (1 | bytes)) * count
    retry     = peer (2 | UTF-8) | group (0x00 | 0x01 (1 | bytes)) | flags (1: 0x01 to_self,
                0x02 transcript, 0x04 store) | attempts (4) | content (4 | unpadded encoding)

The send id seed is 16 random bytes drawn when the row is committed; the send ids on the
wire are derived from it (:mod:`sealpost.protocol.send_id`), so a resend of the row carries
the same ones and the relay stores nothing twice. Rows of version ``0x02`` (the same
without the seed) decode with none (b""), and go without send ids, as before.

Rows written before the binary form are JSON (a list, so they begin with ``[``) and still decode:
``[{"uuid": hex (a history message, else ""), "messages": [[account hex, device, b64]],
"tokens": {account hex: b64}, "own": [...], "multi": null | {"shared": b64, "wraps":
[...]}, "retry": null | {"peer": str, "group": hex | null, "to_self": bool, "transcript":
bool, "store": bool, "content": b64, "attempts": int}}]``; rows written before ``retry``
existed decode with ``retry`` None. Anything else is a :class:`DecodeError`.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sealpost._errors import DecodeError
from sealpost.client.store.connection import Connection
from sealpost.protocol.content import Content, decode_unpadded, encode_unpadded

__all__ = ["OutboxRepository", "Outboxed", "Retry", "decode"]

#: (recipient account id, recipient device id, sealed body): ``client.rows.Envelopes``
Envelopes = list[tuple[bytes, int, bytes]]


@dataclass(frozen=True, slots=True)
class Retry:
    """What it takes to encrypt a send anew."""

    peer: str
    group: bytes | None
    to_self: bool
    transcript: bool
    store: bool
    content: Content
    attempts: int
    #: ``encode_unpadded(content)`` if the sender has it (stored as it is), else made here
    encoded: bytes | None = None


@dataclass(frozen=True, slots=True)
class Outboxed:
    """One send of an outbox row, as stored."""

    uuid: bytes
    envelopes: Envelopes
    tokens: dict[bytes, bytes]
    multi: tuple[bytes, Envelopes] | None
    own: Envelopes
    retry: Retry | None = None
    #: The seed of the send ids its envelopes carry (b"": none, a row from before them)
    send_id: bytes = b""


class OutboxRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def add(self, sends: Sequence[Outboxed]) -> int:
        """One row for a batch (every send's parts, tokens and retry record, in order);
        returns its id."""
        cursor = self._db.execute(
            "INSERT INTO outbox (message_uuid, payload) VALUES (?, ?)", (b"", _encode(sends))
        )
        return int(cursor.lastrowid)

    def pending(self) -> list[tuple[int, list[Outboxed]]]:
        """Every row that decodes, oldest first; one that does not (see
        :meth:`unreadable`) is left out, so it never holds up the rows after it."""
        return self._read()[0]

    def unreadable(self) -> list[int]:
        """The ids of the rows whose payload does not decode (a profile written by a newer
        client, or damage): they can never be sent again."""
        return self._read()[1]

    def drop(self, outbox_ids: Sequence[int]) -> None:
        """Forget these rows (unreadable ones: nothing in them can be sent)."""
        self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in outbox_ids])

    def _read(self) -> tuple[list[tuple[int, list[Outboxed]]], list[int]]:
        good: list[tuple[int, list[Outboxed]]] = []
        bad: list[int] = []
        for row_id, payload in self._db.all("SELECT id, payload FROM outbox ORDER BY id"):
            try:
                good.append((int(row_id), decode(bytes(payload))))
            except DecodeError:
                bad.append(int(row_id))
        return good, bad

    def unsent_messages(self) -> int:
        """How many history messages the rows hold (sends not yet answered for)."""
        return sum(1 for _, sends in self.pending() for s in sends if s.uuid)

    def settle(self, outbox_id: int, keep: Sequence[Outboxed]) -> None:
        """The row's sends are answered for, but ``keep`` (to send again): the row goes,
        or holds ``keep`` alone."""
        if keep:
            self._db.execute(
                "UPDATE outbox SET payload = ? WHERE id = ?", (_encode(keep), outbox_id)
            )
        else:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))


_BINARY = 0x03  # the first byte of a binary payload (a JSON one begins with "[")
_BINARY_V2 = 0x02  # the binary form before send ids
_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
_TO_SELF, _TRANSCRIPT, _STORE = 0x01, 0x02, 0x04


def _encode(sends: Sequence[Outboxed]) -> bytes:
    """The binary payload of these sends (module docstring)."""
    out = [bytes((_BINARY,)), _U32.pack(len(sends))]
    for s in sends:
        out.append(_short(s.send_id))
        out += (_short(s.uuid), _envelopes_bin(s.envelopes), _U16.pack(len(s.tokens)))
        for account, token in s.tokens.items():
            out += (_short(account), _short(token))
        out.append(_envelopes_bin(s.own))
        if s.multi is None:
            out.append(b"\x00")
        else:
            out += (b"\x01", _long(s.multi[0]), _envelopes_bin(s.multi[1]))
        r = s.retry
        if r is None:
            out.append(b"\x00")
            continue
        peer = r.peer.encode("utf-8")
        flags = (
            (_TO_SELF if r.to_self else 0)
            | (_TRANSCRIPT if r.transcript else 0)
            | (_STORE if r.store else 0)
        )
        out += (b"\x01", _U16.pack(len(peer)), peer)
        out.append(b"\x00" if r.group is None else b"\x01" + _short(r.group))
        out += (_U8.pack(flags), _U32.pack(r.attempts))
        out.append(_long(r.encoded if r.encoded is not None else encode_unpadded(r.content)))
    return b"".join(out)


def _short(data: bytes) -> bytes:
    if len(data) > 0xFF:
        raise ValueError("an outbox field of over 255 bytes")
    return _U8.pack(len(data)) + data


def _long(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _envelopes_bin(envelopes: Envelopes) -> bytes:
    out = [_U32.pack(len(envelopes))]
    for account, device, body in envelopes:
        out += (_short(account), _U32.pack(device), _U32.pack(len(body)), body)
    return b"".join(out)


class _Reader:
    """Reads a binary payload; anything short or left over is a :class:`DecodeError`."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise DecodeError("a corrupt outbox entry")
        out, self.pos = self.data[self.pos : end], end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def short(self) -> bytes:
        return self.take(self.u8())

    def long(self) -> bytes:
        return self.take(self.u32())

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise DecodeError("a corrupt outbox entry")
        return value == 1

    def envelopes(self) -> Envelopes:
        return [(self.short(), self.u32(), self.long()) for _ in range(self.u32())]


def _decode_binary(payload: bytes) -> list[Outboxed]:
    r = _Reader(payload)
    seeded = r.u8() == _BINARY  # the version byte: 0x02 has no send id seed
    out: list[Outboxed] = []
    for _ in range(r.u32()):
        send_id = r.short() if seeded else b""
        uuid, envelopes = r.short(), r.envelopes()
        tokens = {}
        for _ in range(r.u16()):
            account = r.short()
            tokens[account] = r.short()
        own = r.envelopes()
        multi = (r.long(), r.envelopes()) if r.flag() else None
        retry = None
        if r.flag():
            try:
                peer = r.take(r.u16()).decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("a corrupt outbox entry") from None
            group = r.short() if r.flag() else None
            flags, attempts, encoded = r.u8(), r.u32(), r.long()
            if flags & ~(_TO_SELF | _TRANSCRIPT | _STORE):
                raise DecodeError("a corrupt outbox entry")
            retry = Retry(
                peer, group, bool(flags & _TO_SELF), bool(flags & _TRANSCRIPT),
                bool(flags & _STORE), decode_unpadded(encoded), attempts, encoded,
            )  # fmt: skip
        out.append(Outboxed(uuid, envelopes, tokens, multi, own, retry, send_id))
    if r.pos != len(payload):
        raise DecodeError("a corrupt outbox entry")
    return out


def decode(payload: bytes) -> list[Outboxed]:
    """An outbox row's sends; :class:`DecodeError` for anything malformed."""
    if payload[:1] in (bytes((_BINARY,)), bytes((_BINARY_V2,))):
        return _decode_binary(payload)
    try:
        out: list[Outboxed] = []
        for doc in json.loads(payload):
            multi = doc.get("multi")
            retry = doc.get("retry")
            out.append(
                Outboxed(
                    bytes.fromhex(doc["uuid"]),
                    _envelopes_of(doc["messages"]),
                    {bytes.fromhex(a): _unb64(t) for a, t in doc["tokens"].items()},
                    None
                    if multi is None
                    else (_unb64(multi["shared"]), _envelopes_of(multi["wraps"])),
                    _envelopes_of(doc.get("own", [])),
                    None if retry is None else _retry_of(retry),
                )
            )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecodeError("a corrupt outbox entry") from exc
    return out


def _retry_of(doc: dict[str, Any]) -> Retry:
    group = doc["group"]
    encoded = _unb64(doc["content"])
    return Retry(
        str(doc["peer"]),
        None if group is None else bytes.fromhex(group),
        bool(doc["to_self"]),
        bool(doc["transcript"]),
        bool(doc["store"]),
        decode_unpadded(encoded),
        int(doc["attempts"]),
        encoded,
    )


def _envelopes_of(doc: Any) -> Envelopes:
    return [(bytes.fromhex(a), int(d), _unb64(b)) for a, d, b in doc]


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
