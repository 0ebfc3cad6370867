"""Accounts and their devices in PostgreSQL: registering an account with its first device
(spending its invite, :mod:`.pg_admission`), adding, removing and revoking devices, removing
an account whole, and the lookups. Each change is logged in its own transaction
(:mod:`.pg_log`); those that change device lists run in their turn among the queue writes
(:mod:`.pg_batch`) and drop what this process keeps of the account (:mod:`.pg_core`).
Account records never change once created, so they are cached (:mod:`.account_cache`).
"""

from __future__ import annotations

import asyncpg

from sealpost.crypto.sign import SigningKey
from sealpost.server.storage.account_cache import AccountCache
from sealpost.server.storage.base import (
    AccountExists,
    AccountRecord,
    DeviceRecord,
    DeviceRevoked,
    InviteUse,
    LastDevice,
    PreKeyUpload,
    Removal,
    RemovedAccount,
    TooManyDevices,
    UnknownAccount,
    UnknownDevice,
    UsernameQuarantined,
    UsernameTaken,
)
from sealpost.server.storage.pg_admission import _spend_invite
from sealpost.server.storage.pg_core import Conn, PgCore
from sealpost.server.storage.pg_log import log_account_state, log_deletion
from sealpost.server.storage.pg_prekeys import insert_device, store_prekeys
from sealpost.server.storage.pg_queue import lock_queues
from sealpost.transparency.log import DeletionCause

__all__ = ["PgAccounts"]


class PgAccounts(AccountCache, PgCore):
    """Accounts, devices, revocations and removals."""

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
            self._remember_account(record)
        return record

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
