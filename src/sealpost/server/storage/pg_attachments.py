"""Attachment records in PostgreSQL: the id, size, lifetime and owner of each encrypted blob
the relay holds (the bytes are in the blob store, :mod:`sealpost.server.blobs`); an
account's quota of attachment bytes (if it has one) is checked under a transaction advisory
lock on its owner, so that one upload of an owner at a time passes the check, on any process.
"""

from __future__ import annotations

import hashlib

from sealpost.server.storage.base import AttachmentQuotaFull, AttachmentRecord
from sealpost.server.storage.pg_core import Conn, PgCore

__all__ = ["PgAttachments"]


class PgAttachments(PgCore):
    """Attachment records."""

    async def add_attachment(self, record: AttachmentRecord, *, max_owner_bytes: int = 0) -> None:
        async def op(conn: Conn) -> None:
            if max_owner_bytes:
                # One upload of an owner at a time passes this check (on any process).
                lock = int.from_bytes(hashlib.sha256(record.owner).digest()[:8], "big", signed=True)
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
                held = await conn.fetchval(
                    "SELECT COALESCE(SUM(size), 0) FROM attachments"
                    " WHERE owner = $1 AND expires_at > $2",
                    record.owner,
                    record.created,
                )
                if held + record.size > max_owner_bytes:
                    raise AttachmentQuotaFull("the account's attachments are at their quota")
            await conn.execute(
                "INSERT INTO attachments (attachment_id, size, created, expires_at, owner)"
                " VALUES ($1, $2, $3, $4, $5)",
                record.attachment_id,
                record.size,
                record.created,
                record.expires_at,
                record.owner,
            )

        await self._tx(op)

    async def attachment(self, attachment_id: bytes) -> AttachmentRecord | None:
        async def op(conn: Conn) -> AttachmentRecord | None:
            row = await conn.fetchrow(
                "SELECT size, created, expires_at, owner FROM attachments WHERE attachment_id = $1",
                attachment_id,
            )
            if row is None:
                return None
            return AttachmentRecord(attachment_id, row[0], row[1], row[2], bytes(row[3]))

        return await self._tx(op)
