"""Reading the key-transparency log in PostgreSQL: its entries, its Merkle root and proofs,
the account map's proofs, and the signed tree heads. The log is appended in the transaction
of each account change (:mod:`.pg_log`, which also runs the Merkle functions against the
``log_nodes`` table); the reads that need one consistent state of the log and the map
(:meth:`PgTransparency.log_state`, :meth:`PgTransparency.log_lookup`) run in one
``REPEATABLE READ`` transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sealpost.server.storage.base import LoggedEntry, LogLookup, LogState
from sealpost.server.storage.pg_core import Conn, PgCore, T
from sealpost.server.storage.pg_log import log_size, logged, merkle
from sealpost.server.storage.pg_map import run_map
from sealpost.transparency.log import account_map_key
from sealpost.transparency.merkle import consistency_proof, inclusion_proof, root
from sealpost.transparency.smt import map_root, prove

__all__ = ["PgTransparency"]


class PgTransparency(PgCore):
    """The transparency log's reads and its tree heads."""

    async def log_size(self) -> int:
        return await self._tx(log_size)

    async def log_entries(self, account_id: bytes, *, after: int = -1) -> list[LoggedEntry]:
        async def op(conn: Conn) -> list[LoggedEntry]:
            rows = await conn.fetch(
                "SELECT idx, entry, certificates, revocations FROM log_entries"
                " WHERE account_id = $1 AND idx > $2 ORDER BY sequence",
                account_id,
                after,
            )
            return [logged(r) for r in rows]

        return await self._tx(op)

    async def log_latest(self, account_id: bytes) -> LoggedEntry | None:
        async def op(conn: Conn) -> LoggedEntry | None:
            row = await conn.fetchrow(
                "SELECT idx, entry, certificates, revocations FROM log_entries"
                " WHERE account_id = $1 ORDER BY sequence DESC LIMIT 1",
                account_id,
            )
            return None if row is None else logged(row)

        return await self._tx(op)

    async def _merkle(self, fn: Callable[[Any], T]) -> T:
        async def op(conn: Conn) -> T:
            return (await merkle(conn, self._nodes, fn))[0]

        return await self._tx(op)

    async def log_root(self, size: int) -> bytes:
        return await self._merkle(lambda s: root(s, size))

    async def log_inclusion(self, index: int, size: int) -> list[bytes]:
        return await self._merkle(lambda s: inclusion_proof(s, index, size))

    async def log_consistency(self, size1: int, size2: int) -> list[bytes]:
        return await self._merkle(lambda s: consistency_proof(s, size1, size2))

    async def log_state(self) -> LogState:
        async def op(conn: Conn) -> LogState:
            size = await log_size(conn)
            tree_root = (await merkle(conn, self._nodes, lambda s: root(s, size)))[0]
            return LogState(size, tree_root, await run_map(conn, map_root))

        return await self._tx(op, snapshot=True)

    async def log_lookup(self, username_lower: str) -> LogLookup:
        key = account_map_key(username_lower)

        async def op(conn: Conn) -> LogLookup:
            size = await log_size(conn)
            _, proof = await run_map(conn, lambda m: prove(m, key))
            row = await conn.fetchrow(
                "SELECT idx, entry, certificates, revocations FROM log_entries WHERE account_id ="
                " COALESCE((SELECT account_id FROM accounts WHERE username_lower = $1),"
                " (SELECT account_id FROM account_removals WHERE username_lower = $1"
                " ORDER BY seq DESC LIMIT 1))"
                " ORDER BY sequence DESC LIMIT 1",
                username_lower,
            )
            latest = None if row is None else logged(row)
            inclusion: list[bytes] = []
            if latest is not None:
                index = latest.index
                inclusion = (
                    await merkle(conn, self._nodes, lambda s: inclusion_proof(s, index, size))
                )[0]
            return LogLookup(size, latest, inclusion, proof.encode())

        return await self._tx(op, snapshot=True)

    async def log_head(self) -> bytes | None:
        async def op(conn: Conn) -> bytes | None:
            head = await conn.fetchval("SELECT head FROM log_heads ORDER BY tree_size DESC LIMIT 1")
            return None if head is None else bytes(head)

        return await self._tx(op)

    async def add_log_head(self, tree_size: int, timestamp: int, head: bytes) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO log_heads VALUES ($1, $2, $3) ON CONFLICT (tree_size) DO NOTHING",
                tree_size,
                timestamp,
                head,
            )

        await self._tx(op)
