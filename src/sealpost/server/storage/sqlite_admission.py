"""Who may come in, in SQLite: the one-time nonces of signed requests (a nonce is used
once: its ``INSERT`` in its place among the writes is the check) and the invites that admit
a registration (spent in the transaction that registers the account, :func:`_spend_invite`;
codes kept as hashes).
"""

from __future__ import annotations

import sqlite3

from sealpost.server.storage.base import InviteRecord, InviteRefused, InviteUse, UnknownInvite
from sealpost.server.storage.invites import admits
from sealpost.server.storage.sqlite_core import SqliteCore

__all__ = ["SqliteAdmission"]


class SqliteAdmission(SqliteCore):
    """Request nonces and invites."""

    async def use_nonce(self, nonce: bytes, expires_at: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO nonces (nonce, expires_at) VALUES (?, ?)",
                (nonce, expires_at),
            )
            return cur.rowcount == 1

        return await self._write(op)

    async def create_invite(self, record: InviteRecord, code_hash: bytes) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO invites (invite_id, code_hash, uses_left, uses, created,"
                " expires_at, revoked) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.invite_id,
                    code_hash,
                    record.uses_left,
                    record.uses,
                    record.created,
                    record.expires_at,
                    int(record.revoked),
                ),
            )
        )

    async def invites(self) -> list[InviteRecord]:
        return await self._read(
            lambda c: [
                InviteRecord(i, left, uses, created, expires, bool(revoked))
                for i, left, uses, created, expires, revoked in c.execute(
                    "SELECT invite_id, uses_left, uses, created, expires_at, revoked"
                    " FROM invites ORDER BY created, invite_id"
                )
            ]
        )

    async def revoke_invite(self, invite_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE invites SET revoked = 1 WHERE invite_id = ?", (invite_id,))
            if cur.rowcount != 1:
                raise UnknownInvite("no such invite")

        await self._write(op)


def _spend_invite(conn: sqlite3.Connection, use: InviteUse) -> None:
    row = conn.execute(
        "SELECT code_hash, uses_left, expires_at, revoked FROM invites WHERE invite_id = ?",
        (use.invite_id,),
    ).fetchone()
    stored, uses_left, expires_at, revoked = row if row is not None else (None, 0, 0, True)
    if not admits(
        None if stored is None else bytes(stored),
        uses_left=uses_left,
        expires_at=expires_at,
        revoked=bool(revoked),
        use=use,
    ):
        raise InviteRefused("no usable invite has that code")
    conn.execute(
        "UPDATE invites SET uses_left = uses_left - 1, uses = uses + 1 WHERE invite_id = ?",
        (use.invite_id,),
    )
