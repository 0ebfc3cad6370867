"""Message queues in PostgreSQL (for :mod:`.postgres`), each function run in the caller's
transaction.

Every write to a device's queue first locks that device's ``device_queues`` row, devices
always in sorted order (:func:`lock_queues`), so two transactions touching the same
devices never deadlock. A send allocates each device's next sequence numbers on that row:
concurrent sends to one device are serialized there and commit their sequence numbers in
increasing order, so a reader asking for "after seq N" never skips one that commits later.
The same row holds the queue's depth and bytes (no ``COUNT(*)`` or ``SUM`` per send) and
the device's connection epoch (the fencing token of :func:`claim_device`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TypeAlias

import asyncpg

from sealpost.server.storage.base import (
    Envelope,
    Fence,
    MismatchedDevices,
    QueuedMessage,
    QueueFull,
    QueuePosition,
    SharedEnvelope,
    StaleEpoch,
    UnknownAccount,
)

__all__ = [
    "Address",
    "ack_all",
    "check_devices",
    "claim_device",
    "device_epoch",
    "device_lists",
    "enqueue",
    "enqueue_shared",
    "fetch",
    "lock_queues",
    "purge_messages",
    "queue_positions",
]

Conn: TypeAlias = asyncpg.Connection
Address = tuple[bytes, int]


async def lock_queues(
    conn: Conn, addresses: Sequence[Address]
) -> dict[Address, tuple[int, int, int, int]]:
    """Lock the devices' queue rows in sorted order; (last seq, depth, epoch, bytes) of
    each."""
    ordered = sorted(set(addresses))
    rows = await conn.fetch(
        "SELECT q.account_id, q.device_id, q.last_seq, q.depth, q.epoch, q.bytes"
        " FROM device_queues q"
        " JOIN unnest($1::bytea[], $2::bigint[]) AS v(a, d)"
        " ON q.account_id = v.a AND q.device_id = v.d"
        " ORDER BY q.account_id, q.device_id FOR UPDATE OF q",
        [a for a, _ in ordered],
        [d for _, d in ordered],
    )
    return {(bytes(r[0]), r[1]): (r[2], r[3], r[4], r[5]) for r in rows}


async def _lower_depths(conn: Conn, gone: Sequence[asyncpg.Record]) -> None:
    """Count deleted queue rows (account_id, device_id, size) out of their devices."""
    counts: dict[Address, list[int]] = {}
    for row in gone:
        entry = counts.setdefault((bytes(row[0]), row[1]), [0, 0])
        entry[0] += 1
        entry[1] += row[2]
    if not counts:
        return
    await conn.execute(
        "UPDATE device_queues q SET depth = q.depth - v.n, bytes = q.bytes - v.b"
        " FROM unnest($1::bytea[], $2::bigint[], $3::int[], $4::bigint[]) AS v(a, d, n, b)"
        " WHERE q.account_id = v.a AND q.device_id = v.d",
        [a for a, _ in counts],
        [d for _, d in counts],
        [n for n, _ in counts.values()],
        [b for _, b in counts.values()],
    )


async def device_lists(conn: Conn, accounts: Iterable[bytes]) -> dict[bytes, set[int]]:
    """The device ids of each of these accounts that exists."""
    rows = await conn.fetch(
        "SELECT account_id, device_id FROM devices WHERE account_id = ANY($1::bytea[])",
        list(accounts),
    )
    lists: dict[bytes, set[int]] = {}
    for row in rows:
        lists.setdefault(bytes(row[0]), set()).add(row[1])
    return lists


def check_devices(
    envelopes: Sequence[Envelope] | Sequence[SharedEnvelope],
    exempt: Mapping[bytes, int],
    lists: Mapping[bytes, AbstractSet[int]],
) -> None:
    """Raise unless every destination account is named with exactly its devices (``lists``,
    from :func:`device_lists`)."""
    named: dict[bytes, set[int]] = {}
    for env in envelopes:
        named.setdefault(env.account_id, set()).add(env.device_id)
    mismatched: dict[bytes, tuple[list[int], list[int]]] = {}
    for account_id, device_ids in named.items():
        have = lists.get(account_id)
        if have is None:
            raise UnknownAccount(account_id)
        if account_id in exempt:
            have = have - {exempt[account_id]}
        missing, extra = have - device_ids, device_ids - have
        if missing or extra:
            mismatched[account_id] = (sorted(missing), sorted(extra))
    if mismatched:
        raise MismatchedDevices(mismatched)


async def _check_devices(
    conn: Conn,
    envelopes: Sequence[Envelope] | Sequence[SharedEnvelope],
    exempt: Mapping[bytes, int],
) -> None:
    check_devices(envelopes, exempt, await device_lists(conn, {e.account_id for e in envelopes}))


async def _insert(
    conn: Conn,
    rows: Sequence[tuple[bytes, int, bytes, bytes, int]],
    *,
    body_ref: int | None,
    received_at: int,
    expires_at: int,
    max_depth: int,
    max_bytes: int,
) -> None:
    """Queue (account, device, message id, body or prefix, size) rows in one statement
    (``sealpost_enqueue``: the devices' rows locked, the quotas checked, each device's next
    sequence numbers taken, all inserted but those queued already)."""
    outcome = await conn.fetchval(
        "SELECT sealpost_enqueue($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[],"
        " $5::int[], $6::bigint, $7::bigint, $8::bigint, $9::int, $10::bigint)",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        body_ref,
        received_at,
        expires_at,
        max_depth,
        max_bytes,
    )
    _raise_refusal(outcome, [(r[0], r[1]) for r in rows])


def _raise_refusal(outcome: int, addresses: Sequence[Address]) -> None:
    """Raise for a refusal of ``sealpost_enqueue`` or ``sealpost_batch`` (0: none)."""
    if outcome == 1:  # a device was removed meanwhile
        gone = set(addresses)
        raise MismatchedDevices({a: ([], sorted(d for x, d in gone if x == a)) for a, _ in gone})
    if outcome == 2:
        raise QueueFull("destination queue is full")


async def enqueue(
    conn: Conn,
    envelopes: Sequence[Envelope],
    *,
    exempt: Mapping[bytes, int],
    received_at: int,
    expires_at: int,
    max_depth: int,
    max_bytes: int,
    fence: Fence | None = None,
) -> int:
    """Queue one send in one statement: ``sealpost_batch`` (:mod:`.pg_schema`) with this
    send alone, which gives an envelope whose message is queued already sequence number 0,
    and those of a send whose ``fence`` is stale -1; how many were stored anew."""
    await _check_devices(conn, envelopes, exempt)
    n = len(envelopes)
    record = await conn.fetchrow(
        "SELECT status, seqs FROM sealpost_batch($1::bytea[], $2::bigint[], $3::bytea[],"
        " $4::bytea[], $5::int[], $6::bigint[], $7::bigint[], $8::bytea[], $9::bigint[],"
        " $10::bigint[], $11::int, $12::bigint,"
        " '{}'::int[], '{}'::bytea[], '{}'::bigint[], '{}'::bytea[], '{}'::bigint[])",
        [e.account_id for e in envelopes],
        [e.device_id for e in envelopes],
        [e.message_id for e in envelopes],
        [e.body for e in envelopes],
        [len(e.body) for e in envelopes],
        [received_at] * n,
        [expires_at] * n,
        [None if fence is None else fence.account_id] * n,
        [None if fence is None else fence.device_id] * n,
        [None if fence is None else fence.epoch] * n,
        max_depth,
        max_bytes,
    )
    _raise_refusal(record["status"], [(e.account_id, e.device_id) for e in envelopes])
    seqs = record["seqs"]
    if seqs and seqs[0] < 0:
        raise StaleEpoch("a newer connection of this device took over")
    return sum(1 for seq in seqs if seq)


async def enqueue_shared(
    conn: Conn,
    body: bytes,
    envelopes: Sequence[SharedEnvelope],
    *,
    received_at: int,
    expires_at: int,
    max_depth: int,
    max_bytes: int,
) -> int:
    """One body row, referenced by every destination's queued message (its prefix); how
    many were stored anew (run in a transaction: ``sealpost_enqueue`` leaves the body's
    ``refs`` at that number, or deletes the row for none)."""
    await _check_devices(conn, envelopes, {})
    body_ref = await conn.fetchval(
        "INSERT INTO shared_bodies (body, refs) VALUES ($1, $2) RETURNING id", body, len(envelopes)
    )
    await _insert(
        conn,
        [
            (e.account_id, e.device_id, e.message_id, e.prefix, len(e.prefix) + len(body))
            for e in envelopes
        ],
        body_ref=body_ref,
        received_at=received_at,
        expires_at=expires_at,
        max_depth=max_depth,
        max_bytes=max_bytes,
    )
    refs = await conn.fetchval("SELECT refs FROM shared_bodies WHERE id = $1", body_ref)
    return 0 if refs is None else int(refs)


async def fetch(
    conn: Conn, account_id: bytes, device_id: int, after_seq: int, limit: int
) -> list[QueuedMessage]:
    rows = await conn.fetch(
        "SELECT q.message_id, q.seq, q.body, s.body, q.received_at FROM queue q"
        " LEFT JOIN shared_bodies s ON s.id = q.body_ref"
        " WHERE q.account_id = $1 AND q.device_id = $2 AND q.seq > $3 ORDER BY q.seq LIMIT $4",
        account_id,
        device_id,
        after_seq,
        limit,
    )
    return [
        QueuedMessage(bytes(r[0]), r[1], bytes(r[2]) + (bytes(r[3]) if r[3] else b""), r[4])
        for r in rows
    ]


async def ack_all(
    conn: Conn,
    account_id: bytes,
    device_id: int,
    message_ids: Sequence[bytes],
    epoch: int | None,
) -> int:
    gone = await conn.fetchval(
        "SELECT sealpost_ack($1, $2, $3::bytea[], $4)",
        account_id,
        device_id,
        list(message_ids),
        epoch,
    )
    if gone < 0:
        raise StaleEpoch("a newer connection of this device took over")
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


async def queue_positions(conn: Conn, addresses: Sequence[Address]) -> dict[Address, QueuePosition]:
    """Each device's last sequence number handed out and its epoch, in one statement, no
    lock: a send's ``last_seq`` and its queue rows commit together, so a ``last_seq`` read
    is never ahead of a message a later read cannot see. One primary key lookup a device,
    in key order: the ``LATERAL`` subquery (kept apart by its ``OFFSET 0``) is what makes
    the plan that, where a join with the ``unnest`` is planned as a hash join that reads
    all of ``device_queues``, every registered device for each few thousand connected
    (100,000 rows, 2,000 devices asked: 12 ms against 78)."""
    ordered = sorted(addresses)
    rows = await conn.fetch(
        "SELECT v.a, v.d, q.last_seq, q.epoch FROM unnest($1::bytea[], $2::bigint[]) AS v(a, d)"
        " CROSS JOIN LATERAL (SELECT last_seq, epoch FROM device_queues"
        " WHERE account_id = v.a AND device_id = v.d OFFSET 0) q",
        [a for a, _ in ordered],
        [d for _, d in ordered],
    )
    return {(bytes(r[0]), r[1]): QueuePosition(r[2], r[3]) for r in rows}


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
        " RETURNING q.account_id, q.device_id, q.size",
        [a for a, _ in addresses],
        [d for _, d in addresses],
        now,
    )
    await _lower_depths(conn, gone)
    return len(gone)
