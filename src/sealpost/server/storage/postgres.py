"""PostgreSQL storage (asyncpg), for several server processes sharing one database.

:class:`PostgresStorage` is composed of one module per concept, each a mixin of
:class:`~.pg_core.PgCore`; this module opens and closes its pool:

- :mod:`.pg_core`: the pool, transactions and their retries, what a process keeps in
  memory, and the group commit's wiring, which every other module's methods go through;
- :mod:`.pg_accounts`: accounts, devices, revocations and removals;
- :mod:`.pg_transparency`: the key-transparency log's reads and tree heads;
- :mod:`.pg_prekeys`: prekeys and bundles;
- :mod:`.pg_messages`: sends, fetches, acks and the connection epochs;
- :mod:`.pg_attachments`: attachment records;
- :mod:`.pg_admission`: request nonces and invites;
- :mod:`.pg_links`: device-link channels (when several processes share the database);
- :mod:`.pg_upkeep`: statistics and the purge of what expired.

Beside them, the statements of the queues (:mod:`.pg_queue`), the log (:mod:`.pg_log`,
:mod:`.pg_map`), the batch (:mod:`.pg_batch`), the schema (:mod:`.pg_schema`) and the
coordination of processes (:mod:`.pg_cluster`).

Each method is one transaction (``READ COMMITTED``) on a connection of a pool, so the
guarantees of :mod:`.base` hold across processes: a method that returns has committed
(with ``synchronous_commit`` on, durably: leave it on); one that raises a
:class:`~.base.StorageError` rolled back. Concurrency is handled by row locks:

- a send locks the ``device_queues`` rows of its destination devices, always in the same
  (sorted) order, so two sends to the same devices never deadlock; a send allocates each
  device's next sequence numbers there, so they are committed in order (see
  :mod:`.pg_schema`). Acks and purges lock the same rows first, in the same order.
- a one-time prekey is taken with ``FOR UPDATE SKIP LOCKED``: two fetchers, on any
  processes, never get the same key.
- the log is appended under a transaction advisory lock (:mod:`.pg_log`).

Sends and acks are group-committed (:mod:`.pg_batch`): those that arrive while a batch
commits make the next one, one statement and one WAL flush for all of them. A process
alone on its database (``solo``: nothing else writes to it) also keeps the tails of the
queues it has read in memory, exact as in the SQLite backend (:mod:`.tail`), so a push
after a commit reads nothing back; queue reads that set a tail take their turn among the
writes, so the tail cannot miss a commit.

A lost database connection surfaces as :class:`~.base.StorageUnavailable` (the server
answers 503); the pool connects again by itself. Process coordination (one process without
Redis, one tree-head signer) is in :mod:`.pg_cluster`: while the process does not hold its
lock on the database, every method raises :class:`~.base.StorageUnavailable`, and once
another process has taken the database from it, for good (:meth:`stopped`). The check
that every process serves the same keys is in :mod:`.pg_keys`.
"""

from __future__ import annotations

import asyncpg

from sealpost.server.storage.account_cache import ACCOUNT_CACHE as ACCOUNT_CACHE
from sealpost.server.storage.pg_accounts import PgAccounts
from sealpost.server.storage.pg_admission import PgAdmission
from sealpost.server.storage.pg_attachments import PgAttachments
from sealpost.server.storage.pg_cluster import ClusterError, migrate
from sealpost.server.storage.pg_core import DEVICE_CACHE as DEVICE_CACHE
from sealpost.server.storage.pg_core import POOL_SIZE as POOL_SIZE
from sealpost.server.storage.pg_core import RETRIES as RETRIES
from sealpost.server.storage.pg_core import TAIL_BYTES as TAIL_BYTES
from sealpost.server.storage.pg_core import TAIL_MESSAGES as TAIL_MESSAGES
from sealpost.server.storage.pg_core import Conn as Conn
from sealpost.server.storage.pg_core import T as T
from sealpost.server.storage.pg_keys import DeploymentKeys, check_keys, check_log_key
from sealpost.server.storage.pg_links import PgLinks
from sealpost.server.storage.pg_messages import PgMessages
from sealpost.server.storage.pg_prekeys import KEM_LAST_RESORT as KEM_LAST_RESORT
from sealpost.server.storage.pg_prekeys import KEM_ONE_TIME as KEM_ONE_TIME
from sealpost.server.storage.pg_prekeys import PgPrekeys
from sealpost.server.storage.pg_schema import MIGRATIONS
from sealpost.server.storage.pg_transparency import PgTransparency
from sealpost.server.storage.pg_upkeep import PURGE_STEP as PURGE_STEP
from sealpost.server.storage.pg_upkeep import PgUpkeep

__all__ = ["PostgresStorage"]


class PostgresStorage(
    PgAccounts,
    PgTransparency,
    PgPrekeys,
    PgMessages,
    PgAttachments,
    PgAdmission,
    PgLinks,
    PgUpkeep,
):
    """:class:`~sealpost.server.storage.base.Storage` on a PostgreSQL database."""

    async def open(self) -> None:
        if self._admin:
            await self._check_schema()
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=min(self._pool_size, 4),
                command_timeout=30,
                reset=_keep_session,
            )
            return
        try:
            await migrate(self._dsn)
            if self._keys is not None:
                await self._check_keys(self._keys)
            await self.cluster.start()
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                command_timeout=30,
                reset=_keep_session,
            )
        except BaseException:
            await self.cluster.stop()
            raise

    async def close(self) -> None:
        await self.writes.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.cluster.stop()

    async def _check_keys(self, keys: DeploymentKeys) -> None:
        """Before any lock is taken: a process serving other keys never leads."""
        conn = await asyncpg.connect(self._dsn)
        try:
            await check_keys(conn, keys)
        finally:
            await conn.close()

    async def check_log_key(self, log_key: bytes) -> None:
        """Raise :class:`~.pg_keys.KeyMismatch` unless ``log_key`` (a public key) is the
        deployment's (:func:`~.pg_keys.check_log_key`); for ``sealpost admin``, before it
        signs anything."""
        await self._tx(lambda conn: check_log_key(conn, log_key), snapshot=True)

    async def _check_schema(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
                raise ClusterError("no sealpost database there (no schema_migrations table)")
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        finally:
            await conn.close()
        if done != {version for version, _ in MIGRATIONS}:
            raise ClusterError(
                f"the database has schema versions {sorted(done)}, this sealpost expects "
                f"{[v for v, _ in MIGRATIONS]}: run the matching sealpost (or migrate)"
            )

    def leader(self) -> bool:
        return self.cluster.leader

    def stopped(self) -> str | None:
        return self.cluster.stopped


async def _keep_session(conn: Conn) -> None:
    """The pool's reset of a connection given back (asyncpg still rolls back a transaction
    left open). Its default sends one more statement per use (advisory locks released,
    settings, cursors and LISTENs reset: 12% of a process's samples at K = 2 in
    bench/relay.py), for session state that no use of a pool connection here makes: locks
    held for a session live on the cluster's own connection (:mod:`.pg_cluster`), those
    of the pool's users are transaction locks."""
