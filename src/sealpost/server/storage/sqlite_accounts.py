"""Accounts and their devices in SQLite: registering an account with its first device,
adding, removing and revoking devices, removing an account whole, and the lookups. Each
change is logged in its own transaction (:mod:`.sqlite_log`) and drops what the write path
keeps of the account (:mod:`.sqlite_core`); account records never change once created, so
they are cached (:mod:`.account_cache`).
"""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Any

from sealpost.crypto.sign import SigningKey
from sealpost.server.storage.account_cache import AccountCache
from sealpost.server.storage.base import (
    AccountExists,
    AccountRecord,
    DeviceExists,
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
from sealpost.server.storage.sqlite_admission import _spend_invite
from sealpost.server.storage.sqlite_core import SqliteCore
from sealpost.server.storage.sqlite_log import log_account_state, log_deletion
from sealpost.server.storage.sqlite_prekeys import _store_prekeys
from sealpost.transparency.log import DeletionCause

__all__ = ["SqliteAccounts"]


class SqliteAccounts(AccountCache, SqliteCore):
    """Account and device records, revocations and removals."""

    async def create_account(
        self,
        account: AccountRecord,
        device: DeviceRecord,
        prekeys: PreKeyUpload,
        *,
        invite: InviteUse | None = None,
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if invite is not None:
                _spend_invite(conn, invite)
            if conn.execute(
                "SELECT 1 FROM account_removals WHERE username_lower = ? AND free_at > ?",
                (account.username.lower(), account.created),
            ).fetchone():
                raise UsernameQuarantined("that name was a removed account's")
            row = conn.execute(
                "SELECT account_id FROM accounts WHERE username_lower = ? OR account_id = ?",
                (account.username.lower(), account.account_id),
            ).fetchall()
            for (existing,) in row:
                if existing == account.account_id:
                    raise AccountExists("account id already registered")
                raise UsernameTaken("username taken")
            self._device_ids.pop(account.account_id, None)
            conn.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    account.account_id,
                    account.username.lower(),
                    account.username,
                    account.account_key,
                    account.delivery_token_hash,
                    int(account.sealed_from_anyone),
                    account.created,
                ),
            )
            _insert_device(conn, device)
            _store_prekeys(conn, device.account_id, device.device_id, prekeys, None)
            log_account_state(conn, account.account_id, new=account)

        await self._write(op)

    async def add_device(
        self, device: DeviceRecord, prekeys: PreKeyUpload, *, max_devices: int
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if not conn.execute(
                "SELECT 1 FROM accounts WHERE account_id = ?", (device.account_id,)
            ).fetchone():
                raise UnknownAccount(device.account_id)
            if conn.execute(
                "SELECT 1 FROM revocations WHERE account_id = ? AND device_id = ?",
                (device.account_id, device.device_id),
            ).fetchone():
                raise DeviceRevoked("that device id was revoked")
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM devices WHERE account_id = ?", (device.account_id,)
            ).fetchone()
            if count >= max_devices:
                raise TooManyDevices("the account has as many devices as it may")
            self._device_ids.pop(device.account_id, None)
            _insert_device(conn, device)
            _store_prekeys(conn, device.account_id, device.device_id, prekeys, None)
            log_account_state(conn, device.account_id)

        await self._write(op)

    async def remove_device(self, account_id: bytes, device_id: int, revocation: bytes) -> None:
        def op(conn: sqlite3.Connection) -> None:
            ids = [
                d
                for (d,) in conn.execute(
                    "SELECT device_id FROM devices WHERE account_id = ?", (account_id,)
                )
            ]
            if device_id not in ids:
                raise UnknownDevice("no such device")
            if len(ids) == 1:
                raise LastDevice("the last device cannot be removed")
            self._device_ids.pop(account_id, None)
            key = (account_id, device_id)
            for table in ("devices", "signed_prekeys", "one_time_prekeys", "kem_prekeys"):
                conn.execute(
                    f"DELETE FROM {table} WHERE account_id = ? AND device_id = ?",  # noqa: S608 (our table names)
                    key,
                )
            gone = [
                bytes(m)
                for (m,) in conn.execute(
                    "DELETE FROM queue WHERE account_id = ? AND device_id = ? RETURNING message_id",
                    key,
                )
            ]
            self._effects.append(partial(self._tails.removed, key, gone))
            self._depth.pop(key, None)
            conn.execute(
                "INSERT OR REPLACE INTO revocations (account_id, device_id, revocation, revoked) "
                "VALUES (?, ?, ?, strftime('%s', 'now'))",
                (account_id, device_id, revocation),
            )
            log_account_state(conn, account_id)

        await self._write(op)

    async def remove_account(
        self,
        account_id: bytes,
        *,
        log_key: SigningKey,
        cause: DeletionCause,
        now_ms: int,
        free_at: int,
    ) -> RemovedAccount:
        def op(conn: sqlite3.Connection) -> RemovedAccount:
            row = conn.execute(
                "SELECT username_lower, account_key FROM accounts WHERE account_id = ?",
                (account_id,),
            ).fetchone()
            if row is None:
                raise UnknownAccount(account_id)
            username, account_key = str(row[0]), bytes(row[1])
            devices = [
                d
                for (d,) in conn.execute(
                    "SELECT device_id FROM devices WHERE account_id = ?", (account_id,)
                )
            ]
            gone: dict[tuple[bytes, int], list[bytes]] = {}
            for device_id, message_id in conn.execute(
                "DELETE FROM queue WHERE account_id = ? RETURNING device_id, message_id",
                (account_id,),
            ).fetchall():
                gone.setdefault((account_id, device_id), []).append(bytes(message_id))
            for table in (
                "devices",
                "signed_prekeys",
                "one_time_prekeys",
                "kem_prekeys",
                "revocations",
            ):
                conn.execute(
                    f"DELETE FROM {table} WHERE account_id = ?",  # noqa: S608 (our table names)
                    (account_id,),
                )
            attachments = [
                bytes(a)
                for (a,) in conn.execute(
                    "DELETE FROM attachments WHERE owner = ? RETURNING attachment_id",
                    (account_id,),
                ).fetchall()
            ]
            conn.execute("DELETE FROM accounts WHERE account_id = ?", (account_id,))
            index = log_deletion(
                conn,
                account_id,
                username,
                account_key,
                log_key=log_key,
                cause=cause,
                now_ms=now_ms,
                free_after=free_at * 1000,
            )
            conn.execute(
                "INSERT INTO account_removals (account_id, username_lower, log_index, cause,"
                " removed_at, free_at) VALUES (?, ?, ?, ?, ?, ?)",
                (account_id, username, index, int(cause), now_ms // 1000, free_at),
            )
            for address, message_ids in gone.items():
                self._effects.append(partial(self._tails.removed, address, message_ids))
            self._forget(account_id)
            return RemovedAccount(
                index, len(devices), sum(map(len, gone.values())), attachments, free_at
            )

        return await self._write(op)

    def _forget(self, account_id: bytes) -> None:
        self._accounts.pop(account_id, None)
        self._device_ids.pop(account_id, None)
        for address in [a for a in self._depth if a[0] == account_id]:
            del self._depth[address]

    async def forget_account(self, account_id: bytes) -> None:
        # Another process removed it: what this one kept may let a send through with a
        # device list read before (one batch at most), so its queue is swept as well.
        self._forget(account_id)
        self._tails.clear()

        def sweep(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM queue WHERE account_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM accounts WHERE account_id = ?)",
                (account_id, account_id),
            )
            self._effects.append(self._tails.clear)

        await self._write(sweep)

    async def removals(self, *, after: int) -> list[Removal]:
        return await self._read(
            lambda c: [
                Removal(seq, bytes(a), i, cause, free_at, bool(audited))
                for seq, a, i, cause, free_at, audited in c.execute(
                    "SELECT seq, account_id, log_index, cause, free_at, audited"
                    " FROM account_removals WHERE seq > ? ORDER BY seq",
                    (after,),
                )
            ]
        )

    async def mark_audited(self, seq: int) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE account_removals SET audited = 1 WHERE seq <= ? AND audited = 0", (seq,)
            )
        )

    async def revocations(self, account_id: bytes) -> list[bytes]:
        return await self._read(
            lambda c: [
                bytes(r)
                for (r,) in c.execute(
                    "SELECT revocation FROM revocations WHERE account_id = ? ORDER BY revoked",
                    (account_id,),
                )
            ]
        )

    async def account_by_username(self, username_lower: str) -> AccountRecord | None:
        return await self._read(
            lambda c: _account(
                c.execute(
                    "SELECT * FROM accounts WHERE username_lower = ?", (username_lower,)
                ).fetchone()
            )
        )

    async def account_by_id(self, account_id: bytes) -> AccountRecord | None:
        # Account records never change once created (no method updates or deletes one),
        # so they are cached: every sealed send checks its recipient's token against one,
        # and a thread hop per send would bound a connection's pipelined sends.
        cached = self.account_known(account_id)
        if cached is not None:
            return cached
        record = await self._read(
            lambda c: _account(
                c.execute("SELECT * FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
            )
        )
        if record is not None:
            self._remember_account(record)
        return record

    async def devices(self, account_id: bytes) -> list[DeviceRecord]:
        def op(conn: sqlite3.Connection) -> list[DeviceRecord]:
            rows = conn.execute(
                "SELECT device_id, certificate, registered FROM devices WHERE account_id = ?"
                " ORDER BY device_id",
                (account_id,),
            ).fetchall()
            return [DeviceRecord(account_id, d, bytes(c), r) for d, c, r in rows]

        return await self._read(op)

    async def device(self, account_id: bytes, device_id: int) -> DeviceRecord | None:
        def op(conn: sqlite3.Connection) -> DeviceRecord | None:
            row = conn.execute(
                "SELECT certificate, registered FROM devices"
                " WHERE account_id = ? AND device_id = ?",
                (account_id, device_id),
            ).fetchone()
            return (
                None if row is None else DeviceRecord(account_id, device_id, bytes(row[0]), row[1])
            )

        return await self._read(op)


def _account(row: tuple[Any, ...] | None) -> AccountRecord | None:
    if row is None:
        return None
    account_id, _lower, username, key, token_hash, sealed, created = row
    return AccountRecord(
        bytes(account_id), username, bytes(key), bytes(token_hash), bool(sealed), created
    )


def _insert_device(conn: sqlite3.Connection, device: DeviceRecord) -> None:
    try:
        conn.execute(
            "INSERT INTO devices VALUES (?, ?, ?, ?)",
            (device.account_id, device.device_id, device.certificate, device.registered),
        )
    except sqlite3.IntegrityError:
        raise DeviceExists("device id already registered") from None
