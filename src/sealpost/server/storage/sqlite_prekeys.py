"""Prekeys in SQLite: each device's signed prekey, its last-resort KEM prekey and its
stocks of one-time (X25519 and KEM) prekeys. Handing out a bundle is a write, so that a
one-time prekey is taken by one fetcher only, even of many concurrent ones (its ``DELETE``
runs in its place among the other writes).
"""

from __future__ import annotations

import sqlite3
from typing import Final

from sealpost.server.storage.base import BundleParts, PreKeyStock, PreKeyStockFull, PreKeyUpload
from sealpost.server.storage.sqlite_core import SqliteCore

__all__ = ["SqlitePrekeys"]

KEM_LAST_RESORT: Final = 1

KEM_ONE_TIME: Final = 2


class SqlitePrekeys(SqliteCore):
    """Prekey uploads, bundles and stock counts."""

    async def store_prekeys(
        self, account_id: bytes, device_id: int, prekeys: PreKeyUpload, *, max_stock: int
    ) -> None:
        await self._write(lambda c: _store_prekeys(c, account_id, device_id, prekeys, max_stock))

    async def take_bundle(
        self, account_id: bytes, device_id: int, *, one_time: bool = True
    ) -> BundleParts | None:
        def op(conn: sqlite3.Connection) -> BundleParts | None:
            key = (account_id, device_id)
            cert = conn.execute(
                "SELECT certificate FROM devices WHERE account_id = ? AND device_id = ?", key
            ).fetchone()
            spk = conn.execute(
                "SELECT prekey FROM signed_prekeys WHERE account_id = ? AND device_id = ?", key
            ).fetchone()
            if cert is None or spk is None:
                return None
            opk = _take_one(conn, "one_time_prekeys", key, None) if one_time else None
            kem = _take_one(conn, "kem_prekeys", key, KEM_ONE_TIME) if one_time else None
            if kem is None:
                row = conn.execute(
                    "SELECT prekey FROM kem_prekeys WHERE account_id = ? AND device_id = ?"
                    " AND kind = ?",
                    (*key, KEM_LAST_RESORT),
                ).fetchone()
                kem = None if row is None else bytes(row[0])
            return BundleParts(bytes(cert[0]), bytes(spk[0]), opk, kem)

        return await self._write(op)

    async def prekey_stock(self, account_id: bytes, device_id: int) -> PreKeyStock:
        def op(conn: sqlite3.Connection) -> PreKeyStock:
            key = (account_id, device_id)
            spk = conn.execute(
                "SELECT 1 FROM signed_prekeys WHERE account_id = ? AND device_id = ?", key
            ).fetchone()
            (otk,) = conn.execute(
                "SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = ? AND device_id = ?",
                key,
            ).fetchone()
            counts = dict(
                conn.execute(
                    "SELECT kind, COUNT(*) FROM kem_prekeys WHERE account_id = ? AND device_id = ?"
                    " GROUP BY kind",
                    key,
                ).fetchall()
            )
            return PreKeyStock(
                signed_prekey=spk is not None,
                kem_last_resort=counts.get(KEM_LAST_RESORT, 0) > 0,
                one_time=otk,
                kem_one_time=counts.get(KEM_ONE_TIME, 0),
            )

        return await self._read(op)


def _take_one(
    conn: sqlite3.Connection, table: str, key: tuple[bytes, int], kind: int | None
) -> bytes | None:
    kind_clause = "" if kind is None else f" AND kind = {int(kind)}"
    row = conn.execute(
        f"SELECT key_id, prekey FROM {table} WHERE account_id = ? AND device_id = ?"  # noqa: S608
        f"{kind_clause} ORDER BY key_id LIMIT 1",
        key,
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        f"DELETE FROM {table} WHERE account_id = ? AND device_id = ? AND key_id = ?"  # noqa: S608
        f"{kind_clause}",
        (*key, row[0]),
    )
    return bytes(row[1])


def _store_prekeys(
    conn: sqlite3.Connection,
    account_id: bytes,
    device_id: int,
    prekeys: PreKeyUpload,
    max_stock: int | None,
) -> None:
    key = (account_id, device_id)
    if prekeys.signed_prekey is not None:
        conn.execute(
            "INSERT OR REPLACE INTO signed_prekeys VALUES (?, ?, ?, ?)",
            (*key, *prekeys.signed_prekey),
        )
    if prekeys.kem_last_resort is not None:
        conn.execute(
            "DELETE FROM kem_prekeys WHERE account_id = ? AND device_id = ? AND kind = ?",
            (*key, KEM_LAST_RESORT),
        )
        conn.execute(
            "INSERT INTO kem_prekeys VALUES (?, ?, ?, ?, ?)",
            (*key, KEM_LAST_RESORT, *prekeys.kem_last_resort),
        )
    conn.executemany(
        "INSERT OR REPLACE INTO one_time_prekeys VALUES (?, ?, ?, ?)",
        [(*key, key_id, data) for key_id, data in prekeys.one_time],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO kem_prekeys VALUES (?, ?, ?, ?, ?)",
        [(*key, KEM_ONE_TIME, key_id, data) for key_id, data in prekeys.kem_one_time],
    )
    if max_stock is not None:
        (otk,) = conn.execute(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = ? AND device_id = ?", key
        ).fetchone()
        (kem,) = conn.execute(
            "SELECT COUNT(*) FROM kem_prekeys WHERE account_id = ? AND device_id = ? AND kind = ?",
            (*key, KEM_ONE_TIME),
        ).fetchone()
        if otk > max_stock or kem > max_stock:
            raise PreKeyStockFull("one-time prekey stock would exceed its limit")
