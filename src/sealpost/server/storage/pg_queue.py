"""Message queues in PostgreSQL (for :mod:`.postgres`), each function run in the caller's
transaction.

Every write to a device's queue first locks that device's ``device_queues`` row, devices
always in sorted order (:func:`lock_queues`), so two transactions touching the same
devices never deadlock. A send allocates each device's next sequence numbers on that row:
concurrent sends to one device are serialized there and commit their sequence numbers in
increasing order, so a reader asking for "after seq N" never skips one that commits later.
The same row holds the queue's depth (no ``COUNT(*)`` per send) and the device's connection
epoch (the fencing token of :func:`claim_device`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import asyncpg

from sealpost.server.storage.base import (
    Envelope,
    MismatchedDevices,
    QueuedMessage,
    QueueFull,
    StaleEpoch,
    UnknownAccount,
)

__all__ = [
    "ack_all",
    "claim_device",
    "device_epoch",
    "enqueue",
    "fetch",
    "lock_queues",
    "purge_messages",
]

Conn: TypeAlias = asyncpg.Connection
Address = tuple[bytes, int]


async def lock_queues(
    conn: Conn, addresses: Sequence[Address]
) -> dict[Address, tuple[int, int, int]]:
    """Lock the devices' queue rows in sorted order; (last seq, depth, epoch) of each."""
    ordered = sorted(set(addresses))
    rows = await conn.fetch(
        "SELECT q.account_id, q.device_id, q.last_seq, q.depth, q.epoch FROM device_queues q"
        " JOIN unnest($1::bytea[], $2::bigint[]) AS v(a, d)"
        " ON q.account_id = v.a AND q.device_id = v.d"
        " ORDER BY q.account_id, q.device_id FOR UPDATE OF q",
        [a for a, _ in ordered],
        [d for _, d in ordered],
    )
    return {(bytes(r[0]), r[1]): (r[2], r[3], r[4]) for r in rows}


async def _lower_depths(conn: Conn, counts: Mapping[Address, int]) -> None:
    await conn.execute(
        "UPDATE device_queues q SET depth = q.depth - v.n"
        " FROM unnest($1::bytea[], $2::bigint[], $3::int[]) AS v(a, d, n)"
        " WHERE q.account_id = v.a AND q.device_id = v.d",
        [a for a, _ in counts],
        [d for _, d in counts],
        list(counts.values()),
    )


async def enqueue(
    conn: Conn,
    envelopes: Sequence[Envelope],
    *,
    exempt: Mapping[bytes, int],
    received_at: int,
    expires_at: int,
    max_depth: int,
) -> None:
    named: dict[bytes, set[int]] = {}
    counts: dict[Address, int] = {}
    for env in envelopes:
        named.setdefault(env.account_id, set()).add(env.device_id)
        address = (env.account_id, env.device_id)
        counts[address] = counts.get(address, 0) + 1
    rows = await conn.fetch(
        "SELECT account_id, device_id FROM devices WHERE account_id = ANY($1::bytea[])",
        list(named),
    )
    actual: dict[bytes, set[int]] = {}
    for row in rows:
        actual.setdefault(bytes(row[0]), set()).add(row[1])
    mismatched: dict[bytes, tuple[list[int], list[int]]] = {}
    for account_id, device_ids in named.items():
        have = actual.get(account_id)
        if have is None:
            raise UnknownAccount(account_id)
        if account_id in exempt:
            have = have - {exempt[account_id]}
        missing, extra = have - device_ids, device_ids - have
        if missing or extra:
            mismatched[account_id] = (sorted(missing), sorted(extra))
    if mismatched:
        raise MismatchedDevices(mismatched)
    state = await lock_queues(conn, list(counts))
    if len(state) != len(counts):  # a device was removed meanwhile
        raise MismatchedDevices({a: ([], [d]) for (a, d) in counts if (a, d) not in state})
    for address, n in counts.items():
        if state[address][1] + n > max_depth:
            raise QueueFull("destination queue is full")
    await conn.execute(
        "UPDATE device_queues q SET last_seq = q.last_seq + v.n, depth = q.depth + v.n"
        " FROM unnest($1::bytea[], $2::bigint[], $3::int[]) AS v(a, d, n)"
        " WHERE q.account_id = v.a AND q.device_id = v.d",
        [a for a, _ in counts],
        [d for _, d in counts],
        list(counts.values()),
    )
    next_seq = {address: last for address, (last, _, _) in state.items()}
    seqs = []
    for env in envelopes:
        address = (env.account_id, env.device_id)
        next_seq[address] += 1
        seqs.append(next_seq[address])
    await conn.execute(
        "INSERT INTO queue (account_id, device_id, seq, message_id, body, received_at,"
        " expires_at) SELECT v.*, $6::bigint, $7::bigint FROM"
        " unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bytea[]) AS v",
        [e.account_id for e in envelopes],
        [e.device_id for e in envelopes],
        seqs,
        [e.message_id for e in envelopes],
        [e.body for e in envelopes],
        received_at,
        expires_at,
    )


async def fetch(
    conn: Conn, account_id: bytes, device_id: int, after_seq: int, limit: int
) -> list[QueuedMessage]:
    rows = await conn.fetch(
        "SELECT message_id, seq, body, received_at FROM queue"
        " WHERE account_id = $1 AND device_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        account_id,
        device_id,
        after_seq,
        limit,
    )
    return [QueuedMessage(bytes(r[0]), r[1], bytes(r[2]), r[3]) for r in rows]


async def ack_all(
    conn: Conn,
    account_id: bytes,
    device_id: int,
    message_ids: Sequence[bytes],
    epoch: int | None,
) -> int:
    state = await lock_queues(conn, [(account_id, device_id)])
    current = state.get((account_id, device_id))
    if current is None:
        return 0
    if epoch is not None and current[2] != epoch:
        raise StaleEpoch("a newer connection of this device took over")
    gone = await conn.fetchval(
        "WITH gone AS (DELETE FROM queue WHERE account_id = $1 AND device_id = $2"
        " AND message_id = ANY($3::bytea[]) RETURNING 1) SELECT COUNT(*) FROM gone",
        account_id,
        device_id,
        list(message_ids),
    )
    if gone:
        await _lower_depths(conn, {(account_id, device_id): gone})
    return int(gone)


async def claim_device(conn: Conn, account_id: bytes, device_id: int) -> int:
    epoch = await conn.fetchval(
        "UPDATE device_queues SET epoch = epoch + 1 WHERE account_id = $1"
        " AND device_id = $2 RETURNING epoch",
        account_id,
        device_id,
    )
    return 0 if epoch is None else int(epoch)


async def device_epoch(conn: Conn, account_id: bytes, device_id: int) -> int:
    epoch = await conn.fetchval(
        "SELECT epoch FROM device_queues WHERE account_id = $1 AND device_id = $2",
        account_id,
        device_id,
    )
    return 0 if epoch is None else int(epoch)


async def purge_messages(conn: Conn, now: int, step: int) -> int:
    """Delete at most ``step`` expired messages; how many."""
    rows = await conn.fetch(
        "SELECT account_id, device_id FROM queue WHERE expires_at <= $1 LIMIT $2", now, step
    )
    addresses = sorted({(bytes(r[0]), r[1]) for r in rows})
    if not addresses:
        return 0
    await lock_queues(conn, addresses)
    gone = await conn.fetch(
        "DELETE FROM queue q USING unnest($1::bytea[], $2::bigint[]) AS v(a, d)"
        " WHERE q.account_id = v.a AND q.device_id = v.d AND q.expires_at <= $3"
        " RETURNING q.account_id, q.device_id",
        [a for a, _ in addresses],
        [d for _, d in addresses],
        now,
    )
    counts: dict[Address, int] = {}
    for row in gone:
        address = (bytes(row[0]), row[1])
        counts[address] = counts.get(address, 0) + 1
    await _lower_depths(conn, counts)
    return len(gone)
