"""Pending sends: messages written while the server could not be reached, not yet encrypted.

A send that cannot reach the server (no sender certificate, no prekey bundle for a new
session) is kept, when its caller asks for it, as its history row (``QUEUED``) and a row
here, written in one unit: the conversation it goes to (the contact's username, or the
group id) and its content as the sender loop would encode it. No key is kept here: the
content is encrypted only when the server can be reached again, by the same pipeline as
any send, and its row here is removed in the same unit that commits the ratchet steps and
the outbox row of that encryption (:mod:`sealpost.client.services.sending`), so a crash
at any moment leaves it either here (encrypted later) or in the outbox (the same bytes
sent again), never both and never neither. A text the server refused for an outdated
device list is kept here too, in the unit that settles its refusal, until its new
encryption is committed (:mod:`sealpost.client.services.delivery`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sealpost._errors import DecodeError
from sealpost.client.store.connection import Connection
from sealpost.protocol.content import Content, decode_unpadded, encode_unpadded

__all__ = ["PendingRepository", "PendingSend"]


@dataclass(frozen=True, slots=True)
class PendingSend:
    """A send kept until the server can be reached: ``peer`` is the contact's username
    (``""`` for a group send, which names ``group``)."""

    pending_id: int
    message_id: bytes
    peer: str
    group: bytes | None
    content: Content


class PendingRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def add(self, message_id: bytes, peer: str, group: bytes | None, content: Content) -> int:
        """Keep a send to encrypt later; returns its row id (the order sends go in)."""
        cursor = self._db.execute(
            "INSERT INTO pending_sends (message_uuid, peer, group_id, content) VALUES (?, ?, ?, ?)",
            (message_id, peer, group, encode_unpadded(content)),
        )
        return int(cursor.lastrowid)

    def all(self) -> list[PendingSend]:
        """Every pending send that reads, oldest first; one that does not (see
        :meth:`unreadable`) is left out, so it never holds up the others."""
        return self._read()[0]

    def unreadable(self) -> list[tuple[int, bytes, str, bytes | None]]:
        """(row id, message id, peer, group) of the pending sends whose content does not
        decode (a profile written by a newer client, or damage): they can never be sent."""
        return self._read()[1]

    def _read(self) -> tuple[list[PendingSend], list[tuple[int, bytes, str, bytes | None]]]:
        rows = self._db.all(
            "SELECT id, message_uuid, peer, group_id, content FROM pending_sends ORDER BY id"
        )
        good: list[PendingSend] = []
        bad: list[tuple[int, bytes, str, bytes | None]] = []
        for i, m, p, g, c in rows:
            group = None if g is None else bytes(g)
            try:
                content = decode_unpadded(bytes(c))
            except DecodeError:
                bad.append((int(i), bytes(m), str(p), group))
                continue
            good.append(PendingSend(int(i), bytes(m), str(p), group, content))
        return good, bad

    def any(self) -> bool:
        return self._db.one("SELECT 1 FROM pending_sends LIMIT 1") is not None

    def count(self) -> int:
        return int(self._db.one("SELECT count(*) FROM pending_sends")[0])

    def remove(self, pending_ids: Sequence[int]) -> int:
        """These sends are encrypted (or failed for good); how many were still here."""
        removed = 0
        for pending_id in pending_ids:
            cursor = self._db.execute("DELETE FROM pending_sends WHERE id = ?", (pending_id,))
            removed += cursor.rowcount
        return removed
