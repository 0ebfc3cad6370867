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

This module holds all the SQL of the send pipeline in one place until it moves into
``client/store/`` (the outbox to ``store/outbox.py``, the history rows and status updates
of outgoing messages to ``store/messages.py``, the session rows to ``store/sessions.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sealpost._errors import DecodeError
from sealpost.client.rows import Envelopes, Prepared
from sealpost.client.status import MessageStatus, sources
from sealpost.client.transport import b64, unb64
from sealpost.protocol.content import Content, TextContent, decode_unpadded, encode_unpadded

__all__ = [
    "OutboxRepository",
    "Outboxed",
    "OutgoingRow",
    "Retry",
    "add_outgoing",
    "decode",
    "drop_sessions_except",
    "load_sessions",
    "mark_outgoing",
    "message_uuid",
    "outboxed",
    "save_sessions",
]


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


def message_uuid(p: Prepared) -> bytes:
    """The history message a send is (b"" for a send with no history row)."""
    content = p.item.content
    return content.message_id if isinstance(content, TextContent) and p.item.store else b""


def outboxed(p: Prepared) -> Outboxed:
    """A prepared send as the outbox keeps it."""
    item = p.item
    retry = Retry(
        item.peer, item.group, item.to_self, item.transcript, item.store, item.content,
        item.attempts,
    )  # fmt: skip
    return Outboxed(message_uuid(p), p.envelopes, p.tokens, p.multi, p.own, retry)


class OutboxRepository:
    def __init__(self, db: Any) -> None:
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
        rows = self._db.execute("SELECT id, payload FROM outbox ORDER BY id").fetchall()
        return [(int(row_id), decode(bytes(payload))) for row_id, payload in rows]

    def settle(self, outbox_id: int, keep: Sequence[Outboxed]) -> None:
        """The row's sends are answered for, but ``keep`` (to send again): the row goes,
        or holds ``keep`` alone."""
        if keep:
            self._db.execute(
                "UPDATE outbox SET payload = ? WHERE id = ?", (_encode(keep), outbox_id)
            )
        else:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))


def mark_outgoing(db: Any, message_ids: Sequence[bytes], new: MessageStatus) -> None:
    """Outgoing messages become ``new``, those whose status may (:mod:`..status`);
    others keep theirs (a receipt that came before the server's answer)."""
    if not message_ids:
        return
    allowed = sources(new)
    marks = ",".join("?" * len(allowed))
    db.executemany(
        f"UPDATE messages SET status = ? WHERE message_uuid = ? AND outgoing = 1 "  # noqa: S608 (placeholders only)
        f"AND status IN ({marks})",
        [(new.value, mid, *allowed) for mid in message_ids],
    )


@dataclass(frozen=True, slots=True)
class OutgoingRow:
    """A history row for a message this device sends (stored ``QUEUED``)."""

    message_id: bytes
    peer: bytes  # account id or group id
    text: str
    sent_at: int  # ms
    received_at: int  # ms
    author: bytes
    expires_at: int | None  # ms
    attachment: bytes | None
    attachment_path: str | None


def add_outgoing(db: Any, rows: Sequence[OutgoingRow]) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO messages (message_uuid, peer, outgoing, body, sent_at, "
        "received_at, status, author, expires_at, attachment, attachment_path) "
        "VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.message_id,
                r.peer,
                r.text,
                r.sent_at,
                r.received_at,
                MessageStatus.QUEUED.value,
                r.author,
                r.expires_at,
                r.attachment,
                r.attachment_path,
            )
            for r in rows
        ],
    )


def load_sessions(db: Any, address: tuple[bytes, int]) -> bytes | None:
    """The stored session record of a remote device (None: none yet)."""
    row = db.execute(
        "SELECT state FROM sessions WHERE account_id = ? AND device_id = ?", address
    ).fetchone()
    return None if row is None else bytes(row[0])


def save_sessions(db: Any, records: Sequence[tuple[tuple[bytes, int], bytes]], now: int) -> None:
    """Store session records (``now``: seconds)."""
    db.executemany(
        "INSERT OR REPLACE INTO sessions (account_id, device_id, state, updated) "
        "VALUES (?, ?, ?, ?)",
        [(a, d, record, now) for (a, d), record in records],
    )


def drop_sessions_except(db: Any, account_id: bytes, keep: Sequence[int]) -> None:
    """Forget the stored sessions of an account's devices not in ``keep``."""
    marks = ",".join("?" * len(keep)) or "NULL"
    db.execute(
        f"DELETE FROM sessions WHERE account_id = ? AND device_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
        (account_id, *keep),
    )


def _encode(sends: Sequence[Outboxed]) -> bytes:
    return json.dumps([_send_doc(s) for s in sends]).encode()


def _send_doc(s: Outboxed) -> dict[str, Any]:
    r = s.retry
    return {
        "uuid": s.uuid.hex(),
        "messages": _envelopes_json(s.envelopes),
        "tokens": {a.hex(): b64(t) for a, t in s.tokens.items()},
        "own": _envelopes_json(s.own),
        "multi": None
        if s.multi is None
        else {"shared": b64(s.multi[0]), "wraps": _envelopes_json(s.multi[1])},
        "retry": None
        if r is None
        else {
            "peer": r.peer,
            "group": None if r.group is None else r.group.hex(),
            "to_self": r.to_self,
            "transcript": r.transcript,
            "store": r.store,
            "content": b64(encode_unpadded(r.content)),
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
                    {bytes.fromhex(a): unb64(t) for a, t in doc["tokens"].items()},
                    None
                    if multi is None
                    else (unb64(multi["shared"]), _envelopes_of(multi["wraps"])),
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
        decode_unpadded(unb64(doc["content"])),
        int(doc["attempts"]),
    )


def _envelopes_json(envelopes: Envelopes) -> list[list[Any]]:
    return [[a.hex(), d, b64(body)] for a, d, body in envelopes]


def _envelopes_of(doc: Any) -> Envelopes:
    return [(bytes.fromhex(a), int(d), unb64(b)) for a, d, b in doc]
