"""Wake-ups between server processes over Redis pub/sub (redis-py asyncio).

A publish is only a hint: "device D has new messages" (D's account id and device id, 20
bytes; never content). The process holding D's socket reads the queue from the database
when woken, and polls on a slow timer besides (every ``poll_interval``: the poll handlers,
:meth:`~.base.Fanout.on_poll`, read every local device's queue position in one query and
wake those holding a message not yet pushed), so a lost pub/sub message, a Redis restart or
a Redis that is down delays delivery by at most that interval and loses nothing: the
database is the truth, Redis holds nothing that must survive. The same poll closes a
connection whose epoch the database says was taken by another (a displacement lost with
Redis), so while Redis is down two connections of a device overlap for at most that long.

- A device connected to this process is woken here directly; only the others' addresses
  are published (one process with Redis sends nothing over it).
- Publishes are batched by a background task and never make a send wait: the send was
  committed, and its answer does not depend on Redis being up.
- Every process subscribes to three channels: ``sealpost:wake`` (addresses),
  ``sealpost:displace`` (address and epoch: another process's connection took the device,
  see :mod:`sealpost.server.stream`) and ``sealpost:link`` (16-byte ids of device-link
  channels whose row changed, :mod:`sealpost.server.links.shared`; their waiters read the
  database every second besides). After (re)subscribing, the poll runs at once, in case
  a wake-up was missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterable
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sealpost.server.fanout.base import DeviceAddress, DisplaceHandler, PollHandler
from sealpost.server.fanout.local import LocalFanout

__all__ = ["RedisFanout"]

log = logging.getLogger("sealpost.server.fanout")

WAKE: Final = "sealpost:wake"
DISPLACE: Final = "sealpost:displace"
LINK: Final = "sealpost:link"
LINK_ID: Final = 16  # bytes of a link channel's id
RETRY: Final = 0.5  # seconds between attempts to reach Redis again
_WAKE = struct.Struct(">16sI")
_DISPLACE = struct.Struct(">16sIQ")
#: Addresses in one PUBLISH (20 bytes each).
BATCH: Final = 4096


class RedisFanout(LocalFanout):
    def __init__(self, url: str, *, poll_interval: float) -> None:
        super().__init__()
        self._url = url
        self._poll = poll_interval
        self._redis: aioredis.Redis | None = None
        self._wake: set[DeviceAddress] = set()
        self._displace: list[tuple[DeviceAddress, int]] = []
        self._links: list[bytes] = []
        self._flush = asyncio.Event()
        self._handlers: list[DisplaceHandler] = []
        self._polls: list[PollHandler] = []
        self._poll_now = asyncio.Event()  # the listener subscribed again: poll at once
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed = False  # listening now (a metric; tests wait for it)

    async def open(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self._url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
        )
        self._tasks = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._publisher()),
            asyncio.create_task(self._poller()),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
            self._redis = None

    async def publish(self, addresses: Iterable[DeviceAddress]) -> None:
        remote = False
        for address in addresses:
            if not self._wake_here(address):
                self._wake.add(address)
                remote = True
        if remote:
            self._flush.set()

    def displace(self, address: DeviceAddress, epoch: int) -> None:
        self._displace.append((address, epoch))
        self._flush.set()

    def on_displace(self, handler: DisplaceHandler) -> None:
        self._handlers.append(handler)

    def on_poll(self, handler: PollHandler) -> None:
        self._polls.append(handler)

    def wake_link(self, channel_id: bytes) -> None:
        self._wake_link_here(channel_id)  # the other end may be on this process
        if len(channel_id) == LINK_ID:
            self._links.append(channel_id)
            self._flush.set()

    async def reachable(self) -> bool:
        if self._redis is None:
            return False
        try:
            async with asyncio.timeout(1):
                return bool(await self._redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    # ------------------------------------------------------------------ tasks

    async def _publisher(self) -> None:
        while True:
            await self._flush.wait()
            self._flush.clear()
            wake, self._wake = list(self._wake), set()
            displace, self._displace = self._displace, []
            links, self._links = self._links, []
            redis = self._redis
            if redis is None:
                continue
            try:
                for (account_id, device_id), epoch in displace:
                    await redis.publish(DISPLACE, _DISPLACE.pack(account_id, device_id, epoch))
                if links:
                    await redis.publish(LINK, b"".join(links))
                for start in range(0, len(wake), BATCH):
                    chunk = wake[start : start + BATCH]
                    await redis.publish(WAKE, b"".join(_WAKE.pack(a, d) for a, d in chunk))
            except (RedisError, OSError) as exc:
                # Dropped: the receivers' poll finds the messages; the epoch in the
                # database fences off the displaced connection's acks.
                log.warning("redis publish failed (%s); relying on the poll", type(exc).__name__)
                await asyncio.sleep(RETRY)

    async def _poller(self) -> None:
        """Poll each ``poll_interval``, and at once when the listener subscribed again: one
        timer for every local device, so a lost wake-up delays a delivery by at most that
        long (plus the poll's own read)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._poll_now.wait()
            self._poll_now.clear()
            await self._poll_once()

    async def _poll_once(self) -> None:
        """Await each poll handler in turn; with none, wake every local device. A failing
        handler is logged (it should not fail: a database that is not reachable is its own
        to report) and the next poll is tried all the same."""
        if not self._polls:
            self._wake_everyone()
            return
        for handler in self._polls:
            try:
                await handler()
            except Exception:
                log.exception("poll failed")

    async def _listen(self) -> None:
        while True:
            redis = self._redis
            assert redis is not None
            pubsub = redis.pubsub()
            try:
                await pubsub.subscribe(WAKE, DISPLACE, LINK)
                self.subscribed = True
                self._poll_now.set()  # anything published while we were not listening
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                    if message is not None:
                        self._receive(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                if self.subscribed:
                    log.warning("lost redis (%s); polling until it is back", type(exc).__name__)
                self.subscribed = False
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RETRY)

    def _receive(self, channel: bytes | str, data: object) -> None:
        if not isinstance(data, bytes):
            return
        name = channel.decode() if isinstance(channel, bytes) else channel
        if name == WAKE:
            for pos in range(0, len(data) - _WAKE.size + 1, _WAKE.size):
                self._wake_here(_WAKE.unpack_from(data, pos))
        elif name == LINK:
            for pos in range(0, len(data) - LINK_ID + 1, LINK_ID):
                self._wake_link_here(data[pos : pos + LINK_ID])
        elif name == DISPLACE and len(data) == _DISPLACE.size:
            account_id, device_id, epoch = _DISPLACE.unpack(data)
            for handler in self._handlers:
                handler((account_id, device_id), epoch)
