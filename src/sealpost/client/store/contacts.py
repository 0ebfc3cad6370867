"""Contacts: each account this profile talks to, pinned at first contact, and its devices.

A contact is its account id, username, account key (the pinned one; ``previous_key`` is
kept after a change, to show), whether the user verified the safety number, whether the
key changed since (``key_changed``: a warning, and for a verified contact a refusal to
send until verified again), the delivery token its messages carry, and the device
certificates a lookup checked against the key-transparency log. Deciding what to trust is
the directory service's (:mod:`sealpost.client.services.directory`); this stores what it
decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sealpost.client.store.connection import Connection
from sealpost.protocol.wire import DeviceCertificate

__all__ = ["ContactRepository", "ContactRow"]


@dataclass(slots=True)
class ContactRow:
    """A contact as stored (see the module docstring)."""

    account_id: bytes
    username: str
    account_key: bytes
    verified: bool
    key_changed: bool
    delivery_token: bytes | None
    devices: dict[int, DeviceCertificate]


class ContactRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def all(self) -> list[ContactRow]:
        """Every contact with its devices."""
        devices: dict[bytes, dict[int, DeviceCertificate]] = {}
        for account_id, device_id, cert in self._db.all(
            "SELECT account_id, device_id, certificate FROM contact_devices"
        ):
            devices.setdefault(bytes(account_id), {})[device_id] = DeviceCertificate.decode(
                bytes(cert)
            )
        return [
            ContactRow(
                bytes(account_id),
                username,
                bytes(key),
                bool(verified),
                bool(changed),
                None if token is None else bytes(token),
                devices.get(bytes(account_id), {}),
            )
            for account_id, username, key, verified, changed, token in self._db.all(
                "SELECT account_id, username, account_key, verified, key_changed, "
                "delivery_token FROM contacts"
            )
        ]

    def add(
        self,
        account_id: bytes,
        username: str,
        account_key: bytes,
        added: int,
        *,
        verified: bool = False,
        delivery_token: bytes | None = None,
    ) -> bool:
        """Pin a new contact (no devices yet); whether it was new (an account or name
        already stored is left as it is)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO contacts (account_id, username, account_key, verified, "
            "delivery_token, added) VALUES (?, ?, ?, ?, ?, ?)",
            (account_id, username, account_key, int(verified), delivery_token, added),
        )
        return bool(cursor.rowcount)

    def replace_devices(self, account_id: bytes, devices: Mapping[int, DeviceCertificate]) -> None:
        """The contact's devices are now exactly ``devices``."""
        with self._db.atomic():
            self._db.execute("DELETE FROM contact_devices WHERE account_id = ?", (account_id,))
            self._db.executemany(
                "INSERT INTO contact_devices (account_id, device_id, certificate) VALUES (?, ?, ?)",
                [(account_id, d, cert.encode()) for d, cert in devices.items()],
            )

    def repin(self, old_account: bytes, new_account: bytes) -> None:
        """The contact pinned as ``old_account`` now answers (under the same name) as
        ``new_account``: the contact and its conversation move to the new id; the devices
        of both are dropped (the caller stores the new ones) and any other contact stored
        under the new id goes. The key change itself is :meth:`change_key`."""
        with self._db.atomic():
            for gone in (new_account, old_account):
                self._db.execute("DELETE FROM contact_devices WHERE account_id = ?", (gone,))
            self._db.execute("DELETE FROM contacts WHERE account_id = ?", (new_account,))
            self._db.execute(
                "UPDATE contacts SET account_id = ? WHERE account_id = ?",
                (new_account, old_account),
            )
            self._db.execute(
                "UPDATE messages SET peer = ? WHERE peer = ?", (new_account, old_account)
            )

    def change_key(
        self, username: str, new_key: bytes, previous_key: bytes, sessions_of: bytes
    ) -> None:
        """``username``'s account key is now ``new_key``: ``previous_key`` is kept to show,
        ``key_changed`` is set (a verified contact stays verified, which blocks sending
        until verified again) and the sessions with the account ``sessions_of`` (the old
        devices) are dropped."""
        with self._db.atomic():
            self._db.execute(
                "UPDATE contacts SET account_key = ?, previous_key = ?, key_changed = 1 "
                "WHERE username = ?",
                (new_key, previous_key, username),
            )
            self._db.execute("DELETE FROM sessions WHERE account_id = ?", (sessions_of,))

    def verify(self, account_id: bytes) -> None:
        """The user checked the current safety number."""
        self._db.execute(
            "UPDATE contacts SET verified = 1, key_changed = 0, previous_key = NULL "
            "WHERE account_id = ?",
            (account_id,),
        )

    def acknowledge_key_change(self, username: str) -> None:
        """Dismiss an unverified contact's key-change warning (a verified one keeps it)."""
        self._db.execute(
            "UPDATE contacts SET key_changed = 0 WHERE username = ? AND verified = 0",
            (username,),
        )

    def set_delivery_token(self, account_id: bytes, token: bytes) -> None:
        self._db.execute(
            "UPDATE contacts SET delivery_token = ? WHERE account_id = ?", (token, account_id)
        )
