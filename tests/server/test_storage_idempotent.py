"""Sends are idempotent on their message ids (derived by the server from the sender's send
id and the device: :mod:`sealpost.protocol.send_id`), on every backend: a resend of a
message still queued stores nothing and succeeds as the first did; the same send id for
another device is another message; a send that was refused stores nothing, so its resend
is tried anew; once acknowledged, a resend is stored again (the recipient drops it by the
message id inside the encryption). Each enqueue returns how many envelopes it stored anew
(what ``sealpost_messages_stored_total`` counts): a resend's is 0."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable

import pytest
from test_storage_backends import _account, _run

from sealpost.protocol.send_id import queued_message_id
from sealpost.server.storage.base import (
    Envelope,
    MismatchedDevices,
    QueueFull,
    SharedEnvelope,
    Storage,
)
from sealpost.server.storage.sqlite import SqliteStorage
from services import MakeStorage


def _env(send_id: bytes, account_id: bytes, device_id: int = 1, body: bytes = b"") -> Envelope:
    return Envelope(
        queued_message_id(send_id, account_id, device_id),
        account_id,
        device_id,
        body or os.urandom(32),
    )


def _send(storage: Storage, envelopes: list[Envelope], depth: int = 100) -> Awaitable[int]:
    return storage.enqueue(envelopes, exempt={}, received_at=5, expires_at=1000, max_depth=depth)


async def _queued(storage: Storage, account_id: bytes, device_id: int = 1) -> list[bytes]:
    return [
        m.message_id for m in await storage.fetch(account_id, device_id, after_seq=0, limit=100)
    ]


async def _rows(storage: Storage, account_id: bytes) -> tuple[int, int]:
    """(queued rows of the account, shared bodies) as the database has them, not a cache."""
    queue_sql = "SELECT COUNT(*) FROM queue WHERE account_id = "
    shared_sql = "SELECT COUNT(*) FROM shared_bodies"
    if isinstance(storage, SqliteStorage):
        conn = sqlite3.connect(storage._path)
        try:
            (rows,) = conn.execute(queue_sql + "?", (account_id,)).fetchone()
            (shared,) = conn.execute(shared_sql).fetchone()
        finally:
            conn.close()
        return rows, shared
    pool = storage._pool  # type: ignore[attr-defined]
    async with pool.acquire() as conn:
        rows = await conn.fetchval(queue_sql + "$1", account_id)
        shared = await conn.fetchval(shared_sql)
    return int(rows), int(shared)


def test_a_resend_of_a_queued_message_stores_nothing(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        a = await _account(storage)
        first = _env(os.urandom(16), a, body=b"once")
        assert await _send(storage, [first]) == 1
        assert await _send(storage, [first]) == 0  # the answer was lost: the same bytes again
        # and twice in one group commit (two sockets resending at once): the first stores it
        again = _env(os.urandom(16), a, body=b"twice")
        assert await asyncio.gather(_send(storage, [again]), _send(storage, [again])) == [1, 0]
        assert await _queued(storage, a) == [first.message_id, again.message_id]
        assert (await _rows(storage, a))[0] == 2
        # a resend is not refused for the room its first copy takes
        full = _env(os.urandom(16), a)
        assert await _send(storage, [full], depth=3) == 1
        assert await _send(storage, [full], depth=3) == 0
        with pytest.raises(QueueFull):
            await _send(storage, [_env(os.urandom(16), a)], depth=3)
        # the next new message takes the next place in the queue: no gap, no double count
        messages = await storage.fetch(a, 1, after_seq=0, limit=10)
        assert [m.body for m in messages][:2] == [b"once", b"twice"]
        seqs = [m.seq for m in messages]
        assert seqs == sorted(set(seqs)) and len(seqs) == 3

    _run(backend, body)


def test_one_send_id_for_two_devices_queues_two_messages(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=2)
        b = await _account(storage)
        send_id = os.urandom(16)
        envelopes = [_env(send_id, a, 1), _env(send_id, a, 2)]
        assert await _send(storage, envelopes) == 2
        assert await _send(storage, [_env(send_id, b)]) == 1
        assert await _queued(storage, a, 1) == [envelopes[0].message_id]
        assert await _queued(storage, a, 2) == [envelopes[1].message_id]
        assert len(await _queued(storage, b)) == 1
        assert len({envelopes[0].message_id, envelopes[1].message_id}) == 2
        # a resend naming both devices, one still queued, one acknowledged meanwhile:
        # the acknowledged one is stored again (it is not queued any more)
        assert await storage.ack(a, 2, envelopes[1].message_id)
        assert await _send(storage, envelopes) == 1
        assert await _queued(storage, a, 1) == [envelopes[0].message_id]
        assert await _queued(storage, a, 2) == [envelopes[1].message_id]

    _run(backend, body)


def test_a_refused_send_is_tried_anew_when_resent(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=2)
        send_id = os.urandom(16)
        with pytest.raises(MismatchedDevices):  # names one device of two: nothing stored
            await _send(storage, [_env(send_id, a, 1)])
        filler = _env(os.urandom(16), a, 2)
        await _send(storage, [_env(os.urandom(16), a, 1), filler])
        envelopes = [_env(send_id, a, 1), _env(send_id, a, 2)]
        with pytest.raises(QueueFull):  # both queues hold one: refused whole
            await _send(storage, envelopes, depth=1)
        assert len(await _queued(storage, a, 1)) == 1
        assert await storage.ack(a, 2, filler.message_id)
        assert await storage.ack_all(a, 1, await _queued(storage, a, 1)) == 1
        assert await _send(storage, envelopes, depth=1) == 2  # the same bytes: stored now
        assert await _queued(storage, a, 1) == [envelopes[0].message_id]
        assert await _queued(storage, a, 2) == [envelopes[1].message_id]

    _run(backend, body)


def test_a_resend_in_a_batch_that_falls_back_stores_nothing_twice(backend: MakeStorage) -> None:
    """A batch with one refused send runs each send on its own: the resend among them is
    still stored once, and each says what it stored anew (PostgreSQL: each send a
    sealpost_batch of its own; SQLite: savepoints)."""

    async def body(storage: Storage) -> None:
        a = await _account(storage)
        b = await _account(storage)
        queued = _env(os.urandom(16), a)
        await _send(storage, [queued], depth=3)
        await _send(storage, [_env(os.urandom(16), b)], depth=1)
        new = _env(os.urandom(16), a)
        results = await asyncio.gather(
            _send(storage, [queued], depth=3),
            _send(storage, [_env(os.urandom(16), b)], depth=1),  # b is full
            _send(storage, [queued], depth=3),
            _send(storage, [new], depth=3),
            return_exceptions=True,
        )
        assert results[0] == 0 and results[2] == 0 and results[3] == 1
        assert isinstance(results[1], QueueFull)
        assert await _queued(storage, a) == [queued.message_id, new.message_id]
        assert (await _rows(storage, a))[0] == 2

    _run(backend, body)


def test_a_resent_multi_send_keeps_one_body_and_one_message_per_device(
    backend: MakeStorage,
) -> None:
    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=3)
        send_id = os.urandom(16)
        shared = [SharedEnvelope(queued_message_id(send_id, a, d), a, d) for d in (1, 2, 3)]

        def multi() -> Awaitable[int]:
            return storage.enqueue_shared(
                b"group body", shared, received_at=5, expires_at=1000, max_depth=10
            )

        assert await multi() == 3
        assert await multi() == 0
        assert await _rows(storage, a) == (3, 1)
        assert await storage.ack(a, 3, shared[2].message_id)
        assert await multi() == 1  # device 3 acknowledged its copy: it gets another
        for env in shared:
            messages = await storage.fetch(a, env.device_id, after_seq=0, limit=10)
            assert [(m.message_id, m.body) for m in messages] == [(env.message_id, b"group body")]
        assert await _rows(storage, a) == (3, 2)
        # the bodies' counts are right: acking every message deletes both
        for env in shared:
            assert await storage.ack(a, env.device_id, env.message_id)
        assert await _rows(storage, a) == (0, 0)

    _run(backend, body)
