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

Payload (JSON, one list per row): ``[{"uuid": hex (a history message, else ""),
"messages": [[account hex, device, b64]], "tokens": {account hex: b64}, "own": [...],
"multi": null | {"shared": b64, "wraps": [...]}, "retry": null | {"peer": str,
"group": hex | null, "to_self": bool, "transcript": bool, "store": bool, "content": b64,
"attempts": int}}]``. Rows written before ``retry`` existed decode with ``retry`` None.
"""

from __future__ import annotations

import base64
import json
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


@dataclass(frozen=True, slots=True)
class Outboxed:
    """One send of an outbox row, as stored."""

    uuid: bytes
    envelopes: Envelopes
    tokens: dict[bytes, bytes]
    multi: tuple[bytes, Envelopes] | None
    own: Envelopes
    retry: Retry | None = None


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
        """Every row, oldest first, decoded (:class:`DecodeError` for a corrupt one)."""
        rows = self._db.all("SELECT id, payload FROM outbox ORDER BY id")
        return [(int(row_id), decode(bytes(payload))) for row_id, payload in rows]

    def unsent_messages(self) -> int:
        """How many history messages the rows hold (sends not yet answered for)."""
        row = self._db.one(
            "SELECT count(*) FROM outbox, json_each(CAST(outbox.payload AS TEXT)) AS s "
            "WHERE json_extract(s.value, '$.uuid') != ''"
        )
        return int(row[0])

    def settle(self, outbox_id: int, keep: Sequence[Outboxed]) -> None:
        """The row's sends are answered for, but ``keep`` (to send again): the row goes,
        or holds ``keep`` alone."""
        if keep:
            self._db.execute(
                "UPDATE outbox SET payload = ? WHERE id = ?", (_encode(keep), outbox_id)
            )
        else:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))


def _encode(sends: Sequence[Outboxed]) -> bytes:
    return json.dumps([_send_doc(s) for s in sends]).encode()


def _send_doc(s: Outboxed) -> dict[str, Any]:
    r = s.retry
    return {
        "uuid": s.uuid.hex(),
        "messages": _envelopes_json(s.envelopes),
        "tokens": {a.hex(): _b64(t) for a, t in s.tokens.items()},
        "own": _envelopes_json(s.own),
        "multi": None
        if s.multi is None
        else {"shared": _b64(s.multi[0]), "wraps": _envelopes_json(s.multi[1])},
        "retry": None
        if r is None
        else {
            "peer": r.peer,
            "group": None if r.group is None else r.group.hex(),
            "to_self": r.to_self,
            "transcript": r.transcript,
            "store": r.store,
            "content": _b64(encode_unpadded(r.content)),
            "attempts": r.attempts,
        },
    }


def decode(payload: bytes) -> list[Outboxed]:
    """An outbox row's sends; :class:`DecodeError` for anything malformed."""
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
    return Retry(
        str(doc["peer"]),
        None if group is None else bytes.fromhex(group),
        bool(doc["to_self"]),
        bool(doc["transcript"]),
        bool(doc["store"]),
        decode_unpadded(_unb64(doc["content"])),
        int(doc["attempts"]),
    )


def _envelopes_json(envelopes: Envelopes) -> list[list[Any]]:
    return [[a.hex(), d, _b64(body)] for a, d, body in envelopes]


def _envelopes_of(doc: Any) -> Envelopes:
    return [(bytes.fromhex(a), int(d), _unb64(b)) for a, d, b in doc]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
