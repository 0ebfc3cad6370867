"""Key transparency: what a directory answer must prove against the log (DESIGN.md section 4,
promise P4).

Every directory answer (a contact's or this account's own devices) comes with the account's
newest log entry, its inclusion proof, its account-map proof and a signed tree head.
:class:`LookupProofs` checks it (:meth:`LookupProofs.check_lookup`): the head must be one
:class:`~.log_heads.LogHeads` accepts (signed by the pinned log key, consistent with the
newest held) and at least as new as the newest head held when the lookup was asked for (the
server proves the map at its newest head only, so an older one is a replayed answer); the
inclusion proof must hold; the map proof must show that this entry is the name's *newest*
at that head; and the entry must name exactly the account, identity key, certificates and
revocations served. Each account's entry sequence is pinned: a lookup that goes back to an
older entry is refused. An unknown name must come with the map's proof of absence, or, for
a removed account, with its deletion entry signed by the log key
(:meth:`LookupProofs.check_absence`). Anything else raises
:class:`~sealpost.client.errors.TransparencyFailure` (nothing is encrypted to those
devices) and an alarm (:mod:`.alarms`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sealpost._errors import ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.errors import ServerError
from sealpost.client.services.alarms import Alarms
from sealpost.client.services.log_heads import LogHeads
from sealpost.client.store.alarms import LogPin
from sealpost.client.transport import unb64
from sealpost.transparency.log import (
    DeletionEntry,
    LogEntry,
    SignedTreeHead,
    account_map_key,
    account_map_value,
    devices_commitment,
)
from sealpost.transparency.merkle import leaf_hash, verify_inclusion
from sealpost.transparency.smt import MapProof, verify_map

__all__ = ["LookupProofs"]


def _served_lists(doc: Mapping[str, Any]) -> tuple[list[bytes], list[bytes]]:
    certificates = [unb64(item["certificate"]) for item in doc["devices"]]
    revocations = [unb64(r) for r in doc.get("revocations", [])]
    return certificates, revocations


class LookupProofs:
    """Checks directory answers against the log and pins each account's newest entry."""

    def __init__(self, ctx: ClientContext, heads: LogHeads, alarms: Alarms) -> None:
        self._store = ctx.store
        self._heads = heads
        self._alarms = alarms

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
        :class:`~sealpost.client.errors.TransparencyFailure`. The account's entry sequence
        is pinned. ``floor``: :meth:`~.log_heads.LogHeads.freshness_floor` when the request
        was sent (default: now)."""
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
            self._alarms.fail(
                "directory_mismatch", subject, f"the lookup of {subject} has no log proof"
            )
        floor = self._heads.freshness_floor() if floor is None else floor
        head = await self._heads.observe(head_raw, source=f"the lookup of {subject}")
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
            self._alarms.fail(
                "directory_mismatch",
                subject,
                f"the log proof for {subject} does not hold ({type(exc).__name__})",
            )
        if (
            entry.account_id != account_id
            or entry.username != subject
            or entry.account_key != account_key
        ):
            self._alarms.fail(
                "directory_mismatch",
                subject,
                f"the server served an account or identity key for {subject} that its log "
                "does not hold",
            )
        if commitment != entry.devices:
            self._alarms.fail(
                "directory_mismatch",
                subject,
                f"the server served devices for {subject} that its log does not hold",
            )
        self._pin(entry, index, (head_raw,))

    async def check_absence(
        self, doc: Mapping[str, Any], username: str, *, floor: int | None = None
    ) -> None:
        """Check that a "no such account" answer for ``username`` comes with the account
        map's proof of absence at a fresh head; raises
        :class:`~sealpost.client.errors.TransparencyFailure`."""
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
            self._alarms.fail(
                "directory_mismatch",
                subject,
                f"the server said {subject} has no account without proving it",
            )
        floor = self._heads.freshness_floor() if floor is None else floor
        head = await self._heads.observe(head_raw, source=f"the lookup of {subject}")
        self._check_fresh(head, subject, floor)
        if "entry" in proof_doc:  # a removed account: its deletion is the name's newest entry
            self._check_deletion(proof_doc, head, key, map_proof, subject)
            return
        try:
            verify_map(key, None, map_proof, head.map_root)
        except ProtocolError as exc:
            self._alarms.fail(
                "directory_mismatch",
                subject,
                f"the server's proof that {subject} has no account does not hold "
                f"({type(exc).__name__})",
            )
        if self._store.repos().log.is_pinned(subject):  # a removed name maps to its deletion
            self._alarms.fail(
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
            self._heads.verify_deletion(deletion)
            if deletion.username != subject:
                raise TypeError("another name's deletion")
        except (KeyError, TypeError, ServerError, ProtocolError) as exc:
            self._alarms.fail(
                "directory_mismatch",
                subject,
                f"the server's proof that {subject} was removed does not hold "
                f"({type(exc).__name__})",
            )
        if self._store.repos().log.pinned_after(subject, deletion.account_id, index):
            self._alarms.fail(
                "stale_lookup",
                subject,
                f"the server shows {subject} as removed, but this client has seen a newer "
                "account of that name in the log",
                (head.encode(),),
            )
        self._pin(deletion, index, (head.encode(),))

    def _check_fresh(self, head: SignedTreeHead, subject: str, floor: int) -> None:
        """A lookup is proven at the server's newest head: one older than the newest held
        when it was asked for is an old answer replayed."""
        if head.tree_size < floor:
            newest = self._heads.head
            self._alarms.fail(
                "stale_lookup",
                subject,
                f"the lookup of {subject} is proven at a head of size {head.tree_size}, "
                f"older than the newest one seen before asking ({floor})",
                (head.encode(),) + (() if newest is None else (newest.encode(),)),
            )

    def _pin(self, entry: LogEntry | DeletionEntry, index: int, evidence: Sequence[bytes]) -> None:
        pin = self._store.repos().log.pin(entry.account_id)
        if pin is not None and (entry.sequence < pin.sequence or index < pin.log_index):
            self._alarms.fail(
                "stale_lookup",
                entry.username,
                f"the server showed entry {entry.sequence} of {entry.username} as its newest, "
                f"after entry {pin.sequence} (a rolled-back account state)",
                evidence,
            )
        with self._store.unit() as repos:
            repos.log.set_pin(entry.account_id, entry.username, LogPin(entry.sequence, index))
