"""Keeping the PostgreSQL relay: its counts for operators (:meth:`PgUpkeep.stats`, read in one
``REPEATABLE READ`` transaction) and the purge of what expired (queued messages, in their
turn among the queue writes; nonces; attachment records), in steps of at most
:data:`PURGE_STEP` rows, each its own transaction; and device-link channels past their
deadline (:mod:`.pg_links`: those of a process that died with them open).
"""

from __future__ import annotations

import time
from typing import Final

from sealpost.server.storage.base import PurgeResult, StorageStats
from sealpost.server.storage.pg_core import Conn, PgCore
from sealpost.server.storage.pg_log import log_size
from sealpost.server.storage.pg_queue import purge_messages

__all__ = ["PgUpkeep"]

PURGE_STEP: Final = 1000


class PgUpkeep(PgCore):
    """Statistics and the purge."""

    async def stats(self) -> StorageStats:
        now = int(time.time())

        async def op(conn: Conn) -> StorageStats:
            queue = await conn.fetchrow(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(received_at) FROM queue"
            )
            files = await conn.fetchrow("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM attachments")
            return StorageStats(
                accounts=await conn.fetchval("SELECT COUNT(*) FROM accounts"),
                devices=await conn.fetchval("SELECT COUNT(*) FROM devices"),
                queued_messages=queue[0],
                queued_bytes=int(queue[1]),
                oldest_queued=queue[2],
                attachments=files[0],
                attachment_bytes=int(files[1]),
                log_entries=await log_size(conn),
                removed_accounts=await conn.fetchval("SELECT COUNT(*) FROM account_removals"),
                invites_usable=await conn.fetchval(
                    "SELECT COUNT(*) FROM invites WHERE NOT revoked AND uses_left > 0"
                    " AND (expires_at = 0 OR expires_at > $1)",
                    now,
                ),
            )

        return await self._tx(op, snapshot=True)

    async def purge(self, now: int) -> PurgeResult:
        """In steps of at most ``PURGE_STEP`` rows, each its own transaction."""

        async def messages(conn: Conn) -> int:
            return await purge_messages(conn, now, PURGE_STEP)

        async def nonces(conn: Conn) -> int:
            status = await conn.execute(
                "DELETE FROM nonces WHERE nonce IN"
                " (SELECT nonce FROM nonces WHERE expires_at <= $1 LIMIT $2)",
                now,
                PURGE_STEP,
            )
            return int(status.split()[-1])

        async def attachments(conn: Conn) -> list[bytes]:
            rows = await conn.fetch(
                "DELETE FROM attachments WHERE attachment_id IN"
                " (SELECT attachment_id FROM attachments WHERE expires_at <= $1 LIMIT $2)"
                " RETURNING attachment_id",
                now,
                PURGE_STEP,
            )
            return [bytes(r[0]) for r in rows]

        async def links(conn: Conn) -> None:
            await conn.execute("DELETE FROM link_channels WHERE deadline <= now()")

        message_count = nonce_count = 0
        while (step := await self.writes.own(messages, forgets=True)) > 0:  # in queue order
            message_count += step
        while (step := await self._tx(nonces)) > 0:
            nonce_count += step
        gone: list[bytes] = []
        while found := await self._tx(attachments):
            gone += found
        await self._tx(links, transaction=False)  # a few rows: the channels open now
        return PurgeResult(message_count, nonce_count, gone)
