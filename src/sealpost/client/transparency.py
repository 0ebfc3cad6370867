"""The client's side of key transparency (DESIGN.md section 4, promise P4).

The server keeps an append-only Merkle log of every account's keys and devices and signs
its state (:mod:`sealpost.transparency`). This module makes a client hold it to that log:

- **Lookups.** Every directory answer (a contact's or this account's own devices) comes
  with the account's newest log entry, its inclusion proof, its account-map proof and a
  signed tree head. The head must be signed by the log key pinned at ``init`` and be at
  least as new as the newest head held (the server proves the map at its newest head
  only, so an older one is a replayed answer); the inclusion proof must hold; the map
  proof must show that this entry is the name's *newest* at that head; and the entry
  must name exactly the account, identity key, certificates and revocations served.
  Each account's entry sequence is pinned: a lookup that goes back to an older entry is
  refused. An unknown name must come with the map's proof of absence. Anything else
  raises :class:`TransparencyFailure` (nothing is encrypted to those devices) and an
  alarm.
- **Consistency.** The newest head seen is kept; any other head (newer or older, from a
  lookup, from the monitor or gossiped by a contact) must be proven consistent with it
  by a consistency proof from the server. A log that was rewritten, or that shows this
  client a different history than another client, fails that: a persistent alarm.
- **Self-monitoring.** :meth:`KeyTransparency.monitor` reads this account's own entries
  after the last one checked: each must carry this account's identity key, certificates
  the account key signed, and only devices this account knows (added by this device or
  announced by a sibling), with sequence numbers that have no gaps. A ghost device the
  server logged for this account (to have senders encrypt to it) shows up here, on every
  one of the account's devices.
- **Gossip.** Every message sent carries the sender's newest head inside the encryption;
  a receiver checks it against its own (:meth:`KeyTransparency.check_gossip`). A head
  whose consistency proof cannot be fetched (the connection fails) is kept and tried
  again at each monitoring pass (:meth:`KeyTransparency.retry_gossip`); after
  :data:`GOSSIP_PROOF_DEADLINE` seconds without a proof it is an alarm.

Alarms are rows of the encrypted store: they stay until the user dismisses them
(``sealpost alarms``), and every CLI command shows them. An alarm's text names public
things only (usernames, device ids, tree sizes); its evidence is the signed heads.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sealpost._errors import ProtocolError
from sealpost.client.errors import ServerError, ServerUnavailable, TransparencyFailure
from sealpost.client.store import Store
from sealpost.client.transport import unb64
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.keys import verify_certificate, verify_revocation
from sealpost.protocol.wire import DeviceCertificate, DeviceRevocation
from sealpost.transparency.log import (
    LogEntry,
    SignedTreeHead,
    account_map_key,
    account_map_value,
    devices_commitment,
    legacy_head_anchor,
)
from sealpost.transparency.merkle import (
    EMPTY_ROOT,
    RootMismatch,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from sealpost.transparency.smt import MapProof, verify_map

__all__ = [
    "ALARM_KINDS",
    "GOSSIP_PROOF_DEADLINE",
    "Alarm",
    "KeyTransparency",
    "dismiss_alarms",
    "read_alarms",
]

log = logging.getLogger("sealpost.client.transparency")

#: What each alarm means, in the words the CLI shows.
ALARM_KINDS: Mapping[str, str] = {
    "bad_tree_head": "the server sent a log tree head that its pinned log key did not sign",
    "log_inconsistent": "the server's key-transparency log is not one append-only history "
    "(rewritten, or different for different users)",
    "directory_mismatch": "the server served keys or devices that its log does not hold",
    "unknown_device": "a device this account did not add is in this account's log",
    "forged_device": "this account's log lists a device certificate its key did not sign",
    "account_key_changed": "this account's log holds an identity key that is not this account's",
    "log_entries_missing": "entries of this account's log are missing or out of order",
    "revoked_device_returned": "a device this account revoked is back in its log, or its "
    "revocation was dropped",
    "stale_lookup": "the server answered a lookup with an older state of an account than "
    "this client has already seen (a replayed answer, hiding a change such as a revocation)",
    "consistency_refused": "the server would not prove that a tree head a contact gossiped "
    "is consistent with this client's (a split view it cannot justify)",
    "log_key_changed": "the server signs its log with another key than the one pinned: "
    "it lost its data, or another server answers at its address",
}

#: Seconds a gossiped head may stay unproven (the server unreachable for its consistency
#: proof) before that is an alarm: long enough for a network outage to pass, short enough
#: that a server which hangs up on exactly these requests is named within the hour.
GOSSIP_PROOF_DEADLINE = 1800.0

#: Most pages of own entries one monitoring pass reads (256 entries each).
_MAX_PAGES = 64

Request = Callable[[str, str], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Alarm:
    alarm_id: int
    kind: str
    subject: str  # whom or what it is about: a username, "log", this account
    detail: str
    raised: int  # seconds since the epoch
    dismissed: bool

    @property
    def meaning(self) -> str:
        return ALARM_KINDS.get(self.kind, self.kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.alarm_id,
            "kind": self.kind,
            "subject": self.subject,
            "meaning": self.meaning,
            "detail": self.detail,
            "raised": self.raised,
            "dismissed": self.dismissed,
        }


def read_alarms(store: Store, *, include_dismissed: bool = False) -> list[Alarm]:
    """The profile's alarms, oldest first (without the dismissed ones, unless asked)."""
    rows = store.read().execute(
        "SELECT id, kind, subject, detail, raised, dismissed FROM alarms"
        " WHERE dismissed <= ? ORDER BY id",
        (1 if include_dismissed else 0,),
    )
    return [Alarm(i, k, s, d, r, bool(x)) for i, k, s, d, r, x in rows]


def dismiss_alarms(store: Store, alarm_ids: Iterable[int] | None = None) -> int:
    """Dismiss these alarms (all of them with ``None``); how many were dismissed."""
    with store.transaction() as conn:
        if alarm_ids is None:
            cur = conn.execute("UPDATE alarms SET dismissed = 1 WHERE dismissed = 0")
            return int(cur.rowcount)
        return sum(
            int(
                conn.execute(
                    "UPDATE alarms SET dismissed = 1 WHERE id = ? AND dismissed = 0", (i,)
                ).rowcount
            )
            for i in alarm_ids
        )


def _served_lists(doc: Mapping[str, Any]) -> tuple[list[bytes], list[bytes]]:
    certificates = [unb64(item["certificate"]) for item in doc["devices"]]
    revocations = [unb64(r) for r in doc.get("revocations", [])]
    return certificates, revocations


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


class KeyTransparency:
    """One profile's view of its server's log: the pinned key, the newest head, alarms."""

    def __init__(
        self,
        store: Store,
        request: Request,
        log_key: VerifyKey,
        *,
        clock: Callable[[], float],
        on_alarm: Callable[[Alarm], None],
    ) -> None:
        self._store = store
        self._request = request
        self._key = log_key
        self._clock = clock
        self._on_alarm = on_alarm
        raw = store.get_meta("log_head")
        self._head: SignedTreeHead | None = None
        # (size, root) of a head of the first format kept before heads committed to the map:
        # the first new head must extend it.
        self._legacy: tuple[int, bytes] | None = None
        if raw is not None:
            try:
                self._head = SignedTreeHead.decode(raw)
            except ProtocolError:
                self._legacy = legacy_head_anchor(raw)
        self._seen: set[bytes] = set()  # heads already checked (gossip is repetitive)
        self.gossip_deadline = GOSSIP_PROOF_DEADLINE

    # ------------------------------------------------------------------ alarms

    def alarm(self, kind: str, subject: str, detail: str, evidence: Sequence[bytes] = ()) -> None:
        """Record an alarm (once per kind, subject and detail) and tell the client."""
        now = int(self._clock())
        blob = b"".join(len(e).to_bytes(2, "big") + e for e in evidence)
        with self._store.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO alarms (kind, subject, detail, evidence, raised)"
                " VALUES (?, ?, ?, ?, ?)",
                (kind, subject, detail, blob, now),
            )
            alarm_id = cur.lastrowid if cur.rowcount else None
        log.warning("key transparency alarm: %s (%s)", kind, subject)
        if alarm_id is not None:
            self._on_alarm(Alarm(int(alarm_id), kind, subject, detail, now, False))

    def _fail(self, kind: str, subject: str, detail: str, evidence: Sequence[bytes] = ()) -> None:
        self.alarm(kind, subject, detail, evidence)
        raise TransparencyFailure(kind, detail)

    # ------------------------------------------------------------------ heads

    @property
    def log_key(self) -> bytes:
        """The pinned log key (public)."""
        return self._key.public_bytes_raw()

    @property
    def head(self) -> SignedTreeHead | None:
        """The newest head this client has checked."""
        return self._head

    def gossip(self) -> bytes | None:
        """What outgoing messages carry: the newest head's bytes."""
        return None if self._head is None else self._head.encode()

    async def observe(self, raw: bytes, *, source: str) -> SignedTreeHead:
        """Check a tree head from ``source`` against the newest one held, and keep it if it
        is newer. Raises :class:`TransparencyFailure` (with an alarm) if it is not signed
        by the log key or not consistent with the held head."""
        try:
            head = SignedTreeHead.decode(raw)
            head.verify(self._key)
        except ProtocolError:
            self._fail("bad_tree_head", "log", f"a tree head from {source} does not verify")
        known = self._head
        if known is None and self._legacy is not None:
            await self._prove_from_legacy(head, source, raw)
        if known is None or raw in self._seen:
            if known is None:
                self._keep(head)
            return head
        if head.tree_size == known.tree_size:
            if head.root != known.root or head.map_root != known.map_root:
                self._fail(
                    "log_inconsistent",
                    "log",
                    f"two signed heads of size {head.tree_size} with different roots "
                    f"(one from {source})",
                    (known.encode(), raw),
                )
            self._seen.add(raw)
            return head
        small, big = (known, head) if head.tree_size > known.tree_size else (head, known)
        await self._prove_consistent(small, big, source, (known.encode(), raw))
        self._seen.add(raw)
        if head is big:
            self._keep(head)
        return head

    async def _prove_consistent(
        self, small: SignedTreeHead, big: SignedTreeHead, source: str, evidence: Sequence[bytes]
    ) -> None:
        """Have the server prove that ``big`` extends ``small``; alarm if it cannot."""
        try:
            if small.tree_size == 0:  # every log extends the empty one, whose root is fixed
                if small.root != EMPTY_ROOT:
                    raise RootMismatch("an empty log with another root")
                return
            doc = await self._request(
                "GET", f"/v1/log/consistency?from={small.tree_size}&to={big.tree_size}"
            )
            proof = [unb64(h) for h in doc["proof"]]
            verify_consistency(small.tree_size, big.tree_size, small.root, big.root, proof)
        except (ServerError, ProtocolError, KeyError, TypeError) as exc:
            self._fail(
                "log_inconsistent",
                "log",
                f"no valid consistency proof from size {small.tree_size} to {big.tree_size} "
                f"(a head from {source}): {type(exc).__name__}",
                evidence,
            )

    async def _prove_from_legacy(self, head: SignedTreeHead, source: str, raw: bytes) -> None:
        assert self._legacy is not None
        size, old_root = self._legacy
        evidence = (raw,)
        if head.tree_size < size:
            self._fail("log_inconsistent", "log", f"the log shrank below {size}", evidence)
        if head.tree_size == size:
            if head.root != old_root:
                self._fail("log_inconsistent", "log", "two roots for one size", evidence)
        else:
            anchor = SignedTreeHead(size, 0, old_root, EMPTY_ROOT, bytes(64))
            await self._prove_consistent(anchor, head, source, evidence)
        self._legacy = None

    def _keep(self, head: SignedTreeHead) -> None:
        raw = head.encode()
        with self._store.transaction() as conn:
            self._store.set_meta(conn, "log_head", raw)
        self._head = head
        self._seen.add(raw)

    async def check_gossip(self, raw: bytes, sender: str) -> None:
        """A contact's head, from inside a message: alarms if the two views disagree. A
        server that cannot be reached leaves it unchecked (logged), not alarmed."""
        if raw in self._seen:
            return
        try:
            await self.observe(raw, source=f"a message from {sender}")
        except TransparencyFailure:
            pass  # the alarm is raised
        except Exception as exc:  # unreachable now: kept, tried again, alarmed when overdue
            log.info("could not check a gossiped tree head: %s", type(exc).__name__)
            with self._store.transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO kt_unproven (head, source, first_failed)"
                    " VALUES (?, ?, ?)",
                    (raw, sender, int(self._clock())),
                )

    async def retry_gossip(self) -> int:
        """Check again each gossiped head whose consistency proof could not be fetched;
        one still unproven after :attr:`gossip_deadline` seconds is a
        ``consistency_refused`` alarm. Returns how many are still waiting."""
        rows = list(
            self._store.read().execute("SELECT head, source, first_failed FROM kt_unproven")
        )
        waiting = 0
        for raw, sender, first in rows:
            raw = bytes(raw)
            done = True
            try:
                await self.observe(raw, source=f"a message from {sender}")
            except TransparencyFailure:
                pass  # alarmed
            except ServerUnavailable as exc:
                done = self._clock() - first >= self.gossip_deadline
                if done:
                    head = SignedTreeHead.decode(raw)
                    self.alarm(
                        "consistency_refused",
                        "log",
                        f"for {int(self._clock() - first)} s the server would not prove that "
                        f"the head of size {head.tree_size} gossiped by {sender} is "
                        f"consistent with this client's ({type(exc).__name__})",
                        (raw,),
                    )
            if done:
                with self._store.transaction() as conn:
                    conn.execute("DELETE FROM kt_unproven WHERE head = ?", (raw,))
            else:
                waiting += 1
        return waiting

    # ------------------------------------------------------------------ lookups

    def freshness_floor(self) -> int:
        """The size of the newest head held: a lookup asked for now must be proven at a
        head at least this new (read it before sending the request, so that heads learnt
        meanwhile, from gossip or a concurrent lookup, do not count)."""
        return 0 if self._head is None else self._head.tree_size

    async def check_lookup(
        self,
        doc: Mapping[str, Any],
        *,
        account_id: bytes,
        username: str,
        account_key: bytes,
        floor: int | None = None,
    ) -> None:
        """Check a directory answer against the log and the account map; raises
        :class:`TransparencyFailure`. The account's entry sequence is pinned. ``floor``:
        :meth:`freshness_floor` when the request was sent (default: now)."""
        subject = username.lower()
        try:
            proof_doc = doc["transparency"]
            head_raw = unb64(proof_doc["head"])
            index = proof_doc["index"]
            entry_raw = unb64(proof_doc["entry"])
            proof = [unb64(h) for h in proof_doc["proof"]]
            map_raw = unb64(proof_doc["map_proof"])
            certificates, revocations = _served_lists(doc)
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise TypeError("index")
        except (KeyError, TypeError, ServerError):
            self._fail("directory_mismatch", subject, f"the lookup of {subject} has no log proof")
        floor = self.freshness_floor() if floor is None else floor
        head = await self.observe(head_raw, source=f"the lookup of {subject}")
        self._check_fresh(head, subject, floor)
        try:
            verify_inclusion(leaf_hash(entry_raw), index, head.tree_size, proof, head.root)
            verify_map(
                account_map_key(subject),
                account_map_value(index, leaf_hash(entry_raw)),
                MapProof.decode(map_raw),
                head.map_root,
            )
            entry = LogEntry.decode(entry_raw)
            commitment = devices_commitment(certificates, revocations)
        except ProtocolError as exc:
            self._fail(
                "directory_mismatch",
                subject,
                f"the log proof for {subject} does not hold ({type(exc).__name__})",
            )
        if (
            entry.account_id != account_id
            or entry.username != subject
            or entry.account_key != account_key
        ):
            self._fail(
                "directory_mismatch",
                subject,
                f"the server served an account or identity key for {subject} that its log "
                "does not hold",
            )
        if commitment != entry.devices:
            self._fail(
                "directory_mismatch",
                subject,
                f"the server served devices for {subject} that its log does not hold",
            )
        self._pin(entry, index, (head_raw,))

    async def check_absence(
        self, doc: Mapping[str, Any], username: str, *, floor: int | None = None
    ) -> None:
        """Check that a "no such account" answer for ``username`` comes with the account
        map's proof of absence at a fresh head; raises :class:`TransparencyFailure`."""
        subject = username.lower()
        try:
            key = account_map_key(subject)
        except ProtocolError:
            return  # not a username at all: no account can have it
        try:
            proof_doc = doc["transparency"]
            head_raw = unb64(proof_doc["head"])
            map_proof = MapProof.decode(unb64(proof_doc["map_proof"]))
        except (KeyError, TypeError, ServerError, ProtocolError):
            self._fail(
                "directory_mismatch",
                subject,
                f"the server said {subject} has no account without proving it",
            )
        floor = self.freshness_floor() if floor is None else floor
        head = await self.observe(head_raw, source=f"the lookup of {subject}")
        self._check_fresh(head, subject, floor)
        try:
            verify_map(key, None, map_proof, head.map_root)
        except ProtocolError as exc:
            self._fail(
                "directory_mismatch",
                subject,
                f"the server's proof that {subject} has no account does not hold "
                f"({type(exc).__name__})",
            )
        pinned = (
            self._store.read()
            .execute("SELECT 1 FROM kt_pins WHERE username = ?", (subject,))
            .fetchone()
        )
        if pinned is not None:  # accounts are never removed from the log
            self._fail(
                "stale_lookup",
                subject,
                f"the server's map says {subject} has no account, but this client has seen "
                "its account in the log",
                (head_raw,),
            )

    def _check_fresh(self, head: SignedTreeHead, subject: str, floor: int) -> None:
        """A lookup is proven at the server's newest head: one older than the newest held
        when it was asked for is an old answer replayed."""
        if head.tree_size < floor:
            newest = self._head
            self._fail(
                "stale_lookup",
                subject,
                f"the lookup of {subject} is proven at a head of size {head.tree_size}, "
                f"older than the newest one seen before asking ({floor})",
                (head.encode(),) + (() if newest is None else (newest.encode(),)),
            )

    def _pin(self, entry: LogEntry, index: int, evidence: Sequence[bytes]) -> None:
        row = (
            self._store.read()
            .execute(
                "SELECT sequence, log_index FROM kt_pins WHERE account_id = ?", (entry.account_id,)
            )
            .fetchone()
        )
        if row is not None and (entry.sequence < row[0] or index < row[1]):
            self._fail(
                "stale_lookup",
                entry.username,
                f"the server showed entry {entry.sequence} of {entry.username} as its newest, "
                f"after entry {row[0]} (a rolled-back account state)",
                evidence,
            )
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO kt_pins (account_id, username, sequence, log_index)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET"
                " username = excluded.username, sequence = excluded.sequence,"
                " log_index = excluded.log_index",
                (entry.account_id, entry.username, entry.sequence, index),
            )

    # ------------------------------------------------------------------ self-monitoring

    async def monitor(
        self,
        *,
        account_id: bytes,
        username: str,
        account_key: bytes,
        known_devices: set[int],
        grace_ms: int,
    ) -> int:
        """Check this account's log entries after the last one checked; returns how many
        were checked. A device id outside ``known_devices`` (nor revoked by the account key
        in that entry) in an entry younger than ``grace_ms`` is left for the next pass (a
        sibling's announcement of a device it just linked may not have arrived yet)."""
        checked = 0
        after = int((self._store.get_meta("log_monitored") or b"-1").decode())  # an index
        last_seq = int((self._store.get_meta("log_monitored_seq") or b"0").decode())
        stored = (self._store.get_meta("log_monitored_revoked") or b"").decode()
        revoked_so_far = {int(d) for d in stored.split(",") if d}
        me = "this account"
        for _ in range(_MAX_PAGES):
            query = "" if after < 0 else f"?after={after}"
            doc = await self._request("GET", f"/v1/log/accounts/{account_id.hex()}{query}")
            try:
                head_raw = unb64(doc["head"])
                items = list(doc["entries"])
                more = bool(doc.get("more"))
            except (KeyError, TypeError):
                raise ServerError(0, "bad_response", "malformed log entries") from None
            head = await self.observe(head_raw, source="this account's log entries")
            newest = self._check_own_latest(doc, head, account_id, username)
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
                    entry = LogEntry.decode(entry_raw)
                    commitment = devices_commitment(certificates, revocations)
                except (KeyError, TypeError, ValueError, ProtocolError) as exc:
                    self._fail(
                        "log_inconsistent",
                        me,
                        f"an entry of this account's log does not check out ({type(exc).__name__})",
                    )
                if index <= after or entry.account_id != account_id:
                    self._fail("log_inconsistent", me, "the server sent another account's entry")
                if entry.sequence != last_seq + 1:
                    self.alarm(
                        "log_entries_missing",
                        me,
                        f"entry {entry.sequence} follows entry {last_seq}",
                    )
                if entry.account_key != account_key or entry.username != username.lower():
                    self.alarm(
                        "account_key_changed",
                        me,
                        f"log entry {entry.sequence} (index {index}) names another identity "
                        "key or username for this account",
                    )
                entry_revoked = _revoked_ids([item], account_key)
                for device_id in sorted(revoked_so_far - entry_revoked):
                    self.alarm(
                        "revoked_device_returned",
                        me,
                        f"log entry {entry.sequence} drops the revocation of device {device_id}",
                    )
                if commitment != entry.devices:
                    self.alarm(
                        "directory_mismatch",
                        me,
                        f"log entry {entry.sequence} does not commit to the devices served with it",
                    )
                for raw in certificates:
                    try:
                        cert = DeviceCertificate.decode(raw)
                        verify_certificate(cert, expected_account_key=account_key)
                    except ProtocolError:
                        self.alarm(
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
                        self.alarm(
                            "revoked_device_returned",
                            me,
                            f"log entry {entry.sequence} lists device {cert.device_id}, which "
                            "this account revoked",
                        )
                        continue
                    if cert.device_id in known_devices or cert.device_id in revoked:
                        continue
                    if entry.timestamp > int(self._clock() * 1000) - grace_ms:
                        stop = True  # perhaps a sibling's new device, not announced yet
                        break
                    self.alarm(
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
            with self._store.transaction() as conn:
                self._store.set_meta(conn, "log_monitored", str(after).encode())
                self._store.set_meta(conn, "log_monitored_seq", str(last_seq).encode())
                self._store.set_meta(
                    conn,
                    "log_monitored_revoked",
                    ",".join(str(d) for d in sorted(revoked_so_far)).encode(),
                )
            if not more and not stop and newest < after:
                self._fail(
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
        self, doc: Mapping[str, Any], head: SignedTreeHead, account_id: bytes, username: str
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
            if LogEntry.decode(entry_raw).account_id != account_id:
                raise RootMismatch("another account's entry")
        except (KeyError, TypeError, ValueError, ServerError, ProtocolError) as exc:
            self._fail(
                "log_inconsistent",
                "this account",
                f"the account map's entry for this account does not check out "
                f"({type(exc).__name__})",
            )
        return index
