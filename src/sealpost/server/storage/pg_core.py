"""The machinery every method of :class:`~.postgres.PostgresStorage` goes through: the
connection pool, :meth:`PgCore._tx` (one transaction on a pool connection, run again when
PostgreSQL aborted it for a deadlock or a serialization conflict, a lost database raised as
:class:`~.base.StorageUnavailable`), what a process keeps in memory (account records; alone
on its database, also each account's device ids and the queue tails, :mod:`.tail`), and the
group commit of sends and acks (:mod:`.pg_batch`), wired to keep those exact. Every table's
methods (the other ``pg_*`` modules with a mixin) are mixins of :class:`PgCore`; the pool is
opened and closed by :mod:`.postgres`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final, TypeAlias, TypeVar

import asyncpg

from sealpost.server.storage.base import AccountRecord, QueuedMessage, StorageUnavailable
from sealpost.server.storage.pg_batch import GroupCommit
from sealpost.server.storage.pg_cluster import Cluster
from sealpost.server.storage.pg_keys import DeploymentKeys
from sealpost.server.storage.pg_log import NodeCache
from sealpost.server.storage.pg_queue import Address, device_lists
from sealpost.server.storage.tail import QueueTails

__all__ = ["PgCore"]

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection

#: Connections per process. Sends and acks share one batch in flight (:mod:`.pg_batch`),
#: so the rest serve reads (a queue read per wake-up of a device whose tail is not known)
#: and the other writes; 16 leaves room for three processes and tools under PostgreSQL's
#: default ``max_connections`` of 100.
POOL_SIZE: Final = 16
#: Accounts whose device ids a process alone on its database keeps (about 100 bytes each).
DEVICE_CACHE: Final = 100_000
#: Queue tails kept in memory by a process alone on its database (as :mod:`.sqlite`).
TAIL_BYTES: Final = 16 * 1024 * 1024
TAIL_MESSAGES: Final = 1000

#: Attempts of a transaction that PostgreSQL aborted for a deadlock or a serialization
#: conflict (rows locked in another order, such as shared bodies released by a purge and
#: an ack at once): nothing was changed, so it runs again.
RETRIES: Final = 3
_RETRY = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)

#: What asyncpg raises when the database is not there, or cannot take another connection
#: now (not when it refuses something).
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    TimeoutError,
)


class PgCore:
    """The pool, the transactions, the caches and the group commit, which every
    table's methods (the mixins of :class:`~.postgres.PostgresStorage`) share."""

    def __init__(
        self,
        dsn: str,
        *,
        solo: bool = True,
        pool_size: int = POOL_SIZE,
        admin: bool = False,
        keys: DeploymentKeys | None = None,
    ) -> None:
        """``solo``: no other process may use the database meanwhile (there is no Redis
        to tell them about each other's sends); :meth:`open` refuses if one does.
        ``admin``: for ``sealpost admin`` beside running servers: no migration (a database
        not at this version is refused), no process lock, never the leader.
        ``keys``: this process's public keys, which :meth:`open` records if the database
        has none and refuses to start with if it has others (:mod:`.pg_keys`); ``sealpost
        server`` always passes them, tests of storage alone need not."""
        self._dsn = dsn
        self._keys = keys
        self._pool_size = pool_size
        self._admin = admin
        self._pool: asyncpg.Pool | None = None
        self._nodes = NodeCache()
        self._accounts: OrderedDict[bytes, AccountRecord] = OrderedDict()
        self.cluster = Cluster(dsn, solo=solo, forget=self._forget_memory, lost=self._lost)
        self._busy: set[Conn] = set()  # the pool connections in a transaction of _tx now
        self._expiring: asyncio.Task[None] | None = None
        # Alone on the database, this process sees every write to it: the queue tails it
        # read stay exact (updated after each commit, in commit order).
        self._tails = (
            QueueTails(max_bytes=TAIL_BYTES, max_messages=TAIL_MESSAGES)
            if solo and not admin
            else None
        )
        # Alone on it, too, this process is the only one to change device lists, and does
        # so in its write queue (between two batches): each batch's device check reads
        # an account's list once, then from memory until a change drops it.
        self._device_ids: dict[bytes, frozenset[int]] | None = (
            {} if self._tails is not None else None
        )
        self.writes = (
            GroupCommit(
                self._tx,
                committed=self._committed,
                forget=self._forget_tails,
                lists=self._known_devices,
            )
            if self._tails is not None
            else GroupCommit(self._tx)
        )

    async def _tx(
        self,
        fn: Callable[[Conn], Awaitable[T]],
        *,
        snapshot: bool = False,
        transaction: bool = True,
    ) -> T:
        """Run ``fn`` in one transaction (``snapshot``: a read-only one that sees a single
        instant throughout, ``REPEATABLE READ``; ``transaction`` false: each statement of
        ``fn`` is its own, for those whose one writing statement does it all)."""
        if self._pool is None:
            raise RuntimeError("storage is not open")
        if not self.cluster.held and not self._admin:
            raise StorageUnavailable(self._why_not())
        options: dict[str, Any] = (
            {"isolation": "repeatable_read", "readonly": True} if snapshot else {}
        )
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn:
                    # lost while this waited for a connection? (and from here on, a loss
                    # ends this connection, _lost: nothing commits after it)
                    if not self.cluster.held and not self._admin:
                        raise StorageUnavailable(self._why_not())
                    self._busy.add(conn)
                    try:
                        if not transaction:
                            return await fn(conn)
                        async with conn.transaction(**options):
                            return await fn(conn)
                    finally:
                        self._busy.discard(conn)
            except _UNAVAILABLE as exc:
                raise StorageUnavailable("the database is not reachable") from exc
            except _RETRY:  # rolled back whole: safe to run again
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _lost(self) -> None:
        """The lock is lost: the transactions in flight are ended (their connections
        closed, so PostgreSQL rolls back what did not commit, and their callers get
        :class:`~.base.StorageUnavailable`, never a success), and the idle connections
        are made anew before their next use (they may lead to a host that is no longer
        the primary)."""
        busy, self._busy = self._busy, set()
        for conn in busy:
            conn.terminate()
        if self._pool is not None and (self._expiring is None or self._expiring.done()):
            self._expiring = asyncio.get_running_loop().create_task(self._pool.expire_connections())

    def _why_not(self) -> str:
        if self.cluster.stopped is not None:
            return "another process took over the database: this one serves no more"
        return "this process does not hold its lock on the database now"

    def _forget_memory(self) -> None:
        """Another process may write to the database (this one lost its lock, or takes it
        again after that): what this one kept of it is read again."""
        self._forget_tails()
        if self._device_ids is not None:
            self._device_ids.clear()

    def _drop_devices(self, account_id: bytes) -> None:
        if self._device_ids is not None:
            self._device_ids.pop(account_id, None)

    async def _known_devices(
        self, conn: Conn, accounts: set[bytes]
    ) -> Mapping[bytes, AbstractSet[int]]:
        """:func:`.pg_queue.device_lists`, from memory for the accounts read before."""
        cache = self._device_ids
        assert cache is not None
        missing = [a for a in accounts if a not in cache]
        if missing:
            found = await device_lists(conn, missing)
            if len(cache) + len(found) > DEVICE_CACHE:
                cache.clear()
            for account_id, ids in found.items():
                cache[account_id] = frozenset(ids)
        return {a: cache[a] for a in accounts if a in cache}

    def _forget_tails(self) -> None:
        if self._tails is not None:
            self._tails.clear()

    def _committed(
        self,
        added: list[tuple[Address, QueuedMessage]],
        removed: list[tuple[Address, list[bytes]]],
    ) -> None:
        """A batch committed (in commit order): keep the tails exact."""
        tails = self._tails
        assert tails is not None
        tails.added(added)
        for address, message_ids in removed:
            tails.removed(address, message_ids)
