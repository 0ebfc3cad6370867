"""Several server processes on one PostgreSQL database: migrations, who may run, who leads.

- :func:`migrate` applies :data:`~.pg_schema.MIGRATIONS` not yet applied, under an advisory
  lock, and refuses a database migrated by a newer server.
- :class:`Cluster` holds one connection of its own for the process's life, with session
  advisory locks on it. A process without Redis takes ``LOCK_PROCESSES`` exclusively (it
  could not tell another process about a send, so it must be alone); a process with Redis
  takes it shared. Either way a process that cannot take it refuses to start, saying why.
- The process holding ``LOCK_LEADER`` is the leader: it alone signs tree heads and runs the
  purge. The others try to take the lock every :data:`LEADER_RETRY` seconds, so when the
  leader dies (its connection closes and PostgreSQL releases its locks) another leads
  within about that long. A leader that loses its connection stops leading at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import asyncpg

from sealpost.server.storage.pg_schema import (
    LOCK_LEADER,
    LOCK_MIGRATE,
    LOCK_PROCESSES,
    MIGRATIONS,
)

__all__ = ["LEADER_RETRY", "Cluster", "ClusterError", "migrate"]

log = logging.getLogger("sealpost.server.storage")

LEADER_RETRY: Final = 1.0


class ClusterError(Exception):
    """This process may not use the database (another holds it, or its schema is newer)."""


async def migrate(dsn: str) -> list[int]:
    """Apply the migrations this database lacks; the versions applied."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_MIGRATE)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        known = {version for version, _ in MIGRATIONS}
        if done - known:
            raise ClusterError(
                f"the database has schema version {max(done)}, newer than this server's "
                f"{max(known)}: upgrade the server"
            )
        applied = []
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
            log.info("applied database migration %d", version)
        return applied
    finally:
        with contextlib.suppress(Exception):
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_MIGRATE)
        await conn.close()


class Cluster:
    def __init__(self, dsn: str, *, solo: bool) -> None:
        self._dsn = dsn
        self._solo = solo
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.leader = False

    async def start(self) -> None:
        self._conn = await self._connect()
        self._task = asyncio.create_task(self._lead())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.leader = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._dsn)
        take = "pg_try_advisory_lock" if self._solo else "pg_try_advisory_lock_shared"
        if not await conn.fetchval(f"SELECT {take}($1)", LOCK_PROCESSES):
            await conn.close()
            if self._solo:
                raise ClusterError(
                    "another sealpost server uses this database: several processes need "
                    "--redis (each of them), or stop the other one"
                )
            raise ClusterError(
                "a sealpost server without --redis uses this database: stop it, or give it "
                "--redis too"
            )
        return conn

    async def _lead(self) -> None:
        while True:
            try:
                conn = self._conn
                if conn is None or conn.is_closed():
                    self.leader = False
                    self._conn = None
                    self._conn = conn = await self._connect()
                if self.leader:
                    await conn.fetchval("SELECT 1")  # still connected: still holds the lock
                elif await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_LEADER):
                    self.leader = True
                    log.info("this process now leads (signs tree heads, purges)")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ClusterError) as exc:
                if self.leader:
                    log.warning("lost the database connection: no longer leading")
                self.leader = False
                log.debug("cluster connection: %s", type(exc).__name__)
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.terminate()
                    self._conn = None
            await asyncio.sleep(LEADER_RETRY)
