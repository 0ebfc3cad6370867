"""The message queues as :class:`~.postgres.PostgresStorage`'s methods: sends (one body a
device, or one shared body for many), fetches, acks and the connection epochs that fence a
replaced connection's sends and acks. Sends and acks go to the group commit
(:mod:`.pg_batch`); a shared send, and a queue read that sets a tail, take their turn among
its writes. The statements themselves, each run in the caller's transaction, are in
:mod:`.pg_queue`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from sealpost.server.storage.base import (
    AwaitedSends,
    DeviceAcks,
    Envelope,
    Fence,
    QueuedMessage,
    QueuePosition,
    SharedEnvelope,
    StaleEpoch,
    each_outcome,
)
from sealpost.server.storage.pg_core import Conn, PgCore
from sealpost.server.storage.pg_queue import (
    claim_device,
    device_epoch,
    enqueue_shared,
    fetch,
    queue_positions,
)

__all__ = ["PgMessages"]


class PgMessages(AwaitedSends, PgCore):
    """Sends, fetches, acks and connection epochs."""

    def enqueue_nowait(
        self,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
        fence: Fence | None = None,
    ) -> asyncio.Future[int]:
        return self.writes.enqueue(
            envelopes,
            exempt=exempt,
            received_at=received_at,
            expires_at=expires_at,
            max_depth=max_depth,
            max_bytes=max_bytes,
            fence=fence,
        )

    def enqueue_shared_nowait(
        self,
        body: bytes,
        envelopes: Sequence[SharedEnvelope],
        *,
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
    ) -> asyncio.Future[int]:
        # A transaction of its own (the body row first), in its turn among the others.
        return self.writes.own_nowait(
            lambda conn: enqueue_shared(
                conn,
                body,
                envelopes,
                received_at=received_at,
                expires_at=expires_at,
                max_depth=max_depth,
                max_bytes=max_bytes,
            ),
            forgets=True,  # rare: the tails are read again
        )

    def fetch_known(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage] | None:
        tails = self._tails
        if tails is None or not self.cluster.held:  # not held: another may write (.pg_cluster)
            return None
        return tails.fetch((account_id, device_id), after_seq, limit)

    async def fetch(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage]:
        tails = self._tails
        if tails is None:
            return await self._tx(
                lambda conn: fetch(conn, account_id, device_id, after_seq, limit),
                transaction=False,
            )
        address = (account_id, device_id)
        cluster = self.cluster
        known = tails.fetch(address, after_seq, limit) if cluster.held else None
        if known is not None:
            return known

        # Read in its turn among the writes (none commits meanwhile), so that the tail
        # it may set is exact; unless the process lost its lock meanwhile (another one
        # may have written since the read).
        async def op(conn: Conn) -> list[QueuedMessage]:
            losses = cluster.losses
            found = await fetch(conn, account_id, device_id, after_seq, limit)
            if len(found) < limit and cluster.held and cluster.losses == losses:
                tails.known(address, after_seq, found)  # the whole rest of the queue
            return found

        found: list[QueuedMessage] = await self.writes.own(op, transaction=False)
        return found

    async def ack(self, account_id: bytes, device_id: int, message_id: bytes) -> bool:
        return await self.ack_all(account_id, device_id, [message_id]) == 1

    async def ack_all(
        self,
        account_id: bytes,
        device_id: int,
        message_ids: Sequence[bytes],
        *,
        epoch: int | None = None,
    ) -> int:
        return await self.writes.ack_all((account_id, device_id), message_ids, epoch)

    def ack_each_nowait(
        self, acks: Sequence[DeviceAcks]
    ) -> asyncio.Future[list[StaleEpoch | None]]:
        # One operation each, all in the next batch's one statement (.pg_batch).
        return each_outcome(
            [self.writes.ack_all_nowait((a, d), ids, epoch) for a, d, ids, epoch in acks]
        )

    async def queue_positions(
        self, addresses: Sequence[tuple[bytes, int]]
    ) -> dict[tuple[bytes, int], QueuePosition]:
        return await self._tx(lambda conn: queue_positions(conn, addresses), transaction=False)

    async def claim_device(self, account_id: bytes, device_id: int) -> int:
        return await self._tx(lambda conn: claim_device(conn, account_id, device_id))

    async def device_epoch(self, account_id: bytes, device_id: int) -> int:
        return await self._tx(lambda conn: device_epoch(conn, account_id, device_id))
