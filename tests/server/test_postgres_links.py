"""Device-link channel rows on one PostgreSQL database shared by several processes (each a
PostgresStorage with a pool of its own, as a process has): they keep a channel's deadlines
on the database's clock, order a key fetch with the key deadline, take one body, clear it
once delivered and are purged past their deadline. (The channels built on them, across
processes: tests/server/test_link_channels.py.)"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from sealpost.server.storage.pg_links import LinkAnswer
from sealpost.server.storage.postgres import PostgresStorage
from services import fresh_database

KEM = os.urandom(1184)


@pytest.fixture
def dsn() -> Iterator[str]:
    with fresh_database() as url:
        yield url


class _Two:
    """Two processes' storages on one database."""

    def __init__(self, dsn: str) -> None:
        self.a = PostgresStorage(dsn, solo=False, pool_size=4)
        self.b = PostgresStorage(dsn, solo=False, pool_size=4)

    async def __aenter__(self) -> _Two:
        await self.a.open()
        await self.b.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.a.close()
        await self.b.close()


async def _rows(storage: PostgresStorage) -> list[tuple[bytes, bytes | None, bool]]:
    pool = storage._pool
    assert pool is not None
    rows = await pool.fetch("SELECT channel_id, body, delivered FROM link_channels")
    return [(bytes(r[0]), None if r[1] is None else bytes(r[1]), r[2]) for r in rows]


def test_rows_take_one_body_keep_deadlines_and_clear_the_body_once_delivered(dsn: str) -> None:
    async def main() -> None:
        async with _Two(dsn) as two:
            a, b = two.a, two.b
            channel = os.urandom(16)
            await a.link_open(channel, KEM, key_ttl=30, ttl=60)
            assert await b.link_key(channel) == KEM  # the other process sees it
            assert await b.link_key(os.urandom(16)) is None
            assert await b.link_answer(os.urandom(16), b"x") is LinkAnswer.UNKNOWN
            assert await b.link_answer(channel, b"sealed") is LinkAnswer.STORED
            assert await a.link_answer(channel, b"other") is LinkAnswer.ANSWERED
            row = await a.link_state(channel)
            assert row is not None and row.body == b"sealed" and row.fetched
            other = os.urandom(16)  # open, not answered
            await a.link_open(other, KEM, key_ttl=30, ttl=60)
            assert await a.link_answered([channel, other, os.urandom(16)]) == [channel]
            assert await a.link_answered([]) == []
            assert await b.link_delivery(channel) is False
            await a.link_drop(other)
            assert "sealed" not in repr(row)
            # an answered channel is not expired by its new device's process
            assert not await a.link_expire(channel, fetched_too=True)
            await a.link_delivered(channel)
            assert await _rows(a) == [(channel, None, True)]  # the body is gone at once
            assert await a.link_answered([channel]) == []  # nothing left to deliver
            assert await b.link_delivery(channel) is True
            assert await b.link_answer(channel, b"again") is LinkAnswer.ANSWERED
            await b.link_drop(channel)
            assert await a.link_state(channel) is None
            assert await b.link_delivery(channel) is None

    asyncio.run(main())


def test_a_fetch_and_the_key_deadline_are_ordered_by_the_row(dsn: str) -> None:
    async def main() -> None:
        async with _Two(dsn) as two:
            a, b = two.a, two.b
            fetched, unfetched = os.urandom(16), os.urandom(16)
            for channel in (fetched, unfetched):
                await a.link_open(channel, KEM, key_ttl=0.3, ttl=60)
            assert await b.link_key(fetched) == KEM
            # at the key deadline, the new device's process ends only the unfetched one
            assert not await a.link_expire(fetched, fetched_too=False)
            assert await a.link_expire(unfetched, fetched_too=False)
            assert await b.link_key(unfetched) is None
            late = os.urandom(16)
            await a.link_open(late, KEM, key_ttl=0.3, ttl=60)
            await asyncio.sleep(0.5)  # past its key deadline, on the database's clock
            assert await b.link_key(late) is None
            assert await b.link_answer(late, b"x") is LinkAnswer.UNKNOWN
            assert await b.link_key(fetched) == KEM  # fetched: alive until its deadline

    asyncio.run(main())


def test_the_purge_deletes_channels_past_their_deadline(dsn: str) -> None:
    async def main() -> None:
        async with _Two(dsn) as two:
            dead, alive = os.urandom(16), os.urandom(16)
            await two.a.link_open(dead, KEM, key_ttl=0.2, ttl=0.2)  # its process died
            await two.a.link_answer(dead, b"sealed, never delivered")
            await two.a.link_open(alive, KEM, key_ttl=30, ttl=60)
            await asyncio.sleep(0.4)
            await two.b.purge(int(time.time()))
            assert [row[0] for row in await _rows(two.b)] == [alive]

    asyncio.run(main())
