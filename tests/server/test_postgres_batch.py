"""PostgreSQL group commit (storage/pg_batch.py): concurrent sends and acks share one
statement; inside a batch a refused send, a stale ack or a send past a quota fails alone
and the rest commit; a connection's sends keep their order across batches and beside
operations with a transaction of their own; alone on its database the process's queue
tails stay exactly what the database holds, even when a batch's answer is lost after it
committed."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from test_storage_backends import _account, _env

from sealpost.server.storage import (
    DeviceRecord,
    Envelope,
    MismatchedDevices,
    PreKeyUpload,
    QueuedMessage,
    QueueFull,
    SharedEnvelope,
    UnknownAccount,
)
from sealpost.server.storage.base import StaleEpoch, StorageUnavailable
from sealpost.server.storage.postgres import PostgresStorage
from services import fresh_database


@pytest.fixture
def dsn() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _run(dsn: str, body: Callable[[PostgresStorage], Awaitable[None]], *, solo: bool) -> None:
    async def main() -> None:
        storage = PostgresStorage(dsn, solo=solo)
        await storage.open()
        try:
            await body(storage)
        finally:
            await storage.close()

    asyncio.run(main())


def _send(storage: PostgresStorage, envelopes: list[Envelope], depth: int = 100) -> Any:
    return storage.enqueue(envelopes, exempt={}, received_at=5, expires_at=1000, max_depth=depth)


async def _truth(storage: PostgresStorage, account_id: bytes, device_id: int) -> list[bytes]:
    """The device's queue as the database holds it (message ids in order)."""
    pool = storage._pool
    assert pool is not None
    rows = await pool.fetch(
        "SELECT message_id FROM queue WHERE account_id = $1 AND device_id = $2 ORDER BY seq",
        account_id,
        device_id,
    )
    return [bytes(r[0]) for r in rows]


@pytest.mark.parametrize("solo", [False, True])
def test_concurrent_sends_and_acks_share_one_statement(dsn: str, solo: bool) -> None:
    async def body(storage: PostgresStorage) -> None:
        a, b = await _account(storage), await _account(storage)
        first = [_env(a) for _ in range(3)]
        for env in first:
            await _send(storage, [env])
        before = storage.writes.batches
        later = [[_env(a), _env(b)] for _ in range(40)]
        acked = await asyncio.gather(
            *(_send(storage, s) for s in later),
            storage.ack_all(a, 1, [e.message_id for e in first[:2]]),
            storage.ack_all(a, 1, [first[2].message_id, os.urandom(16)]),
        )
        assert acked[-2:] == [2, 1]
        assert storage.writes.batches - before <= 2  # not one per operation
        assert await _truth(storage, a, 1) == [s[0].message_id for s in later]
        assert await _truth(storage, b, 1) == [s[1].message_id for s in later]
        queued = await storage.fetch(a, 1, after_seq=0, limit=100)
        assert [m.message_id for m in queued] == [s[0].message_id for s in later]
        assert [m.seq for m in queued] == list(range(4, 44))  # dense, in the order sent

    _run(dsn, body, solo=solo)


def test_a_refused_send_or_a_stale_ack_fails_alone_in_its_batch(dsn: str) -> None:
    async def body(storage: PostgresStorage) -> None:
        a, b = await _account(storage, devices=2), await _account(storage)
        old = [_env(b) for _ in range(2)]
        await _send(storage, old[:1])
        await _send(storage, old[1:])
        stale = await storage.claim_device(b, 1)
        await storage.claim_device(b, 1)
        good = [_env(b) for _ in range(3)]
        before = storage.writes.batches
        results = await asyncio.gather(
            _send(storage, [good[0]]),
            _send(storage, [_env(a, 1)]),  # a has two devices: mismatched
            _send(storage, [_env(os.urandom(16))]),  # no such account
            storage.ack_all(b, 1, [old[0].message_id], epoch=stale),
            _send(storage, [good[1]]),
            storage.ack_all(b, 1, [old[1].message_id]),
            _send(storage, [good[2]]),
            return_exceptions=True,
        )
        assert storage.writes.batches - before == 1 and storage.writes.fallbacks == 0
        assert results[0] == 1 and results[4] == 1 and results[6] == 1  # stored anew
        assert isinstance(results[1], MismatchedDevices)
        assert results[1].accounts == {a: ([2], [])}
        assert isinstance(results[2], UnknownAccount)
        assert isinstance(results[3], StaleEpoch)
        assert results[5] == 1
        assert await _truth(storage, b, 1) == [old[0].message_id] + [e.message_id for e in good]
        assert await _truth(storage, a, 1) == []

    _run(dsn, body, solo=False)


def test_a_send_past_the_quota_fails_alone_and_the_batch_runs_one_by_one(dsn: str) -> None:
    async def body(storage: PostgresStorage) -> None:
        a, b = await _account(storage), await _account(storage)
        await _send(storage, [_env(a)], depth=3)
        sends = [[_env(b)], [_env(a)], [_env(a)], [_env(a)], [_env(b)]]
        results = await asyncio.gather(
            *(_send(storage, s, depth=3) for s in sends), return_exceptions=True
        )
        assert storage.writes.fallbacks == 1
        assert results[:3] == [1, 1, 1] and results[4] == 1  # each stored anew, alone
        assert isinstance(results[3], QueueFull)  # the one that would pass 3
        assert await _truth(storage, a, 1) == [
            *(await _truth(storage, a, 1))[:1],
            sends[1][0].message_id,
            sends[2][0].message_id,
        ]
        assert await _truth(storage, b, 1) == [sends[0][0].message_id, sends[4][0].message_id]

    _run(dsn, body, solo=False)


@pytest.mark.parametrize("solo", [False, True])
def test_pipelined_sends_keep_their_order_beside_a_multi_recipient_send(
    dsn: str, solo: bool
) -> None:
    async def body(storage: PostgresStorage) -> None:
        a = await _account(storage)
        shared = SharedEnvelope(os.urandom(16), a, 1)
        envelopes = [_env(a) for _ in range(30)]
        tasks = [asyncio.create_task(_send(storage, [e])) for e in envelopes[:10]]
        tasks.append(
            asyncio.create_task(
                storage.enqueue_shared(
                    b"shared body", [shared], received_at=5, expires_at=1000, max_depth=100
                )
            )
        )
        await asyncio.sleep(0)  # the first batch is under way: the rest make the next
        tasks += [asyncio.create_task(_send(storage, [e])) for e in envelopes[10:]]
        await asyncio.gather(*tasks)
        expected = [e.message_id for e in envelopes[:10]]
        expected += [shared.message_id] + [e.message_id for e in envelopes[10:]]
        assert await _truth(storage, a, 1) == expected
        queued = await storage.fetch(a, 1, after_seq=0, limit=100)
        assert [m.message_id for m in queued] == expected
        assert queued[10].body == b"shared body"

    _run(dsn, body, solo=solo)


@pytest.mark.parametrize("seed", [1, 2])
def test_alone_on_the_database_the_tails_stay_what_the_database_holds(dsn: str, seed: int) -> None:
    """Sends (some refused or past the quota), acks (some stale), reads at any position,
    device removals and purges, in concurrent batches: every fetch answers exactly what
    the database holds."""
    rng = random.Random(seed)

    async def body(storage: PostgresStorage) -> None:
        accounts = [await _account(storage, devices=rng.randint(2, 3)) for _ in range(3)]
        devices = {a: len(await storage.devices(a)) for a in accounts}
        epochs = {(a, d): await storage.claim_device(a, d) for a in accounts for d in (1, 2)}
        for now in range(1, 61):
            addresses = [(a, d) for a in accounts for d in range(1, devices[a] + 1)]
            batch: list[Awaitable[Any]] = []
            for _ in range(rng.randint(1, 8)):
                kind = rng.random()
                account_id = rng.choice(accounts)
                address = rng.choice(addresses)
                if kind < 0.5:
                    named = list(range(1, devices[account_id] + 1))
                    if rng.random() < 0.1:
                        named = named[:1]  # refused
                    batch.append(
                        storage.enqueue(
                            [_env(account_id, d) for d in named],
                            exempt={},
                            received_at=now,
                            expires_at=now + rng.randint(1, 20),
                            max_depth=6,
                        )
                    )
                elif kind < 0.75:
                    ids = [m for m in await _truth(storage, *address) if rng.random() < 0.6]
                    epoch = epochs.get(address, 0) - (1 if rng.random() < 0.2 else 0)
                    batch.append(storage.ack_all(*address, ids, epoch=epoch or None))
                elif kind < 0.78:
                    batch.append(storage.purge(now))
                elif kind < 0.8 and devices[account_id] > 2:
                    batch.append(storage.remove_device(account_id, devices[account_id], b"r"))
                    devices[account_id] -= 1
                else:
                    batch.append(storage.fetch(*address, after_seq=0, limit=100))
            await asyncio.gather(*batch, return_exceptions=True)
            for address in [(a, d) for a in accounts for d in range(1, devices[a] + 1)]:
                truth = await _truth(storage, *address)
                queued = await storage.fetch(*address, after_seq=0, limit=100)
                assert [m.message_id for m in queued] == truth
                if len(queued) > 1:
                    rest = await storage.fetch(*address, after_seq=queued[0].seq, limit=100)
                    assert rest == queued[1:]
                    assert all(isinstance(m, QueuedMessage) for m in rest)

    _run(dsn, body, solo=True)


def test_alone_on_the_database_device_lists_kept_in_memory_follow_each_change(
    dsn: str,
) -> None:
    """A process alone on its database checks sends against device lists it keeps: a
    device added or removed is seen by the very next send."""

    async def body(storage: PostgresStorage) -> None:
        a = await _account(storage)
        await _send(storage, [_env(a, 1)])  # a's list is now kept
        await storage.add_device(DeviceRecord(a, 2, b"cert-2", 0), PreKeyUpload(), max_devices=5)
        with pytest.raises(MismatchedDevices) as missing:
            await _send(storage, [_env(a, 1)])
        assert missing.value.accounts == {a: ([2], [])}
        await _send(storage, [_env(a, 1), _env(a, 2)])
        await storage.remove_device(a, 2, b"revocation")
        with pytest.raises(MismatchedDevices) as extra:
            await _send(storage, [_env(a, 1), _env(a, 2)])
        assert extra.value.accounts == {a: ([], [2])}
        await _send(storage, [_env(a, 1)])
        assert len(await _truth(storage, a, 1)) == 3

    _run(dsn, body, solo=True)


def _known(storage: PostgresStorage, account_id: bytes) -> list[bytes] | None:
    """What the process answers from memory for the device's whole queue (``None``: it
    would read the database)."""
    known = storage.fetch_known(account_id, 1, after_seq=0, limit=100)
    return None if known is None else [m.message_id for m in known]


def test_a_batch_committed_but_unanswered_leaves_no_tail_that_lacks_it(dsn: str) -> None:
    """Alone on its database, a batch that committed but whose answer was lost (the
    connection dropped after COMMIT, an asyncpg timeout, a cancelled wait for a
    synchronous replica) fails its callers, who retry; the tail kept in memory must not
    go on claiming to be the whole queue without the committed message, or a connected
    device is pushed the next message and never that one."""

    async def body(storage: PostgresStorage) -> None:
        a = await _account(storage)
        await storage.fetch(a, 1, after_seq=0, limit=100)  # the tail is now known: empty
        assert _known(storage, a) == []
        real = storage.writes._run

        async def committed_then_lost(fn: Any, **options: Any) -> Any:
            await real(fn, **options)  # committed in the database
            raise StorageUnavailable("the answer was lost")

        first, second = _env(a), _env(a)
        storage.writes._run = committed_then_lost
        with pytest.raises(StorageUnavailable):
            await _send(storage, [first])
        storage.writes._run = real
        assert await _truth(storage, a, 1) == [first.message_id]
        assert _known(storage, a) is None  # forgotten: the next fetch reads the database
        await _send(storage, [second])
        queued = await storage.fetch(a, 1, after_seq=0, limit=100)
        assert [m.message_id for m in queued] == [first.message_id, second.message_id]
        assert _known(storage, a) in (None, [first.message_id, second.message_id])

    _run(dsn, body, solo=True)


def test_a_failure_while_the_tails_learn_of_a_commit_forgets_them(dsn: str) -> None:
    """If keeping the tails up to date after a commit fails half-way (a bug), they are
    dropped rather than left knowing part of the batch."""

    async def body(storage: PostgresStorage) -> None:
        a, b = await _account(storage), await _account(storage)
        for account_id in (a, b):
            await storage.fetch(account_id, 1, after_seq=0, limit=100)
        tails = storage._tails
        assert tails is not None
        real = tails.added

        def half(items: Any) -> None:
            real(list(items)[:1])  # the first device learns of its message, then a bug
            raise RuntimeError("a bug")

        tails.added = half  # type: ignore[method-assign]
        await asyncio.gather(_send(storage, [_env(a)]), _send(storage, [_env(b)]))
        tails.added = real  # type: ignore[method-assign]
        assert storage.writes.batches >= 1
        assert _known(storage, a) is None and _known(storage, b) is None
        for account_id in (a, b):
            queued = await storage.fetch(account_id, 1, after_seq=0, limit=100)
            assert [m.message_id for m in queued] == await _truth(storage, account_id, 1)
            assert len(queued) == 1

    _run(dsn, body, solo=True)
