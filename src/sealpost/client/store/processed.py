"""Processed pushes: the server's queue ids of the pushes a receive batch committed.

A batch is committed before it is acknowledged; if the client stops in between, the server
pushes the same messages again, and these ids say they are stored already (so their
ratchet steps are not taken twice). An id is written in the same unit as what its push
changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from sealpost.client.store.connection import Connection

__all__ = ["ProcessedRepository"]


class ProcessedRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def seen(self, server_ids: Sequence[bytes]) -> set[bytes]:
        """Which of ``server_ids`` a committed batch holds."""
        if not server_ids:
            return set()
        marks = ",".join("?" * len(server_ids))
        rows = self._db.all(
            f"SELECT server_id FROM processed WHERE server_id IN ({marks})",  # noqa: S608 (placeholders only)
            list(server_ids),
        )
        return {bytes(row[0]) for row in rows}

    def mark(self, server_ids: Sequence[bytes], now: int) -> None:
        """These pushes are stored (``now``: seconds)."""
        self._db.executemany(
            "INSERT OR IGNORE INTO processed (server_id, at) VALUES (?, ?)",
            [(server_id, now) for server_id in server_ids],
        )
