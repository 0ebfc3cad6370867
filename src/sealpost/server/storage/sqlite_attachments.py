"""Attachment records in SQLite: the id, size, lifetime and owner of each encrypted blob
the relay holds (the bytes are in the blob store, :mod:`sealpost.server.blobs`); an
account's quota of attachment bytes is checked in the transaction that would pass it.
"""

from __future__ import annotations

import sqlite3

from sealpost.server.storage.base import AttachmentQuotaFull, AttachmentRecord
from sealpost.server.storage.sqlite_core import SqliteCore

__all__ = ["SqliteAttachments"]


class SqliteAttachments(SqliteCore):
    """Attachment records."""

    async def add_attachment(self, record: AttachmentRecord, *, max_owner_bytes: int = 0) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if max_owner_bytes:
                (held,) = conn.execute(
                    "SELECT COALESCE(SUM(size), 0) FROM attachments"
                    " WHERE owner = ? AND expires_at > ?",
                    (record.owner, record.created),
                ).fetchone()
                if held + record.size > max_owner_bytes:
                    raise AttachmentQuotaFull("the account's attachments are at their quota")
            conn.execute(
                "INSERT INTO attachments (attachment_id, size, created, expires_at, owner)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    record.attachment_id,
                    record.size,
                    record.created,
                    record.expires_at,
                    record.owner,
                ),
            )

        await self._write(op)

    async def attachment(self, attachment_id: bytes) -> AttachmentRecord | None:
        def op(conn: sqlite3.Connection) -> AttachmentRecord | None:
            row = conn.execute(
                "SELECT size, created, expires_at, owner FROM attachments WHERE attachment_id = ?",
                (attachment_id,),
            ).fetchone()
            if row is None:
                return None
            size, created, expires_at, owner = row
            return AttachmentRecord(attachment_id, size, created, expires_at, bytes(owner))

        return await self._read(op)
