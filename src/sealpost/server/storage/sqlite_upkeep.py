"""Keeping the SQLite relay: its counts for operators (:meth:`SqliteUpkeep.stats`, read in
one read transaction) and the purge of what expired (queued messages, nonces, attachment
records), in steps of at most :data:`PURGE_STEP` rows, each its own write.
"""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from typing import Any, Final

from sealpost.server.storage.base import PurgeResult, StorageStats
from sealpost.server.storage.sqlite_core import SqliteCore, _snapshot
from sealpost.server.storage.sqlite_log import _log_size

__all__ = ["SqliteUpkeep"]

#: Most rows one step of a purge deletes (see :meth:`SqliteStorage.purge`).
PURGE_STEP: Final = 1000


class SqliteUpkeep(SqliteCore):
    """Statistics and retention."""

    async def stats(self) -> StorageStats:
        now = int(time.time())

        def op(conn: sqlite3.Connection) -> StorageStats:
            def one(sql: str, *args: Any) -> tuple[Any, ...]:
                return tuple(conn.execute(sql, args).fetchone())

            (accounts,) = one("SELECT COUNT(*) FROM accounts")
            (devices,) = one("SELECT COUNT(*) FROM devices")
            queued, queued_bytes, oldest = one(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(received_at) FROM queue"
            )
            attachments, attachment_bytes = one(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments"
            )
            (removed,) = one("SELECT COUNT(*) FROM account_removals")
            (usable,) = one(
                "SELECT COUNT(*) FROM invites WHERE revoked = 0 AND uses_left > 0"
                " AND (expires_at = 0 OR expires_at > ?)",
                now,
            )
            return StorageStats(
                accounts=accounts,
                devices=devices,
                queued_messages=queued,
                queued_bytes=queued_bytes,
                oldest_queued=oldest,
                attachments=attachments,
                attachment_bytes=attachment_bytes,
                log_entries=_log_size(conn),
                removed_accounts=removed,
                invites_usable=usable,
            )

        return await self._read(partial(_snapshot, op))

    async def purge(self, now: int) -> PurgeResult:
        # In steps of at most PURGE_STEP rows, each its own write, so that a large purge
        # neither holds the event loop nor keeps other writes waiting for long.
        def messages(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "DELETE FROM queue WHERE seq IN"
                " (SELECT seq FROM queue WHERE expires_at <= ? LIMIT ?)"
                " RETURNING account_id, device_id, message_id",
                (now, PURGE_STEP),
            ).fetchall()
            gone: dict[tuple[bytes, int], list[bytes]] = {}
            for account_id, device_id, message_id in rows:
                gone.setdefault((bytes(account_id), device_id), []).append(bytes(message_id))
            for address, message_ids in gone.items():
                self._effects.append(partial(self._tails.removed, address, message_ids))
            return len(rows)

        def nonces(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM nonces WHERE nonce IN"
                " (SELECT nonce FROM nonces WHERE expires_at <= ? LIMIT ?)",
                (now, PURGE_STEP),
            ).rowcount

        def attachments(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "DELETE FROM attachments WHERE attachment_id IN"
                " (SELECT attachment_id FROM attachments WHERE expires_at <= ? LIMIT ?)"
                " RETURNING attachment_id",
                (now, PURGE_STEP),
            ).fetchall()
            return [bytes(a) for (a,) in rows]

        message_count = nonce_count = 0
        while (step := await self._write(messages)) > 0:
            message_count += step
        while (step := await self._write(nonces)) > 0:
            nonce_count += step
        gone: list[bytes] = []
        while found := await self._write(attachments):
            gone += found
        return PurgeResult(message_count, nonce_count, gone)
