"""Devices and their prekeys in PostgreSQL: the statements (:func:`insert_device`,
:func:`store_prekeys`, :func:`take_bundle`, :func:`prekey_stock`), each run in the caller's
transaction, and :class:`PgPrekeys`, the storage's methods, each one transaction of them.
A one-time prekey is taken with ``FOR UPDATE SKIP LOCKED``, so concurrent fetchers on any
processes never get the same one.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import asyncpg

from sealpost.server.storage.base import (
    BundleParts,
    DeviceExists,
    DeviceRecord,
    PreKeyStock,
    PreKeyStockFull,
    PreKeyUpload,
)
from sealpost.server.storage.pg_core import PgCore

__all__ = ["PgPrekeys", "insert_device", "prekey_stock", "store_prekeys", "take_bundle"]

Conn: TypeAlias = asyncpg.Connection

KEM_LAST_RESORT: Final = 1
KEM_ONE_TIME: Final = 2


async def take_bundle(
    conn: Conn, account_id: bytes, device_id: int, one_time: bool = True
) -> BundleParts | None:
    """With ``one_time`` false nothing is taken: no X25519 one-time key, and the
    last-resort ML-KEM key."""
    cert = await conn.fetchval(
        "SELECT certificate FROM devices WHERE account_id = $1 AND device_id = $2",
        account_id,
        device_id,
    )
    spk = await conn.fetchval(
        "SELECT prekey FROM signed_prekeys WHERE account_id = $1 AND device_id = $2",
        account_id,
        device_id,
    )
    if cert is None or spk is None:
        return None
    if not one_time:
        kem = await conn.fetchval(
            "SELECT prekey FROM kem_prekeys WHERE account_id = $1 AND device_id = $2 AND kind = $3",
            account_id,
            device_id,
            KEM_LAST_RESORT,
        )
        return BundleParts(bytes(cert), bytes(spk), None, None if kem is None else bytes(kem))
    opk = await conn.fetchval(
        "DELETE FROM one_time_prekeys WHERE (account_id, device_id, key_id) ="
        " (SELECT account_id, device_id, key_id FROM one_time_prekeys"
        "  WHERE account_id = $1 AND device_id = $2 ORDER BY key_id LIMIT 1"
        "  FOR UPDATE SKIP LOCKED) RETURNING prekey",
        account_id,
        device_id,
    )
    kem = await conn.fetchval(
        "DELETE FROM kem_prekeys WHERE (account_id, device_id, kind, key_id) ="
        " (SELECT account_id, device_id, kind, key_id FROM kem_prekeys"
        "  WHERE account_id = $1 AND device_id = $2 AND kind = $3 ORDER BY key_id"
        "  LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING prekey",
        account_id,
        device_id,
        KEM_ONE_TIME,
    )
    if kem is None:
        kem = await conn.fetchval(
            "SELECT prekey FROM kem_prekeys WHERE account_id = $1 AND device_id = $2 AND kind = $3",
            account_id,
            device_id,
            KEM_LAST_RESORT,
        )
    return BundleParts(
        bytes(cert),
        bytes(spk),
        None if opk is None else bytes(opk),
        None if kem is None else bytes(kem),
    )


async def prekey_stock(conn: Conn, account_id: bytes, device_id: int) -> PreKeyStock:
    row = await conn.fetchrow(
        "SELECT"
        " EXISTS (SELECT 1 FROM signed_prekeys WHERE account_id = $1 AND device_id = $2),"
        " (SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = $1 AND device_id = $2),"
        " (SELECT COUNT(*) FROM kem_prekeys WHERE account_id = $1 AND device_id = $2"
        "  AND kind = 1),"
        " (SELECT COUNT(*) FROM kem_prekeys WHERE account_id = $1 AND device_id = $2"
        "  AND kind = 2)",
        account_id,
        device_id,
    )
    assert row is not None
    return PreKeyStock(bool(row[0]), row[2] > 0, row[1], row[3])


async def insert_device(conn: Conn, device: DeviceRecord) -> None:
    try:
        async with conn.transaction():  # a savepoint: a refusal leaves the rest usable
            await conn.execute(
                "INSERT INTO devices VALUES ($1, $2, $3, $4)",
                device.account_id,
                device.device_id,
                device.certificate,
                device.registered,
            )
    except asyncpg.UniqueViolationError:
        raise DeviceExists("device id already registered") from None
    await conn.execute(
        "INSERT INTO device_queues (account_id, device_id) VALUES ($1, $2)",
        device.account_id,
        device.device_id,
    )


async def store_prekeys(
    conn: Conn,
    account_id: bytes,
    device_id: int,
    prekeys: PreKeyUpload,
    max_stock: int | None,
) -> None:
    if prekeys.signed_prekey is not None:
        await conn.execute(
            "INSERT INTO signed_prekeys VALUES ($1, $2, $3, $4) ON CONFLICT (account_id,"
            " device_id) DO UPDATE SET key_id = EXCLUDED.key_id, prekey = EXCLUDED.prekey",
            account_id,
            device_id,
            *prekeys.signed_prekey,
        )
    if prekeys.kem_last_resort is not None:
        await conn.execute(
            "DELETE FROM kem_prekeys WHERE account_id = $1 AND device_id = $2 AND kind = $3",
            account_id,
            device_id,
            KEM_LAST_RESORT,
        )
        await conn.execute(
            "INSERT INTO kem_prekeys VALUES ($1, $2, $3, $4, $5)",
            account_id,
            device_id,
            KEM_LAST_RESORT,
            *prekeys.kem_last_resort,
        )
    for kind, keys in ((None, prekeys.one_time), (KEM_ONE_TIME, prekeys.kem_one_time)):
        if not keys:
            continue
        if kind is None:
            sql = (
                "INSERT INTO one_time_prekeys SELECT $1, $2, v.k, v.p"
                " FROM unnest($3::bigint[], $4::bytea[]) AS v(k, p)"
                " ON CONFLICT (account_id, device_id, key_id)"
                " DO UPDATE SET prekey = EXCLUDED.prekey"
            )
        else:
            sql = (
                f"INSERT INTO kem_prekeys SELECT $1, $2, {kind}, v.k, v.p"  # noqa: S608
                " FROM unnest($3::bigint[], $4::bytea[]) AS v(k, p)"
                " ON CONFLICT (account_id, device_id, kind, key_id)"
                " DO UPDATE SET prekey = EXCLUDED.prekey"
            )
        # Later duplicates of a key id win, as INSERT OR REPLACE does in SQLite.
        unique = dict(keys)
        await conn.execute(sql, account_id, device_id, list(unique), list(unique.values()))
    if max_stock is not None:
        otk, kem = await conn.fetchrow(
            "SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = $1"
            " AND device_id = $2), (SELECT COUNT(*) FROM kem_prekeys WHERE account_id = $1"
            " AND device_id = $2 AND kind = 2)",
            account_id,
            device_id,
        )
        if otk > max_stock or kem > max_stock:
            raise PreKeyStockFull("one-time prekey stock would exceed its limit")


class PgPrekeys(PgCore):
    """Prekeys and bundles."""

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
