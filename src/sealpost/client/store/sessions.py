"""Sessions: each remote device's :class:`~sealpost.protocol.SessionRecord` (the current
session first, then a few previous ones), stored as its own encoding
(:meth:`SessionRecord.to_bytes`), keyed by (account id, device id).

A record is saved in the same unit as the message its ratchet step produced or consumed
(a crash then never reuses a message key). An empty record is never stored: no row means
no session.
"""

from __future__ import annotations

from collections.abc import Sequence

from sealpost.client.store.connection import Connection
from sealpost.protocol import SessionRecord

__all__ = ["Address", "SessionRepository"]

#: (account id, device id) of a remote device
Address = tuple[bytes, int]


class SessionRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def get(self, address: Address) -> SessionRecord:
        """The device's record (empty if there is none)."""
        row = self._db.one(
            "SELECT state FROM sessions WHERE account_id = ? AND device_id = ?", address
        )
        return SessionRecord() if row is None else SessionRecord.from_bytes(bytes(row[0]))

    def save(self, address: Address, record: SessionRecord, now: int) -> None:
        """Store the device's record (``now``: seconds); an empty one is not stored."""
        if not len(record):
            return
        self._db.execute(
            "INSERT OR REPLACE INTO sessions (account_id, device_id, state, updated) "
            "VALUES (?, ?, ?, ?)",
            (*address, record.to_bytes(), now),
        )

    def save_all(self, records: Sequence[tuple[Address, SessionRecord]], now: int) -> None:
        """Store each device's record (``now``: seconds); empty ones are not stored."""
        self._db.executemany(
            "INSERT OR REPLACE INTO sessions (account_id, device_id, state, updated) "
            "VALUES (?, ?, ?, ?)",
            [(a, d, record.to_bytes(), now) for (a, d), record in records if len(record)],
        )

    def drop_except(self, account_id: bytes, keep: Sequence[int]) -> None:
        """Forget the records of ``account_id``'s devices not in ``keep`` (all of them if
        ``keep`` is empty)."""
        if not keep:
            self._db.execute("DELETE FROM sessions WHERE account_id = ?", (account_id,))
            return
        marks = ",".join("?" * len(keep))
        self._db.execute(
            f"DELETE FROM sessions WHERE account_id = ? AND device_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
            (account_id, *keep),
        )
