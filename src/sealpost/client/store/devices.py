"""Devices: this account's other devices, and the devices revoked by their account's key.

A revoked device (a contact's, or one of this account's) is never encrypted to again,
whatever a server lists: its revocation (signed by the account key; NULL when this device
learnt it otherwise, as from the account's own list) is kept, and the sessions with it are
dropped in the same operation.

This account's own devices (``own_devices``) are listed as this device knows them: its
siblings with the certificate a lookup checked against the key-transparency log (or a
sibling's message) brought, and before that, devices known by name only (announced by a
sibling, or provisioned with this device) with no certificate, which are never encrypted
to. This device's own row, if any, is ignored by the services. Deciding what to trust is
the devices service's (:mod:`sealpost.client.services.devices`); this stores what it
decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sealpost.client.store.connection import Connection
from sealpost.protocol.wire import DeviceCertificate

__all__ = ["DeviceRepository", "OwnDevice"]


@dataclass(frozen=True, slots=True)
class OwnDevice:
    device_id: int
    name: str
    certificate: DeviceCertificate | None  # None: known by name only, never encrypted to


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

    def is_revoked(self, account_id: bytes, device_id: int) -> bool:
        row = self._db.one(
            "SELECT 1 FROM revoked_devices WHERE account_id = ? AND device_id = ?",
            (account_id, device_id),
        )
        return row is not None

    # -- this account's own devices

    def own(self) -> list[OwnDevice]:
        """Every listed device of this account, by device id."""
        return [
            OwnDevice(
                int(device_id),
                str(name),
                None if cert is None else DeviceCertificate.decode(bytes(cert)),
            )
            for device_id, cert, name in self._db.all(
                "SELECT device_id, certificate, name FROM own_devices ORDER BY device_id"
            )
        ]

    def own_certified(self) -> dict[int, DeviceCertificate]:
        """This account's devices with a certificate (the ones that are encrypted to)."""
        return {
            int(device_id): DeviceCertificate.decode(bytes(cert))
            for device_id, cert in self._db.all(
                "SELECT device_id, certificate FROM own_devices WHERE certificate IS NOT NULL"
            )
        }

    def own_names(self) -> dict[int, str]:
        return {int(d): str(n) for d, n in self._db.all("SELECT device_id, name FROM own_devices")}

    def certify_own(self, certificates: Mapping[int, DeviceCertificate], now: int) -> None:
        """Set these devices' certificates (a device not listed yet is added, named
        ``device N``; a listed one keeps its name)."""
        self._db.executemany(
            "INSERT INTO own_devices (device_id, certificate, name, added) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET certificate = excluded.certificate",
            [(d, c.encode(), f"device {d}", now) for d, c in certificates.items()],
        )

    def replace_own(self, certificates: Mapping[int, DeviceCertificate], now: int) -> None:
        """This account's devices are exactly these (a checked lookup's answer): certify
        them and drop every other row."""
        with self._db.atomic():
            self.certify_own(certificates, now)
            self._db.execute(
                "DELETE FROM own_devices WHERE device_id NOT IN "  # noqa: S608 (placeholders only)
                f"({','.join('?' * len(certificates)) or 'NULL'})",
                tuple(certificates),
            )

    def name_own(self, device_id: int, name: str, now: int) -> None:
        """A device announced (linked) under ``name``: listed, or renamed if listed."""
        self._db.execute(
            "INSERT INTO own_devices (device_id, certificate, name, added) "
            "VALUES (?, NULL, ?, ?) ON CONFLICT (device_id) DO UPDATE SET name = excluded.name",
            (device_id, name, now),
        )

    def add_named_own(self, names: Mapping[int, str], now: int) -> None:
        """List these devices by name where they are not listed yet (provisioning)."""
        self._db.executemany(
            "INSERT OR IGNORE INTO own_devices (device_id, certificate, name, added) "
            "VALUES (?, NULL, ?, ?)",
            [(d, n, now) for d, n in names.items()],
        )

    def remove_own(self, device_id: int) -> str | None:
        """Unlist a device of this account; returns the name it had (``None``: unlisted)."""
        with self._db.atomic():
            row = self._db.one("SELECT name FROM own_devices WHERE device_id = ?", (device_id,))
            self._db.execute("DELETE FROM own_devices WHERE device_id = ?", (device_id,))
        return None if row is None else str(row[0])
