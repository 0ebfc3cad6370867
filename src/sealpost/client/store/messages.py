"""Messages: the history of each conversation, deletions for everyone, and timers.

A conversation is keyed by its peer: a contact's account id or a group's id. A message row
is its 16-byte id, whether this account sent it, its author (NULL in rows from before
groups: the peer, or this account when outgoing), its text, times (ms), status, the
attachment pointer and the record of the file saved from it
(:mod:`sealpost.client.saved_files`), and when it disappears (``expires_at``, ms).

A message deleted for everyone, or whose timer ran out, leaves a placeholder: the row
stays with its time and author, its text, attachment and saved file are gone (the FTS
index drops its words by the same update), and ``gone`` says why (``'deleted'`` or
``'expired'``). :meth:`MessageRepository.history` leaves placeholders out;
:meth:`MessageRepository.page` (what the app shows) keeps them. A deletion for everyone
that arrives before its message leaves a tombstone, so the late message is not stored.
Each conversation's disappearing-message timer is a row of ``timers`` (none: off). The
file saved from a message's attachment is removed once the unit has committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sealpost.client import saved_files
from sealpost.client.status import MessageStatus, sources
from sealpost.client.store.connection import Connection
from sealpost.protocol.content import GROUP_ID_LEN

__all__ = [
    "DELETED",
    "EXPIRED",
    "MessageRepository",
    "OutgoingRow",
    "ReceivedRow",
    "StoredMessage",
]

_CHUNK = 500  # message ids per statement (SQLite allows 999 parameters at least)
_CHUNK_PEERS = 400  # conversations per overview statement (two parameters each)

_COLUMNS = (
    "id, message_uuid, outgoing, body, sent_at, received_at, status, author, attachment, "
    "attachment_path, expires_at, gone"
)
#: Why a placeholder is there (``messages.gone``).
DELETED, EXPIRED = "deleted", "expired"
_COLUMNS_OF_M = ", ".join("m." + c.strip() for c in _COLUMNS.split(","))


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A history row as stored (see the module docstring)."""

    message_id: bytes
    outgoing: bool
    body: str
    sent_at: int
    received_at: int
    status: str
    author: bytes | None
    attachment: bytes | None
    attachment_path: str | None
    expires_at: int | None
    gone: str | None = None  # a placeholder: "deleted" or "expired"


@dataclass(frozen=True, slots=True)
class ReceivedRow:
    """A message that arrived, to store: incoming, or sent from another device of this
    account (``outgoing``, from its transcript)."""

    message_id: bytes
    peer: bytes  # account id or group id
    author: bytes  # account id
    outgoing: bool
    text: str
    sent_at: int  # ms
    received_at: int  # ms
    expires_at: int | None  # ms
    attachment: bytes | None


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


class MessageRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    # -- sent from this device (statuses: sealpost.client.status)

    def add_outgoing(self, rows: Sequence[OutgoingRow]) -> None:
        """History rows for messages this device is sending, ``QUEUED`` (a message id
        already stored is left as it is)."""
        self._db.executemany(
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

    def mark_outgoing(self, message_ids: Sequence[bytes], new: MessageStatus) -> None:
        """These outgoing messages become ``new``, those the status table lets; the
        others keep theirs (a delivery receipt that came before the server's answer)."""
        moves = sources(new)
        allowed = ",".join("?" * len(moves))
        for start in range(0, len(message_ids), _CHUNK):
            chunk = message_ids[start : start + _CHUNK]
            self._db.execute(
                f"UPDATE messages SET status = ? WHERE outgoing = 1 AND status IN ({allowed}) "  # noqa: S608 (placeholders only)
                f"AND message_uuid IN ({','.join('?' * len(chunk))})",
                (new.value, *moves, *chunk),
            )

    # -- history

    def history(self, peer: bytes, now_ms: int, limit: int) -> list[StoredMessage]:
        """The last ``limit`` messages of ``peer``'s conversation not expired at
        ``now_ms``, oldest first, placeholders left out."""
        return self.page(peer, now_ms, limit, placeholders=False)

    def page(
        self,
        peer: bytes,
        now_ms: int,
        limit: int,
        *,
        before: bytes | None = None,
        after: bytes | None = None,
        placeholders: bool = True,
    ) -> list[StoredMessage]:
        """A page of ``peer``'s conversation, oldest first, not expired at ``now_ms``: the
        ``limit`` messages just before the message ``before`` (the newest when neither
        cursor is given), or just after the message ``after``; with the placeholders of
        messages deleted or expired unless ``placeholders`` is false. A keyset page on
        ``messages_peer (peer, id)``: it reads the rows it returns and no others, however
        long the conversation. A cursor that names no message of the conversation gives
        an empty page."""
        if before is not None and after is not None:
            raise ValueError("one cursor: before or after")
        newer = after is not None
        cursor = after if newer else before
        bound = -1 if newer else 2**63 - 1  # no cursor: from the newest
        if cursor is not None:
            row = self._db.one(
                "SELECT id FROM messages WHERE message_uuid = ? AND peer = ?", (cursor, peer)
            )
            if row is None:
                return []
            bound = int(row[0])
        rows = self._db.all(
            f"SELECT {_COLUMNS} FROM messages WHERE peer = ? "  # noqa: S608 (constants only)
            f"AND id {'>' if newer else '<'} ? "
            "AND (expires_at IS NULL OR expires_at > ?) "
            f"{'' if placeholders else 'AND gone IS NULL '}"
            f"ORDER BY id {'ASC' if newer else 'DESC'} LIMIT ?",
            (peer, bound, now_ms, limit),
        )
        return [_stored(r) for r in (rows if newer else reversed(rows))]

    def overview(
        self, peers: Sequence[tuple[bytes, int]], now_ms: int, scan: int
    ) -> dict[bytes, tuple[StoredMessage | None, int]]:
        """For each ``(peer, read mark)``: the conversation's newest message not expired at
        ``now_ms`` (None: none; it may be a placeholder), and how many of its newest
        ``scan`` messages are incoming, not placeholders, and arrived after the mark
        (``received_at`` > mark): the conversation list's preview and unread count, one
        statement per 400 conversations, each reading about ``scan`` index entries of
        its conversation and no message bodies but the newest."""
        out: dict[bytes, tuple[StoredMessage | None, int]] = {}
        for start in range(0, len(peers), _CHUNK_PEERS):
            chunk = peers[start : start + _CHUNK_PEERS]
            values = ",".join("(?, ?)" for _ in chunk)
            rows = self._db.all(
                f"WITH p(peer, mark) AS (VALUES {values}), "  # noqa: S608 (placeholders only)
                "s AS (SELECT p.peer AS peer, "
                " (SELECT id FROM messages WHERE peer = p.peer "
                "  AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC LIMIT 1) AS last, "
                " (SELECT count(*) FROM messages WHERE peer = p.peer AND outgoing = 0 "
                "  AND gone IS NULL "
                "  AND received_at > p.mark AND (expires_at IS NULL OR expires_at > ?) "
                "  AND id > coalesce((SELECT id FROM messages WHERE peer = p.peer "
                "   AND (expires_at IS NULL OR expires_at > ?) "
                "   ORDER BY id DESC LIMIT 1 OFFSET ?), -1)) AS unread FROM p) "
                f"SELECT s.peer, s.unread, {_COLUMNS_OF_M} FROM s "
                "LEFT JOIN messages m ON m.id = s.last",
                (*(x for pair in chunk for x in pair), now_ms, now_ms, now_ms, scan),
            )
            for row in rows:
                last = None if row[2] is None else _stored(row[2:])
                out[bytes(row[0])] = (last, int(row[1]))
        return out

    def is_outgoing(self, message_id: bytes, peer: bytes) -> bool | None:
        """Whether this account sent ``message_id`` in ``peer``'s conversation (None:
        no such message, or only its placeholder)."""
        row = self._db.one(
            "SELECT outgoing FROM messages WHERE message_uuid = ? AND peer = ? AND gone IS NULL",
            (message_id, peer),
        )
        return None if row is None else bool(row[0])

    def any_expired(self, now_ms: int) -> bool:
        """Whether a disappearing message's time is up at ``now_ms``."""
        return (
            self._db.one(
                "SELECT 1 FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1",
                (now_ms,),
            )
            is not None
        )

    def expire(self, now_ms: int) -> int:
        """The messages whose time is up at ``now_ms`` become placeholders (and, after
        the commit, the files saved from them are deleted); how many went."""
        rows = self._db.all(
            "SELECT id, attachment_path FROM messages WHERE expires_at IS NOT NULL "
            "AND expires_at <= ?",
            (now_ms,),
        )
        self._leave_placeholders(rows, EXPIRED)
        return len(rows)

    def delete(self, message_ids: Sequence[bytes], peer: bytes) -> None:
        """These messages of ``peer``'s conversation, deleted for everyone, become
        placeholders (their saved files are deleted after the commit)."""
        rows = [
            row
            for mid in message_ids
            for row in self._db.all(
                "SELECT id, attachment_path FROM messages WHERE message_uuid = ? AND peer = ? "
                "AND gone IS NULL",
                (mid, peer),
            )
        ]
        self._leave_placeholders(rows, DELETED)

    def delete_authored(self, target: bytes, peer: bytes, author: bytes, at: int) -> None:
        """Delete for everyone: ``author``'s message ``target`` in ``peer``'s
        conversation becomes a placeholder; if it has not arrived yet, a tombstone
        (``at``: seconds) keeps it from being stored."""
        rows = self._db.all(
            "SELECT id, attachment_path, gone FROM messages WHERE message_uuid = ? AND peer = ? "
            "AND (author = ? OR (author IS NULL AND outgoing = 0 AND peer = ?))",
            (target, peer, author, author),
        )
        if not rows:
            self._db.execute(
                "INSERT OR IGNORE INTO tombstones (message_uuid, author, at) VALUES (?, ?, ?)",
                (target, author, at),
            )
            return
        self._leave_placeholders([(r[0], r[1]) for r in rows if r[2] is None], DELETED)

    def tombstoned(self, message_ids: Sequence[bytes]) -> set[tuple[bytes, bytes]]:
        """``(message id, author)`` of the tombstones among ``message_ids``."""
        if not message_ids:
            return set()
        marks = ",".join("?" * len(message_ids))
        return {
            (bytes(i), bytes(a))
            for i, a in self._db.all(
                f"SELECT message_uuid, author FROM tombstones WHERE message_uuid IN ({marks})",  # noqa: S608 (placeholders only)
                list(message_ids),
            )
        }

    # -- received

    def add_received(
        self,
        message_id: bytes,
        peer: bytes,
        author: bytes,
        outgoing: bool,
        text: str,
        sent_at: int,
        received_at: int,
        expires_at: int | None,
        attachment: bytes | None,
    ) -> bool:
        """Store a message that arrived (:meth:`add_received_all` of one); whether it was
        new."""
        row = ReceivedRow(
            message_id, peer, author, outgoing, text, sent_at, received_at, expires_at,
            attachment,
        )  # fmt: skip
        return bool(self.add_received_all([row]))

    def add_received_all(self, rows: Sequence[ReceivedRow]) -> set[bytes]:
        """Store messages that arrived: incoming (``RECEIVED``), or sent from this
        account's other device (``SENT``, from its transcript). Returns the ids of those
        that were new (a message id already stored is left as it is; of one id named
        twice, the first row is stored)."""
        if not rows:
            return set()
        ids = [r.message_id for r in rows]
        stored = self._stored(ids)
        new: dict[bytes, ReceivedRow] = {}
        for r in rows:
            if r.message_id not in stored and r.message_id not in new:
                new[r.message_id] = r
        cursor = self._db.executemany(
            "INSERT OR IGNORE INTO messages (message_uuid, peer, outgoing, body, sent_at, "
            "received_at, status, author, expires_at, attachment) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.message_id,
                    r.peer,
                    int(r.outgoing),
                    r.text,
                    r.sent_at,
                    r.received_at,
                    (MessageStatus.SENT if r.outgoing else MessageStatus.RECEIVED).value,
                    r.author,
                    r.expires_at,
                    r.attachment,
                )
                for r in new.values()
            ],
        )
        if cursor.rowcount == len(new):
            return set(new)
        # a row was skipped after all (OR IGNORE skips more than a taken id): ask
        return self._stored(list(new)) - stored

    def _stored(self, message_ids: Sequence[bytes]) -> set[bytes]:
        """Which of these message ids are stored."""
        found: set[bytes] = set()
        for start in range(0, len(message_ids), _CHUNK):
            chunk = message_ids[start : start + _CHUNK]
            found.update(
                bytes(i)
                for (i,) in self._db.all(
                    "SELECT message_uuid FROM messages WHERE message_uuid IN "  # noqa: S608 (placeholders only)
                    f"({','.join('?' * len(chunk))})",
                    list(chunk),
                )
            )
        return found

    def delivered(self, message_id: bytes, peer: bytes) -> bool:
        """``peer``'s delivery receipt for the message this account sent it: ``DELIVERED``
        if the status table allows the move (one already past it stays). Whether this
        account sent such a message to ``peer`` at all."""
        moves = sources(MessageStatus.DELIVERED)
        cursor = self._db.execute(
            "UPDATE messages SET status = CASE WHEN status IN "  # noqa: S608 (placeholders only)
            f"({','.join('?' * len(moves))}) THEN ? ELSE status END "
            "WHERE message_uuid = ? AND peer = ? AND outgoing = 1",
            (*moves, MessageStatus.DELIVERED.value, message_id, peer),
        )
        return bool(cursor.rowcount)

    def group_receipts(self, message_id: bytes) -> tuple[int, bytes, bytes] | None:
        """The group message this account sent as ``message_id``: (row id, group id, the
        account ids that confirmed it so far, concatenated)."""
        row = self._db.one(
            "SELECT id, peer, receipts FROM messages WHERE message_uuid = ? AND outgoing = 1 "
            "AND length(peer) = ?",
            (message_id, GROUP_ID_LEN),
        )
        if row is None:
            return None
        return int(row[0]), bytes(row[1]), bytes(row[2] or b"")

    def set_group_receipts(self, row_id: int, confirmed: bytes, all_confirmed: bool) -> None:
        """The members that confirmed a group message; ``DELIVERED`` once all have (if the
        status table allows the move)."""
        moves = sources(MessageStatus.DELIVERED)
        self._db.execute(
            "UPDATE messages SET receipts = ?, status = CASE WHEN ? AND status IN "  # noqa: S608 (placeholders only)
            f"({','.join('?' * len(moves))}) THEN ? ELSE status END WHERE id = ?",
            (confirmed, all_confirmed, *moves, MessageStatus.DELIVERED.value, row_id),
        )

    def _leave_placeholders(self, rows: list[tuple[int, str | None]], why: str) -> None:
        """``rows`` (id, saved file) keep their time and author only: the text (and by
        the update trigger its index entry), the attachment, the timer and the receipts
        go; the saved files go after the commit."""
        if not rows:
            return
        self._db.executemany(
            "UPDATE messages SET body = '', attachment = NULL, attachment_path = NULL, "
            "expires_at = NULL, receipts = NULL, gone = ? WHERE id = ?",
            [(why, r[0]) for r in rows],
        )
        for _, path in rows:
            if path:
                self._db.after_commit(partial(saved_files.remove, path))

    # -- timers

    def timers(self) -> dict[bytes, int]:
        """Every conversation's disappearing-message timer that is on (seconds)."""
        return {bytes(p): int(t) for p, t in self._db.all("SELECT peer, seconds FROM timers")}

    def set_timer(self, peer: bytes, seconds: int) -> None:
        """``peer``'s timer is now ``seconds`` (0: off)."""
        if seconds:
            self._db.execute(
                "INSERT OR REPLACE INTO timers (peer, seconds) VALUES (?, ?)", (peer, seconds)
            )
        else:
            self._db.execute("DELETE FROM timers WHERE peer = ?", (peer,))

    # -- attachments

    def attachment(self, message_id: bytes) -> tuple[bytes, str | None] | None:
        """A message's attachment pointer and the record of the file saved from it (None:
        no such message, or one without an attachment)."""
        row = self._db.one(
            "SELECT attachment, attachment_path FROM messages WHERE message_uuid = ?",
            (message_id,),
        )
        if row is None or row[0] is None:
            return None
        return bytes(row[0]), row[1]

    def set_attachment_path(self, message_id: bytes, record: str) -> None:
        """The file saved from a message's attachment (:func:`saved_files.record`)."""
        self._db.execute(
            "UPDATE messages SET attachment_path = ? WHERE message_uuid = ?", (record, message_id)
        )


def _stored(row: Any) -> StoredMessage:
    """A row of :data:`_COLUMNS` as a :class:`StoredMessage`."""
    _, uid, outgoing, body, sent, received, status, author, pointer, path, expires, gone = row
    return StoredMessage(
        bytes(uid),
        bool(outgoing),
        body,
        sent,
        received,
        status,
        None if author is None else bytes(author),
        None if pointer is None else bytes(pointer),
        path,
        expires,
        gone,
    )
