"""Several server processes on one PostgreSQL database: migrations, who may run, who leads.

- :func:`migrate` applies :data:`~.pg_schema.MIGRATIONS` not yet applied, under an advisory
  lock, and refuses a database migrated by a newer server.
- :class:`Cluster` holds one connection of its own for the process's life, with session
  advisory locks on it. A process without Redis takes ``LOCK_PROCESSES`` exclusively (it
  could not tell another process about a send, so it must be alone); a process with Redis
  takes it shared. Either way a process that cannot take it refuses to start, saying why.
- The lock lasts as long as that connection. When it closes (PostgreSQL released the lock
  with it, and may admit another process) the process is told at once (a termination
  listener) and :attr:`Cluster.held` goes false: the storage then refuses everything and
  answers nothing from memory (:mod:`.pg_core`). The cluster connects and takes the lock
  again at once (then every :data:`LEADER_RETRY` seconds while the database does not
  answer), drops what the process kept in memory (another process may have written in
  between) and serves again. If another process holds the lock by then in a way this one
  cannot share, it stops for good (:attr:`Cluster.stopped` says why; the server exits):
  the other believes what it was told at its start. Its own old backend may still hold
  the lock (the process saw its side of the connection end, PostgreSQL did not: a
  half-open TCP connection, a proxy or NAT that dropped one side): the lock connection
  carries an ``application_name`` of this process's own, and the retake ends that backend
  (``pg_terminate_backend``) and tries again for :data:`RETAKE_WAIT` seconds; only a
  holder that is not this process stops it.
- Every statement on the lock connection has :data:`CHECK_TIMEOUT`: a host that answers
  nothing any more (a failover whose old primary sends no reset) is a lost connection
  within seconds, not when TCP gives up a quarter of an hour later. PostgreSQL's side is
  told to probe the connection (TCP keepalives, :data:`KEEPALIVES`), so a lock whose
  process is gone is released in about 25 seconds, long after the process stopped using it.
- The process holding ``LOCK_LEADER`` is the leader: it alone signs tree heads and runs the
  purge. The others try to take the lock every :data:`LEADER_RETRY` seconds, so when the
  leader dies (its connection closes and PostgreSQL releases its locks) another leads
  within about that long. A leader that loses its connection stops leading at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
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
#: How long a statement on the lock connection (connecting included) may take before the
#: connection counts as lost: a few checks' worth, far below PostgreSQL's keepalive
#: release (:data:`KEEPALIVES`), so this process stops using its lock before PostgreSQL
#: could give it to another.
CHECK_TIMEOUT: Final = 3 * LEADER_RETRY
#: How long a retake waits for this process's own old backend to end and free the lock.
RETAKE_WAIT: Final = 5.0
#: PostgreSQL probes an idle lock connection after 10 s, every 5 s, 3 times: a process
#: gone without a word (a half-open connection) releases its locks in about 25 s.
KEEPALIVES: Final = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}

#: The holders of an advisory lock (a bigint key: classid, objid its two halves) in this
#: database (advisory locks are cluster-wide), with their application names.
_HOLDERS: Final = (
    "SELECT l.pid, a.application_name FROM pg_locks l"
    " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


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
    """This process's place among those on the database: :attr:`held` (it holds
    ``LOCK_PROCESSES`` now, and may use the database), :attr:`leader`, and :attr:`stopped`
    (why it may not use the database again)."""

    def __init__(
        self,
        dsn: str,
        *,
        solo: bool,
        forget: Callable[[], None] | None = None,
        lost: Callable[[], None] | None = None,
    ) -> None:
        """``forget`` drops what the process keeps in memory of the database (queue
        tails, device lists): called when the lock is lost and again when it is taken
        again, since another process may have written in between. ``lost`` is called
        the moment the lock is lost (after :attr:`held` went false), to end the
        transactions in flight that could otherwise still commit."""
        self._dsn = dsn
        self._solo = solo
        self._forget = forget
        self._lost = lost
        # this process's lock connections, and theirs alone, carry this name
        self.application_name = f"sealpost-lock-{os.getpid()}-{os.urandom(6).hex()}"
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # the lock connection closed: check now
        self.held = False
        self.losses = 0  # times :attr:`held` went false
        self.leader = False
        self.stopped: str | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._conn = await self._connect()
        self.held = True
        self._task = asyncio.create_task(self._lead())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.held = False
        self.leader = False
        conn, self._conn = self._conn, None  # its closing is no loss (_dropped)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self._dsn,
            timeout=CHECK_TIMEOUT,
            command_timeout=CHECK_TIMEOUT,
            server_settings={"application_name": self.application_name, **KEEPALIVES},
        )
        try:
            taken = await self._take(conn)
        except BaseException:
            conn.terminate()
            raise
        if not taken:
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
        conn.add_termination_listener(self._dropped)
        return conn

    async def _take(self, conn: asyncpg.Connection) -> bool:
        """Take ``LOCK_PROCESSES`` on ``conn``; false if another process holds it in a
        way this one cannot share. While it is this process's own earlier backend that
        holds it (or ``LOCK_LEADER``), that backend is ended, and the lock tried again
        until :data:`RETAKE_WAIT`."""
        take = "pg_try_advisory_lock" if self._solo else "pg_try_advisory_lock_shared"
        deadline = time.monotonic() + RETAKE_WAIT
        while True:
            ours = await self._end_old_backend(conn)
            if await conn.fetchval(f"SELECT {take}($1)", LOCK_PROCESSES):
                return True
            if not ours or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)

    async def _end_old_backend(self, conn: asyncpg.Connection) -> bool:
        """Ends this process's backends other than ``conn``'s that hold one of its locks
        (the lock connection it gave up on, alive on PostgreSQL's side); whether one
        did. One of another process has another application name, and is left."""
        own: set[int] = set()
        for key in (LOCK_PROCESSES, LOCK_LEADER):
            for pid, name in await conn.fetch(_HOLDERS, key >> 32, key & 0xFFFF_FFFF):
                if name == self.application_name and pid != conn.get_server_pid():
                    own.add(pid)
        for pid in sorted(own):
            log.warning(
                "this process's earlier database connection (backend %d) still holds its"
                " lock: ending it",
                pid,
            )
            await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        return bool(own)

    def _dropped(self, conn: object) -> None:
        """The lock connection closed (PostgreSQL released its locks with it): known at
        once, not at the next check, so that nothing is served meanwhile."""
        if conn is self._conn:
            self._lose()
            self._wake.set()

    def _lose(self) -> None:
        if self.held:
            self.losses += 1
            log.warning(
                "lost the database connection that holds this process's lock: refusing"
                " requests (503) until it holds the lock again"
            )
        self.held = False
        if self.leader:
            log.warning("lost the database connection: no longer leading")
        self.leader = False
        if self._lost is not None:
            self._lost()
        if self._forget is not None:
            self._forget()

    async def _retake(self) -> None:
        self._lose()
        self._conn = None
        self._conn = await self._connect()
        if self._forget is not None:  # what operations in flight meanwhile kept
            self._forget()
        self.held = True
        log.warning(
            "holds its database lock again: serving, with what it kept in memory read"
            " again from the database"
        )

    async def _lead(self) -> None:
        while True:
            self._wake.clear()
            try:
                conn = self._conn
                if conn is None or conn.is_closed():
                    await self._retake()
                    conn = self._conn
                    assert conn is not None
                if self.leader:  # still connected: still holds the lock
                    await conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT)
                elif await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", LOCK_LEADER, timeout=CHECK_TIMEOUT
                ):
                    self.leader = True
                    log.info("this process now leads (signs tree heads, purges)")
            except ClusterError as exc:  # another process took the database meanwhile
                self.stopped = f"lost the database to another process: {exc}"
                log.error("stopping: %s", self.stopped)
                return
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._lose()
                log.debug("cluster connection: %s", type(exc).__name__)
                conn, self._conn = self._conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LEADER_RETRY)
