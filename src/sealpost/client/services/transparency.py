"""Key transparency, the client's side (DESIGN.md section 4, promise P4): the log view.

The server keeps an append-only Merkle log of every account's keys and devices and signs
its state (:mod:`sealpost.transparency`). :class:`KeyTransparency` holds a client to that
log:

- **Lookups.** Every directory answer (a contact's or this account's own devices) comes
  with the account's newest log entry, its inclusion proof, its account-map proof and a
  signed tree head. The head must be signed by the pinned log key and be at least as new
  as the newest head held (the server proves the map at its newest head only, so an older
  one is a replayed answer); the inclusion proof must hold; the map proof must show that
  this entry is the name's *newest* at that head; and the entry must name exactly the
  account, identity key, certificates and revocations served. Each account's entry
  sequence is pinned: a lookup that goes back to an older entry is refused. An unknown
  name must come with the map's proof of absence. Anything else raises
  :class:`TransparencyFailure` (nothing is encrypted to those devices) and an alarm.
- **Consistency.** The newest head seen is kept; any other head (newer or older, from a
  lookup, from the monitor or gossiped by a contact) must be proven consistent with it by
  a consistency proof from the server. A log that was rewritten, or that shows this client
  a different history than another client, fails that: a persistent alarm.
- **Gossip.** Every message sent carries the sender's newest head inside the encryption;
  a receiver checks it against its own (:meth:`KeyTransparency.check_gossip`). A head
  whose consistency proof cannot be fetched (the connection fails) is kept and tried
  again at each monitoring pass (:meth:`KeyTransparency.retry_gossip`); after
  :data:`GOSSIP_PROOF_DEADLINE` seconds without a proof it is an alarm.

The self-monitoring of this account's own entries is :mod:`.monitoring`'s. Alarms are rows
of the encrypted store (:mod:`sealpost.client.store.alarms`): they stay until the user
dismisses them (``sealpost alarms``), and every CLI command shows them. An alarm's text
names public things only (usernames, device ids, tree sizes); its evidence is the signed
heads. Each alarm is also an :class:`~sealpost.client.records.AlarmRaised` event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from sealpost._errors import ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.errors import ServerError, ServerUnavailable, TransparencyFailure
from sealpost.client.records import AlarmRaised
from sealpost.client.store.alarms import LogPin
from sealpost.client.transport import unb64
from sealpost.crypto.sign import VerifyKey
from sealpost.transparency.log import (
    DeletionEntry,
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

__all__ = ["GOSSIP_PROOF_DEADLINE", "KeyTransparency"]

log = logging.getLogger("sealpost.client.transparency")

#: Seconds a gossiped head may stay unproven (the server unreachable for its consistency
#: proof) before that is an alarm: long enough for a network outage to pass, short enough
#: that a server which hangs up on exactly these requests is named within the hour.
GOSSIP_PROOF_DEADLINE = 1800.0


def _served_lists(doc: Mapping[str, Any]) -> tuple[list[bytes], list[bytes]]:
    certificates = [unb64(item["certificate"]) for item in doc["devices"]]
    revocations = [unb64(r) for r in doc.get("revocations", [])]
    return certificates, revocations


class KeyTransparency:
    """One profile's view of its server's log: the pinned key, the newest head, alarms."""

    def __init__(self, ctx: ClientContext, log_key: VerifyKey) -> None:
        self._ctx = ctx
        self._store = ctx.store
        self._key = log_key
        self._clock = ctx.clock
        raw = ctx.store.repos().log.head()
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
        with self._store.unit() as repos:
            alarm = repos.alarms.raise_alarm(kind, subject, detail, evidence, int(self._clock()))
        log.warning("key transparency alarm: %s (%s)", kind, subject)
        if alarm is not None:
            self._ctx.events.emit(AlarmRaised(alarm))

    def fail(
        self, kind: str, subject: str, detail: str, evidence: Sequence[bytes] = ()
    ) -> NoReturn:
        self.alarm(kind, subject, detail, evidence)
        raise TransparencyFailure(kind, detail)

    async def request(self, path: str) -> Any:
        """An unsigned GET to the log (what anyone may ask)."""
        return await self._ctx.transport.request("GET", path, signed=False)

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
            self.fail("bad_tree_head", "log", f"a tree head from {source} does not verify")
        known = self._head
        if known is None and self._legacy is not None:
            await self._prove_from_legacy(head, source, raw)
        if known is None or raw in self._seen:
            if known is None:
                self._keep(head)
            return head
        if head.tree_size == known.tree_size:
            if head.root != known.root or head.map_root != known.map_root:
                self.fail(
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
            doc = await self.request(
                f"/v1/log/consistency?from={small.tree_size}&to={big.tree_size}"
            )
            proof = [unb64(h) for h in doc["proof"]]
            verify_consistency(small.tree_size, big.tree_size, small.root, big.root, proof)
        except (ServerError, ProtocolError, KeyError, TypeError) as exc:
            self.fail(
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
            self.fail("log_inconsistent", "log", f"the log shrank below {size}", evidence)
        if head.tree_size == size:
            if head.root != old_root:
                self.fail("log_inconsistent", "log", "two roots for one size", evidence)
        else:
            anchor = SignedTreeHead(size, 0, old_root, EMPTY_ROOT, bytes(64))
            await self._prove_consistent(anchor, head, source, evidence)
        self._legacy = None

    def _keep(self, head: SignedTreeHead) -> None:
        raw = head.encode()
        with self._store.unit() as repos:
            repos.log.set_head(raw)
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
            with self._store.unit() as repos:
                repos.log.add_unproven(raw, sender, int(self._clock()))

    async def retry_gossip(self) -> int:
        """Check again each gossiped head whose consistency proof could not be fetched;
        one still unproven after :attr:`gossip_deadline` seconds is a
        ``consistency_refused`` alarm. Returns how many are still waiting."""
        waiting = 0
        for row in self._store.repos().log.unproven():
            raw, sender, first = row.head, row.source, row.first_failed
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
                with self._store.unit() as repos:
                    repos.log.proven(raw)
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
            self.fail("directory_mismatch", subject, f"the lookup of {subject} has no log proof")
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
            self.fail(
                "directory_mismatch",
                subject,
                f"the log proof for {subject} does not hold ({type(exc).__name__})",
            )
        if (
            entry.account_id != account_id
            or entry.username != subject
            or entry.account_key != account_key
        ):
            self.fail(
                "directory_mismatch",
                subject,
                f"the server served an account or identity key for {subject} that its log "
                "does not hold",
            )
        if commitment != entry.devices:
            self.fail(
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
            self.fail(
                "directory_mismatch",
                subject,
                f"the server said {subject} has no account without proving it",
            )
        floor = self.freshness_floor() if floor is None else floor
        head = await self.observe(head_raw, source=f"the lookup of {subject}")
        self._check_fresh(head, subject, floor)
        if "entry" in proof_doc:  # a removed account: its deletion is the name's newest entry
            self._check_deletion(proof_doc, head, key, map_proof, subject)
            return
        try:
            verify_map(key, None, map_proof, head.map_root)
        except ProtocolError as exc:
            self.fail(
                "directory_mismatch",
                subject,
                f"the server's proof that {subject} has no account does not hold "
                f"({type(exc).__name__})",
            )
        if self._store.repos().log.is_pinned(subject):  # a removed name maps to its deletion
            self.fail(
                "stale_lookup",
                subject,
                f"the server's map says {subject} has no account, but this client has seen "
                "its account in the log",
                (head_raw,),
            )

    def _check_deletion(
        self,
        proof_doc: Mapping[str, Any],
        head: SignedTreeHead,
        key: bytes,
        map_proof: MapProof,
        subject: str,
    ) -> None:
        """A removed account's name: its deletion entry, signed by the log key, is in the
        log and is the name's newest entry at ``head``. Pinned, so that the server cannot
        later show the account's earlier state as current again."""
        try:
            index = proof_doc["index"]
            entry_raw = unb64(proof_doc["entry"])
            proof = [unb64(h) for h in proof_doc["proof"]]
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise TypeError("index")
            verify_inclusion(leaf_hash(entry_raw), index, head.tree_size, proof, head.root)
            value = account_map_value(index, leaf_hash(entry_raw))
            verify_map(key, value, map_proof, head.map_root)
            deletion = DeletionEntry.decode(entry_raw)
            deletion.verify(self._key)
            if deletion.username != subject:
                raise TypeError("another name's deletion")
        except (KeyError, TypeError, ServerError, ProtocolError) as exc:
            self.fail(
                "directory_mismatch",
                subject,
                f"the server's proof that {subject} was removed does not hold "
                f"({type(exc).__name__})",
            )
        if self._store.repos().log.pinned_after(subject, deletion.account_id, index):
            self.fail(
                "stale_lookup",
                subject,
                f"the server shows {subject} as removed, but this client has seen a newer "
                "account of that name in the log",
                (head.encode(),),
            )
        self._pin(deletion, index, (head.encode(),))

    def verify_deletion(self, deletion: DeletionEntry) -> None:
        """Raise :class:`~sealpost.BadSignature` unless the pinned log key signed it."""
        deletion.verify(self._key)

    def _check_fresh(self, head: SignedTreeHead, subject: str, floor: int) -> None:
        """A lookup is proven at the server's newest head: one older than the newest held
        when it was asked for is an old answer replayed."""
        if head.tree_size < floor:
            newest = self._head
            self.fail(
                "stale_lookup",
                subject,
                f"the lookup of {subject} is proven at a head of size {head.tree_size}, "
                f"older than the newest one seen before asking ({floor})",
                (head.encode(),) + (() if newest is None else (newest.encode(),)),
            )

    def _pin(self, entry: LogEntry | DeletionEntry, index: int, evidence: Sequence[bytes]) -> None:
        pin = self._store.repos().log.pin(entry.account_id)
        if pin is not None and (entry.sequence < pin.sequence or index < pin.log_index):
            self.fail(
                "stale_lookup",
                entry.username,
                f"the server showed entry {entry.sequence} of {entry.username} as its newest, "
                f"after entry {pin.sequence} (a rolled-back account state)",
                evidence,
            )
        with self._store.unit() as repos:
            repos.log.set_pin(entry.account_id, entry.username, LogPin(entry.sequence, index))
