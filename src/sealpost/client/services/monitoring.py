"""Watching the log: this account's own entries, the contacts again, and the alarms.

:class:`Monitoring` is the key-transparency service a client talks to. It holds the log
view (:class:`~.transparency.KeyTransparency`, built from the pinned log key; a profile
made before the log pins the server's key on first use), and runs the monitoring pass
(:meth:`Monitoring.monitor`) on connecting and every :attr:`Monitoring.interval` seconds:

1. gossiped heads not yet proven consistent are tried again (an alarm once overdue);
2. **self-monitoring** (:func:`check_own_entries`): this account's entries after the last
   one checked must each carry this account's identity key, certificates the account key
   signed, and only devices this account knows (added by this device or announced by a
   sibling), with sequence numbers that have no gaps. A ghost device the server logged
   for this account (to have senders encrypt to it) shows up here, on every one of the
   account's devices; a device not yet announced gets :attr:`Monitoring.grace` seconds;
3. a few contacts are looked up again (the least recently checked first), so a change to
   a contact's devices, a revocation above all, is seen even if the server never says
   ``mismatched_devices``.

It also answers what the user asks about the log: the newest head (:meth:`log_head`),
the alarms (:meth:`alarms`, :meth:`dismiss_alarms`), and why the server refused this
device (:meth:`diagnose_refusal`, :mod:`sealpost.client.diagnose`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from sealpost._errors import ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.diagnose import diagnose_refusal
from sealpost.client.errors import ClientError, ServerError
from sealpost.client.services.transparency import KeyTransparency
from sealpost.client.store.alarms import Alarm, MonitorMark
from sealpost.client.store.contacts import ContactRow
from sealpost.client.transport import unb64
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.keys import verify_certificate, verify_revocation
from sealpost.protocol.wire import DeviceCertificate, DeviceRevocation
from sealpost.transparency.log import (
    DeletionEntry,
    SignedTreeHead,
    account_map_key,
    account_map_value,
    decode_entry,
    devices_commitment,
)
from sealpost.transparency.merkle import RootMismatch, leaf_hash, verify_inclusion
from sealpost.transparency.smt import MapProof, verify_map

__all__ = [
    "MONITOR_GRACE",
    "MONITOR_INTERVAL",
    "RECHECK_CONTACTS",
    "Monitoring",
    "check_own_entries",
    "fetch_log_key",
]

log = logging.getLogger("sealpost.client")

MONITOR_INTERVAL = 300.0  # seconds between checks of this account's own log entries
RECHECK_CONTACTS = 16  # contacts looked up again per monitoring pass (all within an hour at 192)
MONITOR_GRACE = 600.0  # seconds a sibling's new device may go unannounced (see monitor)

#: Most pages of own entries one monitoring pass reads (256 entries each).
_MAX_PAGES = 64


async def fetch_log_key(request: Callable[..., Awaitable[Any]]) -> bytes:
    """The server's log key (``request``: a transport's ``request``)."""
    doc = await request("GET", "/v1/log/key", signed=False)
    log_key = unb64(doc.get("public_key") if isinstance(doc, dict) else None)
    VerifyKey.from_public_bytes(log_key)
    return log_key


class Monitoring:
    """The log view and the monitoring pass. ``contacts`` lists the contacts to look up
    again and ``lookup(name)`` does it, checked against the log (the directory's)."""

    def __init__(
        self,
        ctx: ClientContext,
        *,
        contacts: Callable[[], Iterable[ContactRow]],
        lookup: Callable[[str], Awaitable[object]],
    ) -> None:
        self._ctx = ctx
        self._contacts = contacts
        self._lookup = lookup
        log_key = ctx.store.repos().log.log_key()
        self.kt: KeyTransparency | None = (
            None if log_key is None else KeyTransparency(ctx, VerifyKey.from_public_bytes(log_key))
        )
        self.next_due = 0.0  # when the next pass is due (clock seconds)
        self._recheck_from = 0  # where the next pass of contact re-checks starts
        #: Seconds a log entry naming a device this account does not know may wait for the
        #: sibling's announcement of it before it is an alarm.
        self.grace = MONITOR_GRACE
        #: Seconds between checks of this account's log entries while connected.
        self.interval = MONITOR_INTERVAL

    async def transparency(self) -> KeyTransparency:
        """The log view; a profile made before the log pins the server's log key now."""
        if self.kt is None:
            log_key = await fetch_log_key(self._ctx.transport.request)
            with self._ctx.store.unit() as repos:
                repos.log.set_log_key(log_key)
            log.warning("pinned the server's log key on first use (a profile from before it)")
            self.kt = KeyTransparency(self._ctx, VerifyKey.from_public_bytes(log_key))
        return self.kt

    def gossip(self) -> bytes | None:
        """The newest head's bytes, which outgoing messages carry (``None``: none yet)."""
        return None if self.kt is None else self.kt.gossip()

    def log_head(self) -> dict[str, Any] | None:
        """The newest signed tree head this device has checked (what it gossips)."""
        head = None if self.kt is None else self.kt.head
        if head is None:
            return None
        return {"tree_size": head.tree_size, "timestamp": head.timestamp, "root": head.root.hex()}

    def alarms(self, *, include_dismissed: bool = False) -> list[Alarm]:
        """Key-transparency alarms, oldest first (they stay until dismissed)."""
        return self._ctx.store.repos().alarms.list(include_dismissed=include_dismissed)

    def dismiss_alarms(self, alarm_ids: Sequence[int] | None = None) -> int:
        """Dismiss these alarms (all with ``None``); returns how many were dismissed."""
        with self._ctx.store.unit() as repos:
            return repos.alarms.dismiss(alarm_ids)

    async def diagnose_refusal(self) -> ClientError | None:
        """After the server refused this device's signature (``unauthorized``): the error
        that says why, if the server's public answers tell (:mod:`.diagnose`)."""
        ctx = self._ctx

        def alarm(kind: str, subject: str, detail: str, evidence: Sequence[bytes]) -> None:
            if self.kt is not None:
                self.kt.alarm(kind, subject, detail, evidence)

        return await diagnose_refusal(
            lambda method, path: ctx.transport.request(method, path, signed=False),
            username=ctx.username,
            account_key=ctx.account.public_key().public_bytes_raw(),
            device_id=ctx.device_id,
            pinned_log_key=ctx.store.repos().log.log_key(),
            alarm=alarm,
        )

    def due(self) -> bool:
        return self._ctx.clock() >= self.next_due

    def _known_own_devices(self) -> set[int]:
        repos = self._ctx.store.repos()
        known = set(repos.devices.own_names()) | repos.devices.revoked(self._ctx.account_id)
        return known | {self._ctx.device_id}

    async def monitor(self) -> int:
        """Check this account's key-transparency entries since the last check: a device
        or identity key that no device of this account added raises an alarm (on every
        device of the account, each checking for itself). Also tries again the gossiped
        heads not yet proven consistent (an alarm once overdue) and looks a few contacts
        up again. Runs on connecting and every :attr:`interval` seconds; returns how many
        entries were checked."""
        kt = await self.transparency()
        self.next_due = self._ctx.clock() + self.interval
        await kt.retry_gossip()  # first: it alarms even if the server hangs up on the rest
        checked = await check_own_entries(
            self._ctx,
            kt,
            known_devices=self._known_own_devices(),
            grace_ms=int(self.grace * 1000),
        )
        await self.recheck_contacts()
        return checked

    async def recheck_contacts(self) -> None:
        """Look contacts up again (a few each pass, the least recently checked first), so
        a change to a contact's devices, a revocation above all, is seen even if the
        server never says ``mismatched_devices``; the lookup's checks alarm on a replay."""
        names = [c.username for c in self._contacts() if c.devices]
        start = self._recheck_from % len(names) if names else 0
        for name in (names[start:] + names[:start])[:RECHECK_CONTACTS]:
            self._recheck_from += 1
            try:
                await self._lookup(name)
            except ClientError as exc:  # alarmed, or the server is away: next pass
                log.info("re-checking a contact did not finish: %s", type(exc).__name__)


def _revoked_ids(items: Sequence[Any], account_key: bytes) -> set[int]:
    """Device ids that a revocation signed by the account key (in any of ``items``)
    revoked: a device that was removed is known to have been this account's."""
    out = set()
    for item in items:
        try:
            raws = [unb64(r) for r in item["revocations"]]
        except (KeyError, TypeError, ServerError):
            continue
        for raw in raws:
            try:
                revocation = DeviceRevocation.decode(raw)
                verify_revocation(revocation, expected_account_key=account_key)
            except ProtocolError:
                continue
            out.add(revocation.device_id)
    return out


async def check_own_entries(
    ctx: ClientContext, kt: KeyTransparency, *, known_devices: set[int], grace_ms: int
) -> int:
    """Check this account's log entries after the last one checked; returns how many were
    checked. A device id outside ``known_devices`` (nor revoked by the account key in that
    entry) in an entry younger than ``grace_ms`` is left for the next pass (a sibling's
    announcement of a device it just linked may not have arrived yet)."""
    account_id, username = ctx.account_id, ctx.username
    account_key = ctx.account.public_key().public_bytes_raw()
    checked = 0
    mark = ctx.store.repos().log.monitored()
    after, last_seq, revoked_so_far = mark.after, mark.sequence, set(mark.revoked)
    me = "this account"
    for _ in range(_MAX_PAGES):
        query = "" if after < 0 else f"?after={after}"
        doc = await kt.request(f"/v1/log/accounts/{account_id.hex()}{query}")
        try:
            head_raw = unb64(doc["head"])
            items = list(doc["entries"])
            more = bool(doc.get("more"))
        except (KeyError, TypeError):
            raise ServerError(0, "bad_response", "malformed log entries") from None
        head = await kt.observe(head_raw, source="this account's log entries")
        newest = _check_own_latest(kt, doc, head, account_id, username)
        revoked = _revoked_ids(items, account_key)
        entry_revoked: set[int] = set()
        stop = False
        for item in items:
            try:
                index = int(item["index"])
                entry_raw = unb64(item["entry"])
                proof = [unb64(h) for h in item["proof"]]
                certificates = [unb64(c) for c in item["certificates"]]
                revocations = [unb64(r) for r in item["revocations"]]
                verify_inclusion(leaf_hash(entry_raw), index, head.tree_size, proof, head.root)
                decoded = decode_entry(entry_raw)
                if isinstance(decoded, DeletionEntry):
                    kt.verify_deletion(decoded)
                commitment = devices_commitment(certificates, revocations)
            except (KeyError, TypeError, ValueError, ProtocolError) as exc:
                kt.fail(
                    "log_inconsistent",
                    me,
                    f"an entry of this account's log does not check out ({type(exc).__name__})",
                )
            if index <= after or decoded.account_id != account_id:
                kt.fail("log_inconsistent", me, "the server sent another account's entry")
            if isinstance(decoded, DeletionEntry):  # signed by the log key: removed
                kt.alarm(
                    "account_removed",
                    me,
                    f"log entry {decoded.sequence} (index {index}) removes this account",
                    (entry_raw,),
                )
                stop = True
                break
            entry = decoded
            if entry.sequence != last_seq + 1:
                kt.alarm(
                    "log_entries_missing",
                    me,
                    f"entry {entry.sequence} follows entry {last_seq}",
                )
            if entry.account_key != account_key or entry.username != username.lower():
                kt.alarm(
                    "account_key_changed",
                    me,
                    f"log entry {entry.sequence} (index {index}) names another identity "
                    "key or username for this account",
                )
            entry_revoked = _revoked_ids([item], account_key)
            for device_id in sorted(revoked_so_far - entry_revoked):
                kt.alarm(
                    "revoked_device_returned",
                    me,
                    f"log entry {entry.sequence} drops the revocation of device {device_id}",
                )
            if commitment != entry.devices:
                kt.alarm(
                    "directory_mismatch",
                    me,
                    f"log entry {entry.sequence} does not commit to the devices served with it",
                )
            for raw in certificates:
                try:
                    cert = DeviceCertificate.decode(raw)
                    verify_certificate(cert, expected_account_key=account_key)
                except ProtocolError:
                    kt.alarm(
                        "forged_device",
                        me,
                        f"log entry {entry.sequence} lists a device certificate "
                        f"(sha256 {hashlib.sha256(raw).hexdigest()[:16]}) that this "
                        "account's key did not sign",
                    )
                    continue
                if cert.account_id != account_id:
                    continue
                if cert.device_id in revoked_so_far | entry_revoked:
                    kt.alarm(
                        "revoked_device_returned",
                        me,
                        f"log entry {entry.sequence} lists device {cert.device_id}, which "
                        "this account revoked",
                    )
                    continue
                if cert.device_id in known_devices or cert.device_id in revoked:
                    continue
                if entry.timestamp > int(ctx.clock() * 1000) - grace_ms:
                    stop = True  # perhaps a sibling's new device, not announced yet
                    break
                kt.alarm(
                    "unknown_device",
                    me,
                    f"device {cert.device_id} is in this account's log (entry "
                    f"{entry.sequence}) but no device of this account added it",
                )
            if stop:
                break
            after, last_seq = index, entry.sequence
            revoked_so_far |= entry_revoked
            checked += 1
        with ctx.store.unit() as repos:
            repos.log.set_monitored(MonitorMark(after, last_seq, frozenset(revoked_so_far)))
        if not more and not stop and newest < after:
            kt.fail(
                "log_inconsistent",
                me,
                f"the account map names entry index {newest} as this account's newest, "
                f"but the log holds index {after} for it (others would be shown an old "
                "state of this account)",
                (head_raw,),
            )
        if stop or not more:
            break
    return checked


def _check_own_latest(
    kt: KeyTransparency,
    doc: Mapping[str, Any],
    head: SignedTreeHead,
    account_id: bytes,
    username: str,
) -> int:
    """The index of this account's newest entry as the account map at ``head`` has it
    (what every contact's lookup is shown), checked; raises :class:`TransparencyFailure`."""
    try:
        latest = doc["latest"]
        index = int(latest["index"])
        entry_raw = unb64(latest["entry"])
        proof = [unb64(h) for h in latest["proof"]]
        verify_inclusion(leaf_hash(entry_raw), index, head.tree_size, proof, head.root)
        verify_map(
            account_map_key(username.lower()),
            account_map_value(index, leaf_hash(entry_raw)),
            MapProof.decode(unb64(latest["map_proof"])),
            head.map_root,
        )
        if decode_entry(entry_raw).account_id != account_id:
            raise RootMismatch("another account's entry")
    except (KeyError, TypeError, ValueError, ServerError, ProtocolError) as exc:
        kt.fail(
            "log_inconsistent",
            "this account",
            f"the account map's entry for this account does not check out ({type(exc).__name__})",
        )
    return index
