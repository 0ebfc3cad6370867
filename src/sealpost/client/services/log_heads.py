"""Key transparency: the log's heads (DESIGN.md section 4, promise P4): pinning, consistency,
gossip.

The server signs the state of its append-only Merkle log (:mod:`sealpost.transparency`) as
tree heads. :class:`LogHeads` holds the pinned log key and the newest head this client has
checked, and holds every other head to it:

- **Consistency.** Any head (newer or older, from a lookup, from the monitor or gossiped by
  a contact) must be signed by the pinned key and proven consistent with the newest one
  held by a consistency proof from the server (:meth:`LogHeads.observe`); a newer one
  becomes the newest. A log that was rewritten, or that shows this client a different
  history than another client, fails that: a persistent alarm. A head kept in the first
  format (before heads committed to the account map) is the anchor the first new head must
  extend.
- **Gossip.** Every message sent carries the sender's newest head inside the encryption
  (:meth:`LogHeads.gossip`); a receiver checks it against its own
  (:meth:`LogHeads.check_gossip`). A head whose consistency proof cannot be fetched (the
  connection fails) is kept and tried again at each monitoring pass
  (:meth:`LogHeads.retry_gossip`); after :data:`GOSSIP_PROOF_DEADLINE` seconds without a
  proof it is an alarm.

What a lookup must prove at such a head is :mod:`.lookup_proofs`'s; raising alarms is
:mod:`.alarms`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sealpost._errors import ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.errors import ServerError, ServerUnavailable, TransparencyFailure
from sealpost.client.services.alarms import Alarms
from sealpost.client.transport import unb64
from sealpost.crypto.sign import VerifyKey
from sealpost.transparency.log import DeletionEntry, SignedTreeHead, legacy_head_anchor
from sealpost.transparency.merkle import EMPTY_ROOT, RootMismatch, verify_consistency

__all__ = ["GOSSIP_PROOF_DEADLINE", "LogHeads"]

log = logging.getLogger("sealpost.client.transparency")

#: Seconds a gossiped head may stay unproven (the server unreachable for its consistency
#: proof) before that is an alarm: long enough for a network outage to pass, short enough
#: that a server which hangs up on exactly these requests is named within the hour.
GOSSIP_PROOF_DEADLINE = 1800.0


class LogHeads:
    """The pinned log key and the newest checked head; every other head proven against it."""

    def __init__(self, ctx: ClientContext, log_key: VerifyKey, alarms: Alarms) -> None:
        self._ctx = ctx
        self._store = ctx.store
        self._key = log_key
        self._clock = ctx.clock
        self._alarms = alarms
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
        #: Seconds a gossiped head may wait for its consistency proof before it is an alarm.
        self.gossip_deadline = GOSSIP_PROOF_DEADLINE

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

    def freshness_floor(self) -> int:
        """The size of the newest head held: a lookup asked for now must be proven at a
        head at least this new (read it before sending the request, so that heads learnt
        meanwhile, from gossip or a concurrent lookup, do not count)."""
        return 0 if self._head is None else self._head.tree_size

    def verify_deletion(self, deletion: DeletionEntry) -> None:
        """Raise :class:`~sealpost.BadSignature` unless the pinned log key signed it."""
        deletion.verify(self._key)

    async def request(self, path: str) -> Any:
        """An unsigned GET to the log (what anyone may ask)."""
        return await self._ctx.transport.request("GET", path, signed=False)

    async def observe(self, raw: bytes, *, source: str) -> SignedTreeHead:
        """Check a tree head from ``source`` against the newest one held, and keep it if it
        is newer. Raises :class:`TransparencyFailure` (with an alarm) if it is not signed
        by the log key or not consistent with the held head."""
        try:
            head = SignedTreeHead.decode(raw)
            head.verify(self._key)
        except ProtocolError:
            self._alarms.fail("bad_tree_head", "log", f"a tree head from {source} does not verify")
        known = self._head
        if known is None and self._legacy is not None:
            await self._prove_from_legacy(head, source, raw)
        if known is None or raw in self._seen:
            if known is None:
                self._keep(head)
            return head
        if head.tree_size == known.tree_size:
            if head.root != known.root or head.map_root != known.map_root:
                self._alarms.fail(
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
            self._alarms.fail(
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
            self._alarms.fail("log_inconsistent", "log", f"the log shrank below {size}", evidence)
        if head.tree_size == size:
            if head.root != old_root:
                self._alarms.fail("log_inconsistent", "log", "two roots for one size", evidence)
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
                    self._alarms.alarm(
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
