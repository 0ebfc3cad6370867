"""Devices: this account's other devices, and the devices revoked by their account's key.

A revoked device (a contact's, or one of this account's) is never encrypted to again,
whatever a server lists: its revocation (signed by the account key; NULL when this device
learnt it otherwise, as from the account's own list) is kept, and the sessions with it are
dropped in the same operation.
"""

from __future__ import annotations

from sealpost.client.store.connection import Connection

__all__ = ["DeviceRepository"]


class DeviceRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def revoked(self, account_id: bytes) -> set[int]:
        """The device ids of ``account_id`` known to be revoked."""
        return {
            d
            for (d,) in self._db.all(
                "SELECT device_id FROM revoked_devices WHERE account_id = ?", (account_id,)
            )
        }

    def record_revocation(
        self, account_id: bytes, device_id: int, revocation: bytes | None
    ) -> None:
        """``device_id`` of ``account_id`` is revoked (``revocation``: the signed notice,
        if any; the first one recorded is kept); its sessions go."""
        with self._db.atomic():
            self._db.execute(
                "INSERT OR IGNORE INTO revoked_devices (account_id, device_id, revocation) "
                "VALUES (?, ?, ?)",
                (account_id, device_id, revocation),
            )
            self._db.execute(
                "DELETE FROM sessions WHERE account_id = ? AND device_id = ?",
                (account_id, device_id),
            )
