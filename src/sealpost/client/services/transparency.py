"""Key transparency, the client's side (DESIGN.md section 4, promise P4): the log view.

The server keeps an append-only Merkle log of every account's keys and devices and signs
its state (:mod:`sealpost.transparency`). :class:`KeyTransparency` holds a client to that
log; it is the one object the other services are handed (built from the pinned log key by
:mod:`.monitoring`), and each of its parts lives in a module of its own:

- :mod:`.log_heads` (:class:`~.log_heads.LogHeads`): the pinned log key and the newest
  signed tree head; every other head (from a lookup, the monitor, or gossiped inside a
  contact's message) proven consistent with it; gossiped heads the server would not prove
  retried and, after :data:`GOSSIP_PROOF_DEADLINE` seconds, alarmed.
- :mod:`.lookup_proofs` (:class:`~.lookup_proofs.LookupProofs`): what a directory answer
  must prove (its entry in the log and newest in the account map at a fresh head, naming
  exactly what was served; an unknown name's absence or deletion), and each account's
  entry sequence pinned so that it never goes back.
- :mod:`.alarms` (:class:`~.alarms.Alarms`): an alarm raised, stored until dismissed, and
  sent as an :class:`~sealpost.client.records.AlarmRaised` event.

The self-monitoring of this account's own entries, and the monitoring pass that runs all
of this periodically, are :mod:`.monitoring`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from sealpost.client.context import ClientContext
from sealpost.client.services.alarms import Alarms
from sealpost.client.services.log_heads import GOSSIP_PROOF_DEADLINE, LogHeads
from sealpost.client.services.lookup_proofs import LookupProofs
from sealpost.crypto.sign import VerifyKey
from sealpost.transparency.log import DeletionEntry, SignedTreeHead

__all__ = ["GOSSIP_PROOF_DEADLINE", "KeyTransparency"]


class KeyTransparency:
    """One profile's view of its server's log: the pinned key, the newest head, the lookup
    checks and the alarms (:attr:`heads`, :attr:`lookups`, :attr:`alarms`), behind one
    surface."""

    def __init__(self, ctx: ClientContext, log_key: VerifyKey) -> None:
        self.alarms = Alarms(ctx)
        self.heads = LogHeads(ctx, log_key, self.alarms)
        self.lookups = LookupProofs(ctx, self.heads, self.alarms)

    # alarms (.alarms)
    def alarm(self, kind: str, subject: str, detail: str, evidence: Sequence[bytes] = ()) -> None:
        """Record an alarm (once per kind, subject and detail) and tell the client."""
        self.alarms.alarm(kind, subject, detail, evidence)

    def fail(
        self, kind: str, subject: str, detail: str, evidence: Sequence[bytes] = ()
    ) -> NoReturn:
        """Record the alarm, then raise :class:`~sealpost.client.errors.TransparencyFailure`."""
        self.alarms.fail(kind, subject, detail, evidence)

    # heads, consistency and gossip (.log_heads)
    @property
    def log_key(self) -> bytes:
        """The pinned log key (public)."""
        return self.heads.log_key

    @property
    def head(self) -> SignedTreeHead | None:
        """The newest head this client has checked."""
        return self.heads.head

    @property
    def gossip_deadline(self) -> float:
        """Seconds a gossiped head may wait for its consistency proof before it is an alarm."""
        return self.heads.gossip_deadline

    @gossip_deadline.setter
    def gossip_deadline(self, seconds: float) -> None:
        self.heads.gossip_deadline = seconds

    def gossip(self) -> bytes | None:
        """What outgoing messages carry: the newest head's bytes."""
        return self.heads.gossip()

    def freshness_floor(self) -> int:
        """The size of the newest head held (see :meth:`LogHeads.freshness_floor`)."""
        return self.heads.freshness_floor()

    def verify_deletion(self, deletion: DeletionEntry) -> None:
        """Raise :class:`~sealpost.BadSignature` unless the pinned log key signed it."""
        self.heads.verify_deletion(deletion)

    async def request(self, path: str) -> Any:
        """An unsigned GET to the log (what anyone may ask)."""
        return await self.heads.request(path)

    async def observe(self, raw: bytes, *, source: str) -> SignedTreeHead:
        """Check a tree head against the newest held (see :meth:`LogHeads.observe`)."""
        return await self.heads.observe(raw, source=source)

    async def check_gossip(self, raw: bytes, sender: str) -> None:
        """A contact's head, from inside a message (see :meth:`LogHeads.check_gossip`)."""
        await self.heads.check_gossip(raw, sender)

    async def retry_gossip(self) -> int:
        """Retry the unproven gossiped heads (see :meth:`LogHeads.retry_gossip`)."""
        return await self.heads.retry_gossip()

    # lookups (.lookup_proofs)
    async def check_lookup(
        self,
        doc: Mapping[str, Any],
        *,
        account_id: bytes,
        username: str,
        account_key: bytes,
        floor: int | None = None,
    ) -> None:
        """Check a directory answer (see :meth:`LookupProofs.check_lookup`)."""
        await self.lookups.check_lookup(
            doc, account_id=account_id, username=username, account_key=account_key, floor=floor
        )

    async def check_absence(
        self, doc: Mapping[str, Any], username: str, *, floor: int | None = None
    ) -> None:
        """Check a "no such account" answer (see :meth:`LookupProofs.check_absence`)."""
        await self.lookups.check_absence(doc, username, floor=floor)
