"""Full-text search of the history: FTS5 over ``messages.body`` (migration 9).

The index is an external-content FTS5 table kept by triggers on ``messages``, so it
changes in the same transaction as the message it indexes: a message stored is found, one
deleted (for everyone, by its timer, with its conversation) is gone from the index when
its deletion commits, and ``secure-delete`` removes its terms from the index pages. A
query is the user's words, each matched as a word (an FTS5 string: no operator or column
filter a user types is interpreted), all of them required; ``"two words"`` is a phrase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sealpost.client.store.connection import Connection

__all__ = ["SearchRepository", "SearchRow", "fts_query"]

#: Marks around the matched words in a snippet (private-use characters: no message text
#: can be mistaken for them after they are stripped from it).
HIT_START, HIT_END = "\ue000", "\ue001"

_TERMS = re.compile(r'"([^"]*)"|(\S+)')


def fts_query(text: str) -> str | None:
    """The FTS5 query for ``text`` (None when it has no word)."""
    terms = []
    for phrase, word in _TERMS.findall(text.replace(HIT_START, "").replace(HIT_END, "")):
        term = (phrase or word).strip()
        if term:
            terms.append('"' + term.replace('"', '""') + '"')
    return " ".join(terms) if terms else None


@dataclass(frozen=True, slots=True)
class SearchRow:
    message_id: bytes
    peer: bytes
    outgoing: bool
    body: str
    sent_at: int
    received_at: int
    status: str
    author: bytes | None
    expires_at: int | None
    snippet: str  # the matched words between HIT_START and HIT_END


class SearchRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def search(
        self, text: str, now_ms: int, limit: int, peer: bytes | None = None
    ) -> list[SearchRow]:
        """The messages matching ``text`` (newest first), in ``peer``'s conversation
        only when given, not expired at ``now_ms``."""
        query = fts_query(text)
        if query is None or limit < 1:
            return []
        # the index gives the matching rowids; the newest that pass the filters are
        # taken by the messages' primary key, and only those get a snippet
        ids = [
            row[0]
            for row in self._db.all(
                "SELECT m.id FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
                "WHERE messages_fts MATCH ? "
                "AND (? IS NULL OR m.peer = ?) AND (m.expires_at IS NULL OR m.expires_at > ?) "
                "ORDER BY messages_fts.rowid DESC LIMIT ?",
                (query, peer, peer, now_ms, limit),
            )
        ]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._db.all(
            "SELECT m.message_uuid, m.peer, m.outgoing, m.body, m.sent_at, m.received_at, "  # noqa: S608 (placeholders only)
            "m.status, m.author, m.expires_at, snippet(messages_fts, 0, ?, ?, '…', 12) "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            f"WHERE messages_fts MATCH ? AND messages_fts.rowid IN ({marks}) "
            "ORDER BY m.id DESC",
            (HIT_START, HIT_END, query, *ids),
        )
        return [
            SearchRow(
                bytes(uid),
                bytes(p),
                bool(out),
                body,
                sent,
                received,
                status,
                None if author is None else bytes(author),
                expires,
                snippet,
            )
            for uid, p, out, body, sent, received, status, author, expires, snippet in rows
        ]
