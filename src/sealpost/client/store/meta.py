"""The profile's facts and settings: a key-value table (``meta``).

Keys in use: the account and device (``account``, ``device``, ``username``,
``device_name``, ``server_url``, ``server_key``, ``delivery_token``, ``registered``),
prekey bookkeeping (``spk_id``, ``spk_created``, ``next_prekey_id``) and key transparency
(``log_key``, ``log_head``, ``log_monitored*``). Values are bytes.
"""

from __future__ import annotations

from sealpost.client.store.connection import Connection

__all__ = ["MetaRepository"]


class MetaRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def get(self, key: str) -> bytes | None:
        row = self._db.one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    def get_int(self, key: str, default: int = 0) -> int:
        """A value written by :meth:`set_int` (``default`` when unset)."""
        value = self.get(key)
        return default if value is None else int(value.decode())

    def set(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def set_int(self, key: str, value: int) -> None:
        self.set(key, str(value).encode())

    def set_many(self, values: dict[str, bytes]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items())
        )
