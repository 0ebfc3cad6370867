"""PostgreSQL storage (asyncpg), for several server processes sharing one database.

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
Redis, one tree-head signer) is in :mod:`.pg_cluster`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, TypeAlias, TypeVar

import asyncpg

from sealpost.crypto.sign import SigningKey
from sealpost.server.storage.base import (
    AccountExists,
    AccountRecord,
    AttachmentQuotaFull,
    AttachmentRecord,
    BundleParts,
    DeviceAcks,
    DeviceRecord,
    DeviceRevoked,
    Envelope,
    Fence,
    InviteRecord,
    InviteRefused,
    InviteUse,
    LastDevice,
    LoggedEntry,
    LogLookup,
    LogState,
    PreKeyStock,
    PreKeyUpload,
    PurgeResult,
    QueuedMessage,
    Removal,
    RemovedAccount,
    SharedEnvelope,
    StaleEpoch,
    StorageStats,
    StorageUnavailable,
    TooManyDevices,
    UnknownAccount,
    UnknownDevice,
    UnknownInvite,
    UsernameQuarantined,
    UsernameTaken,
    each_outcome,
)
from sealpost.server.storage.invites import admits
from sealpost.server.storage.pg_batch import GroupCommit
from sealpost.server.storage.pg_cluster import Cluster, ClusterError, migrate
from sealpost.server.storage.pg_log import (
    NodeCache,
    log_account_state,
    log_deletion,
    log_size,
    logged,
    merkle,
)
from sealpost.server.storage.pg_map import run_map
from sealpost.server.storage.pg_prekeys import (
    insert_device,
    prekey_stock,
    store_prekeys,
    take_bundle,
)
from sealpost.server.storage.pg_queue import (
    Address,
    claim_device,
    device_epoch,
    device_lists,
    enqueue_shared,
    fetch,
    lock_queues,
    purge_messages,
)
from sealpost.server.storage.pg_schema import MIGRATIONS
from sealpost.server.storage.tail import QueueTails
from sealpost.transparency.log import DeletionCause, account_map_key
from sealpost.transparency.merkle import consistency_proof, inclusion_proof, root
from sealpost.transparency.smt import map_root, prove

__all__ = ["PostgresStorage"]

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection

KEM_LAST_RESORT: Final = 1
KEM_ONE_TIME: Final = 2
PURGE_STEP: Final = 1000
#: Connections per process. Sends and acks share one batch in flight (:mod:`.pg_batch`),
#: so the rest serve reads (a queue read per wake-up of a device whose tail is not known)
#: and the other writes; 16 leaves room for three processes and tools under PostgreSQL's
#: default ``max_connections`` of 100.
POOL_SIZE: Final = 16
ACCOUNT_CACHE: Final = 50_000
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


class PostgresStorage:
    """:class:`~sealpost.server.storage.base.Storage` on a PostgreSQL database."""

    def __init__(
        self, dsn: str, *, solo: bool = True, pool_size: int = POOL_SIZE, admin: bool = False
    ) -> None:
        """``solo``: no other process may use the database meanwhile (there is no Redis
        to tell them about each other's sends); :meth:`open` refuses if one does.
        ``admin``: for ``sealpost admin`` beside running servers: no migration (a database
        not at this version is refused), no process lock, never the leader."""
        self._dsn = dsn
        self._pool_size = pool_size
        self._admin = admin
        self._pool: asyncpg.Pool | None = None
        self._nodes = NodeCache()
        self._accounts: OrderedDict[bytes, AccountRecord] = OrderedDict()
        self.cluster = Cluster(dsn, solo=solo)
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
        options: dict[str, Any] = (
            {"isolation": "repeatable_read", "readonly": True} if snapshot else {}
        )
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn:
                    if not transaction:
                        return await fn(conn)
                    async with conn.transaction(**options):
                        return await fn(conn)
            except _UNAVAILABLE as exc:
                raise StorageUnavailable("the database is not reachable") from exc
            except _RETRY:  # rolled back whole: safe to run again
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ accounts

    async def create_account(
        self,
        account: AccountRecord,
        device: DeviceRecord,
        prekeys: PreKeyUpload,
        *,
        invite: InviteUse | None = None,
    ) -> None:
        async def op(conn: Conn) -> None:
            if invite is not None:
                await _spend_invite(conn, invite)
            if await conn.fetchval(
                "SELECT 1 FROM account_removals WHERE username_lower = $1 AND free_at > $2",
                account.username.lower(),
                account.created,
            ):
                raise UsernameQuarantined("that name was a removed account's")
            rows = await conn.fetch(
                "SELECT account_id FROM accounts WHERE username_lower = $1 OR account_id = $2",
                account.username.lower(),
                account.account_id,
            )
            for row in rows:
                if bytes(row[0]) == account.account_id:
                    raise AccountExists("account id already registered")
                raise UsernameTaken("username taken")
            try:
                await conn.execute(
                    "INSERT INTO accounts VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    account.account_id,
                    account.username.lower(),
                    account.username,
                    account.account_key,
                    account.delivery_token_hash,
                    account.sealed_from_anyone,
                    account.created,
                )
            except asyncpg.UniqueViolationError as exc:  # a concurrent registration won
                if "username" in (exc.constraint_name or ""):
                    raise UsernameTaken("username taken") from None
                raise AccountExists("account id already registered") from None
            await insert_device(conn, device)
            await store_prekeys(conn, device.account_id, device.device_id, prekeys, None)
            await log_account_state(conn, self._nodes, account.account_id, new=account)

        await self._tx(op)

    async def add_device(
        self, device: DeviceRecord, prekeys: PreKeyUpload, *, max_devices: int
    ) -> None:
        async def op(conn: Conn) -> None:
            # Lock the account row: concurrent adds to one account are counted one by one.
            if not await conn.fetchval(
                "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", device.account_id
            ):
                raise UnknownAccount(device.account_id)
            if await conn.fetchval(
                "SELECT 1 FROM revocations WHERE account_id = $1 AND device_id = $2",
                device.account_id,
                device.device_id,
            ):
                raise DeviceRevoked("that device id was revoked")
            count = await conn.fetchval(
                "SELECT COUNT(*) FROM devices WHERE account_id = $1", device.account_id
            )
            if count >= max_devices:
                raise TooManyDevices("the account has as many devices as it may")
            await insert_device(conn, device)
            await store_prekeys(conn, device.account_id, device.device_id, prekeys, None)
            await log_account_state(conn, self._nodes, device.account_id)
            self._drop_devices(device.account_id)  # before it commits; no batch meanwhile

        await self.writes.own(op)  # in its turn among the queue writes

    async def remove_device(self, account_id: bytes, device_id: int, revocation: bytes) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", account_id
            )
            ids = [
                r[0]
                for r in await conn.fetch(
                    "SELECT device_id FROM devices WHERE account_id = $1", account_id
                )
            ]
            if device_id not in ids:
                raise UnknownDevice("no such device")
            if len(ids) == 1:
                raise LastDevice("the last device cannot be removed")
            await lock_queues(conn, [(account_id, device_id)])
            for table in (
                "queue",
                "device_queues",
                "devices",
                "signed_prekeys",
                "one_time_prekeys",
                "kem_prekeys",
            ):
                await conn.execute(
                    f"DELETE FROM {table} WHERE account_id = $1 AND device_id = $2",  # noqa: S608 (our table names)
                    account_id,
                    device_id,
                )
            await conn.execute(
                "INSERT INTO revocations VALUES ($1, $2, $3, extract(epoch FROM now())::bigint)"
                " ON CONFLICT (account_id, device_id) DO UPDATE SET revocation = $3",
                account_id,
                device_id,
                revocation,
            )
            await log_account_state(conn, self._nodes, account_id)
            self._drop_devices(account_id)

        await self.writes.own(op, forgets=True)  # in its turn among the queue writes

    async def remove_account(
        self,
        account_id: bytes,
        *,
        log_key: SigningKey,
        cause: DeletionCause,
        now_ms: int,
        free_at: int,
    ) -> RemovedAccount:
        async def op(conn: Conn) -> RemovedAccount:
            row = await conn.fetchrow(
                "SELECT username_lower, account_key FROM accounts WHERE account_id = $1 FOR UPDATE",
                account_id,
            )
            if row is None:
                raise UnknownAccount(account_id)
            username, account_key = str(row[0]), bytes(row[1])
            devices = [
                r[0]
                for r in await conn.fetch(
                    "SELECT device_id FROM devices WHERE account_id = $1", account_id
                )
            ]
            await lock_queues(conn, [(account_id, d) for d in devices])
            queued = int(
                (await conn.execute("DELETE FROM queue WHERE account_id = $1", account_id)).split()[
                    -1
                ]
            )
            for table in (
                "device_queues",
                "devices",
                "signed_prekeys",
                "one_time_prekeys",
                "kem_prekeys",
                "revocations",
            ):
                await conn.execute(
                    f"DELETE FROM {table} WHERE account_id = $1",  # noqa: S608 (our table names)
                    account_id,
                )
            attachments = [
                bytes(r[0])
                for r in await conn.fetch(
                    "DELETE FROM attachments WHERE owner = $1 RETURNING attachment_id", account_id
                )
            ]
            await conn.execute("DELETE FROM accounts WHERE account_id = $1", account_id)
            index = await log_deletion(
                conn,
                self._nodes,
                account_id,
                username,
                account_key,
                log_key=log_key,
                cause=cause,
                now_ms=now_ms,
                free_after=free_at * 1000,
            )
            await conn.execute(
                "INSERT INTO account_removals (account_id, username_lower, log_index, cause,"
                " removed_at, free_at) VALUES ($1, $2, $3, $4, $5, $6)",
                account_id,
                username,
                index,
                int(cause),
                now_ms // 1000,
                free_at,
            )
            self._drop_devices(account_id)
            return RemovedAccount(index, len(devices), queued, attachments, free_at)

        removed: RemovedAccount = await self.writes.own(op, forgets=True)
        self._accounts.pop(account_id, None)
        return removed

    async def forget_account(self, account_id: bytes) -> None:
        # Sends check the devices' queue rows in the database (gone with the account):
        # only the account cache is this process's own.
        self._accounts.pop(account_id, None)
        self._drop_devices(account_id)
        self._forget_tails()

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

    async def removals(self, *, after: int) -> list[Removal]:
        async def op(conn: Conn) -> list[Removal]:
            rows = await conn.fetch(
                "SELECT seq, account_id, log_index, cause, free_at, audited"
                " FROM account_removals WHERE seq > $1 ORDER BY seq",
                after,
            )
            return [Removal(r[0], bytes(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

        return await self._tx(op)

    async def mark_audited(self, seq: int) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "UPDATE account_removals SET audited = true WHERE seq <= $1 AND NOT audited", seq
            )

        await self._tx(op)

    async def revocations(self, account_id: bytes) -> list[bytes]:
        async def op(conn: Conn) -> list[bytes]:
            rows = await conn.fetch(
                "SELECT revocation FROM revocations WHERE account_id = $1 ORDER BY revoked",
                account_id,
            )
            return [bytes(r[0]) for r in rows]

        return await self._tx(op)

    async def account_by_username(self, username_lower: str) -> AccountRecord | None:
        async def op(conn: Conn) -> AccountRecord | None:
            return _account(
                await conn.fetchrow(
                    "SELECT * FROM accounts WHERE username_lower = $1", username_lower
                )
            )

        return await self._tx(op)

    async def account_by_id(self, account_id: bytes) -> AccountRecord | None:
        # Account records never change once created: cached, as in the SQLite backend.
        cached = self.account_known(account_id)
        if cached is not None:
            return cached

        async def op(conn: Conn) -> AccountRecord | None:
            return _account(
                await conn.fetchrow("SELECT * FROM accounts WHERE account_id = $1", account_id)
            )

        record = await self._tx(op)
        if record is not None:
            self._accounts[account_id] = record
            while len(self._accounts) > ACCOUNT_CACHE:
                self._accounts.popitem(last=False)
        return record

    def account_known(self, account_id: bytes) -> AccountRecord | None:
        cached = self._accounts.get(account_id)
        if cached is not None:
            self._accounts.move_to_end(account_id)
        return cached

    async def devices(self, account_id: bytes) -> list[DeviceRecord]:
        async def op(conn: Conn) -> list[DeviceRecord]:
            rows = await conn.fetch(
                "SELECT device_id, certificate, registered FROM devices WHERE account_id = $1"
                " ORDER BY device_id",
                account_id,
            )
            return [DeviceRecord(account_id, r[0], bytes(r[1]), r[2]) for r in rows]

        return await self._tx(op)

    async def device(self, account_id: bytes, device_id: int) -> DeviceRecord | None:
        async def op(conn: Conn) -> DeviceRecord | None:
            row = await conn.fetchrow(
                "SELECT certificate, registered FROM devices WHERE account_id = $1"
                " AND device_id = $2",
                account_id,
                device_id,
            )
            return (
                None if row is None else DeviceRecord(account_id, device_id, bytes(row[0]), row[1])
            )

        return await self._tx(op)

    # ------------------------------------------------------------------ transparency log

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

    # ------------------------------------------------------------------ auth

    async def use_nonce(self, nonce: bytes, expires_at: int) -> bool:
        async def op(conn: Conn) -> bool:
            status = await conn.execute(
                "INSERT INTO nonces VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
                nonce,
                expires_at,
            )
            return bool(status == "INSERT 0 1")

        return await self._tx(op)

    # ------------------------------------------------------------------ prekeys

    async def store_prekeys(
        self, account_id: bytes, device_id: int, prekeys: PreKeyUpload, *, max_stock: int
    ) -> None:
        async def op(conn: Conn) -> None:
            await store_prekeys(conn, account_id, device_id, prekeys, max_stock)

        await self._tx(op)

    async def take_bundle(
        self, account_id: bytes, device_id: int, *, one_time: bool = True
    ) -> BundleParts | None:
        return await self._tx(lambda conn: take_bundle(conn, account_id, device_id, one_time))

    async def prekey_stock(self, account_id: bytes, device_id: int) -> PreKeyStock:
        return await self._tx(lambda conn: prekey_stock(conn, account_id, device_id))

    # ------------------------------------------------------------------ queue

    async def enqueue(
        self,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
        fence: Fence | None = None,
    ) -> int:
        return await self.enqueue_nowait(
            envelopes,
            exempt=exempt,
            received_at=received_at,
            expires_at=expires_at,
            max_depth=max_depth,
            max_bytes=max_bytes,
            fence=fence,
        )

    def enqueue_nowait(
        self,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
        fence: Fence | None = None,
    ) -> asyncio.Future[int]:
        return self.writes.enqueue(
            envelopes,
            exempt=exempt,
            received_at=received_at,
            expires_at=expires_at,
            max_depth=max_depth,
            max_bytes=max_bytes,
            fence=fence,
        )

    async def enqueue_shared(
        self,
        body: bytes,
        envelopes: Sequence[SharedEnvelope],
        *,
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
    ) -> int:
        return await self.enqueue_shared_nowait(
            body,
            envelopes,
            received_at=received_at,
            expires_at=expires_at,
            max_depth=max_depth,
            max_bytes=max_bytes,
        )

    def enqueue_shared_nowait(
        self,
        body: bytes,
        envelopes: Sequence[SharedEnvelope],
        *,
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
    ) -> asyncio.Future[int]:
        # A transaction of its own (the body row first), in its turn among the others.
        return self.writes.own_nowait(
            lambda conn: enqueue_shared(
                conn,
                body,
                envelopes,
                received_at=received_at,
                expires_at=expires_at,
                max_depth=max_depth,
                max_bytes=max_bytes,
            ),
            forgets=True,  # rare: the tails are read again
        )

    def fetch_known(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage] | None:
        tails = self._tails
        return None if tails is None else tails.fetch((account_id, device_id), after_seq, limit)

    async def fetch(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage]:
        tails = self._tails
        if tails is None:
            return await self._tx(
                lambda conn: fetch(conn, account_id, device_id, after_seq, limit),
                transaction=False,
            )
        address = (account_id, device_id)
        known = tails.fetch(address, after_seq, limit)
        if known is not None:
            return known

        # Read in its turn among the writes (none commits meanwhile), so that the tail
        # it may set is exact.
        async def op(conn: Conn) -> list[QueuedMessage]:
            found = await fetch(conn, account_id, device_id, after_seq, limit)
            if len(found) < limit:  # the whole rest of the queue
                tails.known(address, after_seq, found)
            return found

        found: list[QueuedMessage] = await self.writes.own(op, transaction=False)
        return found

    async def ack(self, account_id: bytes, device_id: int, message_id: bytes) -> bool:
        return await self.ack_all(account_id, device_id, [message_id]) == 1

    async def ack_all(
        self,
        account_id: bytes,
        device_id: int,
        message_ids: Sequence[bytes],
        *,
        epoch: int | None = None,
    ) -> int:
        return await self.writes.ack_all((account_id, device_id), message_ids, epoch)

    def ack_each_nowait(
        self, acks: Sequence[DeviceAcks]
    ) -> asyncio.Future[list[StaleEpoch | None]]:
        # One operation each, all in the next batch's one statement (.pg_batch).
        return each_outcome(
            [self.writes.ack_all_nowait((a, d), ids, epoch) for a, d, ids, epoch in acks]
        )

    async def claim_device(self, account_id: bytes, device_id: int) -> int:
        return await self._tx(lambda conn: claim_device(conn, account_id, device_id))

    async def device_epoch(self, account_id: bytes, device_id: int) -> int:
        return await self._tx(lambda conn: device_epoch(conn, account_id, device_id))

    # ------------------------------------------------------------------ attachments

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

    # ------------------------------------------------------------------ invites

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

    # ------------------------------------------------------------------ operations

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

    # ------------------------------------------------------------------ retention

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

        message_count = nonce_count = 0
        while (step := await self.writes.own(messages, forgets=True)) > 0:  # in queue order
            message_count += step
        while (step := await self._tx(nonces)) > 0:
            nonce_count += step
        gone: list[bytes] = []
        while found := await self._tx(attachments):
            gone += found
        return PurgeResult(message_count, nonce_count, gone)


# ---------------------------------------------------------------------- helpers


async def _keep_session(conn: Conn) -> None:
    """The pool's reset of a connection given back (asyncpg still rolls back a transaction
    left open). Its default sends one more statement per use (advisory locks released,
    settings, cursors and LISTENs reset: 12% of a process's samples at K = 2 in
    bench/relay.py), for session state that no use of a pool connection here makes: locks
    held for a session live on the cluster's own connection (:mod:`.pg_cluster`), those
    of the pool's users are transaction locks."""


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


def _account(row: asyncpg.Record | None) -> AccountRecord | None:
    if row is None:
        return None
    return AccountRecord(
        bytes(row["account_id"]),
        row["username"],
        bytes(row["account_key"]),
        bytes(row["delivery_token_hash"]),
        bool(row["sealed_from_anyone"]),
        row["created"],
    )
