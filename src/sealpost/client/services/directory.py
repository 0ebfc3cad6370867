"""Directory and trust: who a username is, which devices it has, and whether to trust them.

A lookup is unauthenticated (the server does not learn who asks) and is trusted only as far
as the key-transparency log confirms it: the answer must be the account's latest entry at a
signed head at least as new as the newest this device holds, and a "no such user" must
come with the account map's proof of absence (:class:`~sealpost.client.services.transparency.
KeyTransparency`). Of the devices the server lists, only those whose certificates the
account key signed are kept, and never one whose revocation this device has seen
(:func:`verified_devices`, :func:`verified_revocations`).

A contact's account is pinned at first contact. If its name later answers with another
account, or its account with another key, that is a key change (as when a phone number's
identity key changes in Signal): the old key is kept to show, the sessions with the old
devices go, :class:`~sealpost.client.records.KeyChanged` is raised, and a verified contact
stays verified with ``key_changed`` set, which blocks sending to it until the user verifies
the new safety number. Contacts are read once and cached until a write touches them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sealpost._errors import ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.errors import ServerError, UnknownContact
from sealpost.client.paths import api_path, username_or_none
from sealpost.client.records import Contact, KeyChanged
from sealpost.client.services.transparency import KeyTransparency
from sealpost.client.store import Repositories
from sealpost.client.store.contacts import ContactRow
from sealpost.client.transport import unb64
from sealpost.protocol import verify_certificate
from sealpost.protocol.keys import verify_revocation
from sealpost.protocol.safety import safety_number, safety_qr_payload
from sealpost.protocol.wire import DeviceCertificate, DeviceRevocation

__all__ = ["Directory", "Lookup", "verified_devices", "verified_revocations"]

log = logging.getLogger("sealpost.client")

#: What a checked lookup found: account id, username, account key, trusted devices.
Lookup = tuple[bytes, str, bytes, dict[int, DeviceCertificate]]


def verified_devices(
    account_id: bytes, account_key: bytes, devices: Sequence[Any]
) -> dict[int, DeviceCertificate]:
    """The devices of a directory answer whose certificates the account key signed; any
    other entry (a ghost the server added) is dropped here and never encrypted to."""
    out: dict[int, DeviceCertificate] = {}
    for item in devices:
        try:
            cert = DeviceCertificate.decode(unb64(item["certificate"]))
            verify_certificate(cert, expected_account_key=account_key)
        except (ProtocolError, KeyError, TypeError, ServerError):
            log.warning("ignoring a listed device whose certificate does not verify")
            continue
        if cert.account_id != account_id or cert.device_id != item.get("device_id"):
            log.warning("ignoring a listed device whose certificate names another device")
            continue
        out[cert.device_id] = cert
    return out


def verified_revocations(
    account_id: bytes, account_key: bytes, items: Sequence[Any]
) -> dict[int, bytes]:
    """Device ids whose revocation the account key signed (others are ignored)."""
    out: dict[int, bytes] = {}
    if not isinstance(items, list):
        return out
    for item in items:
        try:
            raw = unb64(item)
            revocation = DeviceRevocation.decode(raw)
            verify_revocation(revocation, expected_account_key=account_key)
        except (ProtocolError, ServerError, TypeError):
            log.warning("ignoring a revocation that does not verify")
            continue
        if revocation.account_id == account_id:
            out[revocation.device_id] = raw
    return out


def contact_view(row: ContactRow) -> Contact:
    return Contact(
        row.account_id,
        row.username,
        row.account_key,
        row.verified,
        row.key_changed,
        tuple(sorted(row.devices)),
    )


class Directory:
    """Lookups checked against the log, the pinned contacts, key changes, verification.

    ``transparency`` gives the log view (pinning the server's log key on first use);
    ``forget_sessions(account_id, device_id)`` drops cached sessions with an account's
    devices (``device_id`` None: all of them) when its key changes or a device is revoked.
    """

    def __init__(
        self,
        ctx: ClientContext,
        *,
        transparency: Callable[[], Awaitable[KeyTransparency]],
        forget_sessions: Callable[[bytes, int | None], None],
    ) -> None:
        self._ctx = ctx
        self._transparency = transparency
        self._forget_sessions = forget_sessions
        self._contacts: dict[bytes, ContactRow] | None = None

    # -- the pinned contacts

    def cache(self) -> dict[bytes, ContactRow]:
        """Every contact by account id, read once and kept until a write touches them."""
        if self._contacts is None:
            self._contacts = {c.account_id: c for c in self._ctx.store.repos().contacts.all()}
        return self._contacts

    def changed(self) -> None:
        """Contacts were written: read them again when next needed."""
        self._contacts = None

    def by_name(self, name: str) -> ContactRow | None:
        name = name.lower()
        for contact in self.cache().values():
            if contact.username == name:
                return contact
        return None

    def by_id(self, account_id: bytes) -> ContactRow | None:
        return self.cache().get(account_id)

    def known(self, name: str) -> ContactRow:
        """The contact ``name``, or :class:`UnknownContact`."""
        contact = self.by_name(name)
        if contact is None:
            raise UnknownContact(name)
        return contact

    def contacts(self) -> list[Contact]:
        return [contact_view(c) for c in sorted(self.cache().values(), key=lambda c: c.username)]

    # -- lookups

    async def lookup(self, name: str) -> Lookup:
        """An unauthenticated lookup of ``name``, checked against the log. A name that
        breaks the username rules (a peer may claim anything) is not looked up at all.
        Revocations the answer carries are recorded."""
        if username_or_none(name) is None:
            raise UnknownContact(name)
        transparency = await self._transparency()
        floor = transparency.freshness_floor()
        try:
            doc = await self._ctx.transport.request("GET", api_path("accounts", name), signed=False)
        except ServerError as exc:
            if exc.code == "not_found":  # only with the account map's proof of absence
                await transparency.check_absence(exc.extra, name, floor=floor)
            if exc.code in ("not_found", "invalid_request"):
                raise UnknownContact(name) from None
            raise
        try:
            account_id = bytes.fromhex(doc["account_id"])
            account_key = unb64(doc["account_key"])
            username = str(doc["username"]).lower()
        except (KeyError, TypeError, ValueError):
            raise ServerError(0, "bad_response", "malformed account lookup") from None
        # the answer must be what the key-transparency log holds for this name
        await transparency.check_lookup(
            doc, account_id=account_id, username=name, account_key=account_key, floor=floor
        )
        try:
            devices = verified_devices(account_id, account_key, doc["devices"])
            revoked = verified_revocations(account_id, account_key, doc.get("revocations", []))
        except (KeyError, TypeError, ValueError):
            raise ServerError(0, "bad_response", "malformed account lookup") from None
        # a revoked device is never encrypted to again, even if the server lists it
        known_revoked = self._ctx.store.repos().devices.revoked(account_id)
        for device_id in set(revoked) | known_revoked:
            devices.pop(device_id, None)
        if revoked:
            with self._ctx.store.unit() as repos:
                for device_id, raw in revoked.items():
                    repos.devices.record_revocation(account_id, device_id, raw)
            for device_id in revoked:
                self._forget_sessions(account_id, device_id)
        if username != name.lower() or len(account_id) != 16 or len(account_key) != 32:
            raise ServerError(0, "bad_response", "the lookup answered for another name")
        return account_id, username, account_key, devices

    async def resolve(self, name: str, *, refresh: bool = False) -> ContactRow:
        """The contact ``name``, looked up on the server the first time (and on
        ``refresh``), pinned, with its devices as the lookup found them."""
        known = self.by_name(name)
        if known is not None and known.devices and not refresh:
            return known
        account_id, username, account_key, devices = await self.lookup(name)
        now = int(self._ctx.clock())
        try:
            with self._ctx.store.unit() as repos:
                if known is not None and known.account_id != account_id:
                    # the pinned account is replaced by another one under the same name
                    repos.contacts.repin(known.account_id, account_id)
                    self.note_key_change(repos, known, account_key, old_account=known.account_id)
                elif known is None:
                    existing = self.by_id(account_id)
                    if existing is None:
                        repos.contacts.add(account_id, username, account_key, now)
                    elif existing.account_key != account_key:
                        self.note_key_change(repos, existing, account_key)
                elif known.account_key != account_key:
                    self.note_key_change(repos, known, account_key)
                repos.contacts.replace_devices(account_id, devices)
        finally:
            self.changed()
        contact = self.by_id(account_id)
        assert contact is not None
        return contact

    def note_key_change(
        self,
        repos: Repositories,
        contact: ContactRow,
        new_key: bytes,
        *,
        old_account: bytes | None = None,
    ) -> None:
        """Record (in the unit of ``repos``) that ``contact`` now has ``new_key``: keep the
        old key to show, drop the sessions with the old devices, and raise
        :class:`KeyChanged`."""
        account_id = contact.account_id if old_account is None else old_account
        repos.contacts.change_key(contact.username, new_key, contact.account_key, account_id)
        self._forget_sessions(account_id, None)
        self._ctx.events.emit(KeyChanged(contact.username, contact.verified))

    # -- trust decisions of the user

    def safety_number(self, name: str) -> str:
        contact = self.known(name)
        ctx = self._ctx
        own_key = ctx.account.public_key().public_bytes_raw()
        return safety_number(ctx.account_id, own_key, contact.account_id, contact.account_key)

    def safety_qr_payload(self, name: str) -> bytes:
        """What the QR code beside the safety number encodes (scanned to compare)."""
        contact = self.known(name)
        ctx = self._ctx
        own_key = ctx.account.public_key().public_bytes_raw()
        return safety_qr_payload(ctx.account_id, own_key, contact.account_id, contact.account_key)

    def verify(self, name: str) -> None:
        """Mark ``name``'s current safety number as checked by the user."""
        contact = self.known(name)
        with self._ctx.store.unit() as repos:
            repos.contacts.verify(contact.account_id)
        self.changed()

    def acknowledge_key_change(self, name: str) -> None:
        """Dismiss the warning for an unverified contact's new key (shown once)."""
        with self._ctx.store.unit() as repos:
            repos.contacts.acknowledge_key_change(name.lower())
        self.changed()
