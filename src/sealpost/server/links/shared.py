"""Link channels shared by every process on one PostgreSQL database (with Redis): the new
device's socket, the key fetch and the PUT may each reach another process behind a load
balancer, and the channel works the same.

The channel is a row of ``link_channels`` (:mod:`sealpost.server.storage.pg_links`): the
database is the truth, and the processes only wake each other.

1. The new device's process inserts the row and waits. It reads the row when woken and
   at its deadlines: at ``key_ttl`` it ends the channel unless the key was fetched (one
   statement, ordered with the fetch by the row lock), at ``ttl`` it ends it unless a
   body came. Every :data:`POLL` seconds, one query for all the channels the process
   waits on finds those whose body came (:meth:`LinkRows.link_answered`) and wakes them.
2. ``GET`` on any process marks the key fetched (only while the channel is alive, on the
   database's clock) and answers it.
3. ``PUT`` on any process stores the body (unless one was), wakes the channel through the
   fanout (:meth:`~sealpost.server.fanout.base.Fanout.wake_link`: Redis, naming the
   channel id), then waits for the delivered flag, woken or reading the flag every
   :data:`POLL` seconds, up to :data:`~.base.DELIVERY_TIMEOUT`. The new device's process
   writes the body to the socket, closes it, sets the flag (dropping the body from the
   row) and wakes the channel; the PUT's process then deletes the row and answers 200. A
   row deleted first (the new device left, or its channel expired) answers 410.

A lost wake-up (Redis down, a message dropped) delays a step by at most :data:`POLL`
seconds and loses nothing. Redis carries channel ids only, never a key or a body. A
process that dies with channels open leaves their rows: they answer until their deadline
(a PUT then waits and gets 410) and the leader's purge deletes them after it.

The cost: one query a :data:`POLL` per process while it waits on any channel, however many
(strangers may open ``max_link_channels`` of them: a channel is not a query a second), one
primary-key read per wake-up and deadline of a channel, and one a :data:`POLL` per PUT
waiting for its delivery (a PUT needs an account).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Final, Protocol

from sealpost.server.fanout.base import Fanout
from sealpost.server.links.base import (
    DELIVERY_TIMEOUT,
    AlreadyProvisioned,
    DeviceGone,
    UnknownChannel,
)
from sealpost.server.storage.pg_links import LinkAnswer, LinkRow

__all__ = ["POLL", "LinkRows", "SharedChannel", "SharedLinks"]

#: Seconds between a process's queries for the channels it waits on (and a PUT's reads of
#: its delivered flag), so that a lost wake-up delays a link by at most this long.
POLL: Final = 1.0

log = logging.getLogger("sealpost.server.links")


class LinkRows(Protocol):
    """The storage's link-channel rows (:class:`~sealpost.server.storage.pg_links.PgLinks`)."""

    async def link_open(
        self, channel_id: bytes, kem: bytes, *, key_ttl: float, ttl: float
    ) -> None: ...

    async def link_key(self, channel_id: bytes) -> bytes | None: ...

    async def link_answer(self, channel_id: bytes, body: bytes) -> LinkAnswer: ...

    async def link_state(self, channel_id: bytes) -> LinkRow | None: ...

    async def link_answered(self, channel_ids: Sequence[bytes]) -> list[bytes]: ...

    async def link_delivery(self, channel_id: bytes) -> bool | None: ...

    async def link_expire(self, channel_id: bytes, *, fetched_too: bool) -> bool: ...

    async def link_delivered(self, channel_id: bytes) -> None: ...

    async def link_drop(self, channel_id: bytes) -> None: ...


async def _woken_or_after(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(seconds, 0.0))


class SharedChannel:
    """The new device's end (:class:`~.base.LinkChannel`) of a channel in the database."""

    __slots__ = ("_deadline", "_delivered", "_key_deadline", "_links", "channel_id")

    def __init__(self, links: SharedLinks, channel_id: bytes, opened: float) -> None:
        self._links = links
        self.channel_id = channel_id
        self._key_deadline = opened + links._key_ttl  # loop time
        self._deadline = opened + links._ttl
        self._delivered = False

    async def receive(self) -> bytes:
        links, channel_id = self._links, self.channel_id
        loop = asyncio.get_running_loop()
        with links._listening(channel_id) as woken, links._receiving(channel_id):
            while True:
                woken.clear()
                row = await links._rows.link_state(channel_id)
                if row is None:  # purged (this process's clock lags the database's)
                    raise TimeoutError
                if row.body is not None:
                    return row.body
                left = (self._deadline if row.fetched else self._key_deadline) - loop.time()
                if left <= 0:
                    if await links._rows.link_expire(channel_id, fetched_too=row.fetched):
                        raise TimeoutError
                    continue  # fetched or answered just now: read it again
                await _woken_or_after(woken, left)  # woken by a PUT, or by the poll

    async def delivered(self) -> None:
        await self._links._rows.link_delivered(self.channel_id)
        self._delivered = True
        self._links._fanout.wake_link(self.channel_id)

    async def close(self) -> None:
        if self._delivered:
            return  # the PUT's process deletes the row once it saw the flag
        await self._links._rows.link_drop(self.channel_id)
        self._links._fanout.wake_link(self.channel_id)


class SharedLinks:
    """:class:`~.base.LinkChannels` in the shared database, woken through ``fanout``."""

    def __init__(
        self,
        rows: LinkRows,
        fanout: Fanout,
        *,
        key_ttl: float,
        ttl: float,
        poll: float = POLL,
        delivery_timeout: float = DELIVERY_TIMEOUT,
    ) -> None:
        self._rows = rows
        self._fanout = fanout
        self._key_ttl = min(key_ttl, ttl)
        self._ttl = ttl
        self._poll_every = poll
        self._delivery_timeout = delivery_timeout
        self._waiting: dict[bytes, list[asyncio.Event]] = {}
        self._receivers: dict[bytes, int] = {}  # channel id: receive() waiting on it
        self._poller: asyncio.Task[None] | None = None
        fanout.on_link(self._woken)

    def _woken(self, channel_id: bytes) -> None:
        for event in self._waiting.get(channel_id, ()):
            event.set()

    @contextlib.contextmanager
    def _listening(self, channel_id: bytes) -> Iterator[asyncio.Event]:
        """An event set by every wake-up of the channel, while in the block."""
        event = asyncio.Event()
        events = self._waiting.setdefault(channel_id, [])
        events.append(event)
        try:
            yield event
        finally:
            events.remove(event)
            if not events:
                del self._waiting[channel_id]

    @contextlib.contextmanager
    def _receiving(self, channel_id: bytes) -> Iterator[None]:
        """The channel is polled for its body while in the block."""
        self._receivers[channel_id] = self._receivers.get(channel_id, 0) + 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            yield
        finally:
            left = self._receivers.pop(channel_id) - 1
            if left:
                self._receivers[channel_id] = left

    async def _poll(self) -> None:
        """Every :data:`POLL` seconds while a channel is received, wake those answered:
        one query however many channels (a lost wake-up delays a body by that at most)."""
        while self._receivers:
            await asyncio.sleep(self._poll_every)
            if not self._receivers:
                return
            try:
                answered = await self._rows.link_answered(list(self._receivers))
            except Exception:
                log.exception("link poll failed")
                continue
            for channel_id in answered:
                self._woken(channel_id)

    async def open(self, channel_id: bytes, kem: bytes) -> SharedChannel:
        opened = asyncio.get_running_loop().time()
        await self._rows.link_open(channel_id, kem, key_ttl=self._key_ttl, ttl=self._ttl)
        return SharedChannel(self, channel_id, opened)

    async def key(self, channel_id: bytes) -> bytes:
        kem = await self._rows.link_key(channel_id)
        if kem is None:
            raise UnknownChannel()
        return kem

    async def provision(self, channel_id: bytes, body: bytes) -> None:
        with self._listening(channel_id) as woken:
            answer = await self._rows.link_answer(channel_id, body)
            if answer is LinkAnswer.UNKNOWN:
                raise UnknownChannel()
            if answer is LinkAnswer.ANSWERED:
                raise AlreadyProvisioned()
            self._fanout.wake_link(channel_id)
            try:
                async with asyncio.timeout(self._delivery_timeout):
                    while True:
                        woken.clear()
                        delivered = await self._rows.link_delivery(channel_id)
                        if delivered is None:  # the new device's end closed first
                            raise DeviceGone()
                        if delivered:
                            break
                        await _woken_or_after(woken, self._poll_every)
            except TimeoutError:
                raise DeviceGone() from None
        await self._rows.link_drop(channel_id)
