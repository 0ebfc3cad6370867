"""The device-link channels' guarantees (:mod:`sealpost.server.links.base`), the same for
each implementation: in one process's memory (:class:`LocalLinks`), and in a PostgreSQL
database shared by two processes (:class:`SharedLinks`, the new device's end on one, the
GET and PUT on the other) whose wake-ups arrive, or are all lost (each process a fanout of
its own: the poll alone links them). A PUT is answered only once its body was delivered;
a second PUT meanwhile is refused, on either process; an ended channel is unknown
everywhere; a channel expires at the key deadline unless its key was fetched, then at
its full lifetime; a new device gone answers the PUT with DeviceGone; and the shared
database holds nothing afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager

import pytest

from sealpost.server.fanout.local import LocalFanout
from sealpost.server.links import (
    AlreadyProvisioned,
    DeviceGone,
    LinkChannels,
    LocalLinks,
    UnknownChannel,
)
from sealpost.server.links.shared import SharedLinks
from sealpost.server.storage.postgres import PostgresStorage
from services import fresh_database

KEM = os.urandom(1184)

#: (the new device's process, the other device's process), given the two lifetimes
Pair = tuple[LinkChannels, LinkChannels]
MakePair = Callable[[float, float], AbstractAsyncContextManager[Pair]]


@pytest.fixture(params=["memory", "shared-woken", "shared-polled"])
def pair(request: pytest.FixtureRequest) -> Iterator[MakePair]:
    kind = request.param
    with contextlib.ExitStack() as stack:
        dsn = "" if kind == "memory" else stack.enter_context(fresh_database())
        yield _maker(kind, dsn)


def _maker(kind: str, dsn: str) -> MakePair:

    @contextlib.asynccontextmanager
    async def make(key_ttl: float, ttl: float) -> AsyncIterator[Pair]:
        if kind == "memory":
            links = LocalLinks(key_ttl=key_ttl, ttl=ttl)
            yield links, links
            return
        a = PostgresStorage(dsn, solo=False, pool_size=4)
        b = PostgresStorage(dsn, solo=False, pool_size=4)
        await a.open()
        await b.open()
        try:
            fanout = LocalFanout()
            woken = kind == "shared-woken"
            poll = 30.0 if woken else 0.2  # woken: the poll never comes in time
            yield (
                SharedLinks(a, fanout, key_ttl=key_ttl, ttl=ttl, poll=poll),
                SharedLinks(
                    b, fanout if woken else LocalFanout(), key_ttl=key_ttl, ttl=ttl, poll=poll
                ),
            )
            pool = a._pool
            assert pool is not None
            assert await pool.fetchval("SELECT count(*) FROM link_channels") == 0
        finally:
            await a.close()
            await b.close()

    return make


def test_a_put_is_answered_once_delivered_and_a_second_one_is_refused(pair: MakePair) -> None:
    async def main() -> None:
        async with pair(30, 60) as (here, there):
            channel_id = os.urandom(16)
            channel = await here.open(channel_id, KEM)
            receiving = asyncio.ensure_future(channel.receive())
            assert await there.key(channel_id) == KEM
            started = time.monotonic()
            putting = asyncio.ensure_future(there.provision(channel_id, b"sealed"))
            assert await receiving == b"sealed"
            assert time.monotonic() - started < 2  # woken, or found by a 0.2 s poll
            for links in (there, here):  # the first PUT waits for the delivery
                with pytest.raises(AlreadyProvisioned):
                    await links.provision(channel_id, b"second")
            await asyncio.sleep(0.3)
            assert not putting.done()
            await channel.delivered()
            await channel.close()
            await asyncio.wait_for(putting, 2)
            for links in (here, there):
                with pytest.raises(UnknownChannel):
                    await links.key(channel_id)
                with pytest.raises(UnknownChannel):
                    await links.provision(channel_id, b"late")
            with pytest.raises(UnknownChannel):
                await there.key(os.urandom(16))

    asyncio.run(main())


def test_a_channel_lives_until_its_key_deadline_unless_its_key_is_fetched(
    pair: MakePair,
) -> None:
    async def main() -> None:
        async with pair(0.5, 3) as (here, there):
            lonely = await here.open(os.urandom(16), KEM)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await lonely.receive()
            assert 0.4 < time.monotonic() - started < 1.5
            await lonely.close()
            with pytest.raises(UnknownChannel):
                await there.key(lonely.channel_id)

            fetched = await here.open(os.urandom(16), KEM)
            receiving = asyncio.ensure_future(fetched.receive())
            assert await there.key(fetched.channel_id) == KEM
            await asyncio.sleep(1.0)  # past the key deadline
            assert not receiving.done()
            putting = asyncio.ensure_future(there.provision(fetched.channel_id, b"p"))
            assert await receiving == b"p"
            await fetched.delivered()
            await fetched.close()
            await putting

            opened = time.monotonic()
            expiring = await here.open(os.urandom(16), KEM)
            assert await there.key(expiring.channel_id) == KEM
            with pytest.raises(TimeoutError):  # its full lifetime, with no body
                await expiring.receive()
            assert 2.9 < time.monotonic() - opened < 4
            await expiring.close()
            with pytest.raises(UnknownChannel):
                await there.provision(expiring.channel_id, b"late")

    asyncio.run(main())


def test_a_new_device_gone_before_the_delivery_fails_the_put(pair: MakePair) -> None:
    async def main() -> None:
        async with pair(30, 60) as (here, there):
            channel = await here.open(os.urandom(16), KEM)
            putting = asyncio.ensure_future(there.provision(channel.channel_id, b"p"))
            await asyncio.sleep(0.3)
            await channel.close()  # its socket went away
            with pytest.raises(DeviceGone):
                await asyncio.wait_for(putting, 2)
            with pytest.raises(UnknownChannel):
                await there.key(channel.channel_id)

    asyncio.run(main())


class _Counted:
    """A storage whose link reads are counted (the rows stay the real database's)."""

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> object:
        if name in ("link_state", "link_answered", "link_delivery"):
            self.reads.append(name)
        return getattr(self._storage, name)


def test_waiting_channels_cost_one_query_a_poll_not_one_each() -> None:
    """Strangers may hold max_link_channels sockets: with every wake-up lost, 20 waiting
    channels (none fetched, one fetched) cost the process one query a poll, no read of
    a row each, and the fetched one still gets its body by the poll."""

    async def main(dsn: str) -> None:
        a = PostgresStorage(dsn, solo=False, pool_size=4)
        b = PostgresStorage(dsn, solo=False, pool_size=4)
        await a.open()
        await b.open()
        try:
            counted = _Counted(a)
            here = SharedLinks(counted, LocalFanout(), key_ttl=30, ttl=60, poll=0.2)
            there = SharedLinks(b, LocalFanout(), key_ttl=30, ttl=60, poll=0.2)
            channels = [await here.open(os.urandom(16), KEM) for _ in range(20)]
            receiving = [asyncio.ensure_future(c.receive()) for c in channels]
            assert await there.key(channels[0].channel_id) == KEM
            await asyncio.sleep(0.1)
            counted.reads.clear()
            await asyncio.sleep(1.0)
            assert counted.reads.count("link_state") == 0
            assert 3 <= counted.reads.count("link_answered") <= 6  # one a 0.2 s poll
            putting = asyncio.ensure_future(there.provision(channels[0].channel_id, b"p"))
            assert await asyncio.wait_for(receiving[0], 1.0) == b"p"
            await channels[0].delivered()
            await channels[0].close()
            await asyncio.wait_for(putting, 1.0)
            for task in receiving[1:]:
                task.cancel()
            await asyncio.gather(*receiving[1:], return_exceptions=True)
            for channel in channels[1:]:
                await channel.close()
        finally:
            await a.close()
            await b.close()

    with fresh_database() as dsn:
        asyncio.run(main(dsn))


@pytest.mark.parametrize("ending", ["received", "cancelled"])
def test_a_key_fetched_after_the_wait_ended_is_still_answered(ending: str) -> None:
    """Between the end of receive() (the body came, or the new device left) and close(),
    a GET of the key is answered, not an error (the wait's timer is finished)."""

    async def main() -> None:
        links = LocalLinks(key_ttl=30, ttl=60)
        channel = await links.open(os.urandom(16), KEM)
        receiving = asyncio.ensure_future(channel.receive())
        await asyncio.sleep(0)
        if ending == "received":
            putting = asyncio.ensure_future(links.provision(channel.channel_id, b"p"))
            assert await receiving == b"p"
        else:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
        assert await links.key(channel.channel_id) == KEM
        await channel.delivered()
        await channel.close()
        if ending == "received":
            await putting

    asyncio.run(main())
