"""Who may come in, in PostgreSQL: the one-time nonces of signed requests (a nonce is used
once: its ``INSERT ... ON CONFLICT DO NOTHING`` is the check, on any process) and the
invites that admit a registration (spent in the transaction that registers the account,
under the invite's row lock, :func:`_spend_invite`; codes kept as hashes).
"""

from __future__ import annotations

from sealpost.server.storage.base import InviteRecord, InviteRefused, InviteUse, UnknownInvite
from sealpost.server.storage.invites import admits
from sealpost.server.storage.pg_core import Conn, PgCore

__all__ = ["PgAdmission"]


class PgAdmission(PgCore):
    """Request nonces and invites."""

    async def use_nonce(self, nonce: bytes, expires_at: int) -> bool:
        async def op(conn: Conn) -> bool:
            status = await conn.execute(
                "INSERT INTO nonces VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
                nonce,
                expires_at,
            )
            return bool(status == "INSERT 0 1")

        return await self._tx(op)

    async def create_invite(self, record: InviteRecord, code_hash: bytes) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO invites (invite_id, code_hash, uses_left, uses, created,"
                " expires_at, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                record.invite_id,
                code_hash,
                record.uses_left,
                record.uses,
                record.created,
                record.expires_at,
                record.revoked,
            )

        await self._tx(op)

    async def invites(self) -> list[InviteRecord]:
        async def op(conn: Conn) -> list[InviteRecord]:
            rows = await conn.fetch(
                "SELECT invite_id, uses_left, uses, created, expires_at, revoked"
                " FROM invites ORDER BY created, invite_id"
            )
            return [InviteRecord(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

        return await self._tx(op)

    async def revoke_invite(self, invite_id: str) -> None:
        async def op(conn: Conn) -> None:
            status = await conn.execute(
                "UPDATE invites SET revoked = true WHERE invite_id = $1", invite_id
            )
            if status != "UPDATE 1":
                raise UnknownInvite("no such invite")

        await self._tx(op)


async def _spend_invite(conn: Conn, use: InviteUse) -> None:
    # The row lock makes concurrent registrations with one code take turns: one spends
    # its last use, the next finds none left.
    row = await conn.fetchrow(
        "SELECT code_hash, uses_left, expires_at, revoked FROM invites WHERE invite_id = $1"
        " FOR UPDATE",
        use.invite_id,
    )
    stored = None if row is None else bytes(row[0])
    if not admits(
        stored,
        uses_left=0 if row is None else row[1],
        expires_at=0 if row is None else row[2],
        revoked=True if row is None else row[3],
        use=use,
    ):
        raise InviteRefused("no usable invite has that code")
    await conn.execute(
        "UPDATE invites SET uses_left = uses_left - 1, uses = uses + 1 WHERE invite_id = $1",
        use.invite_id,
    )
