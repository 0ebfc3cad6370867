"""Link channels in this process's memory: right when it is the only process (SQLite, or
PostgreSQL without Redis), where every request reaches it. A channel is a pair of futures
(the body, its delivery) and the new device's wait has a timer that a key fetch moves to
the channel's full lifetime. Nothing is stored anywhere."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sealpost.server.links.base import (
    DELIVERY_TIMEOUT,
    AlreadyProvisioned,
    DeviceGone,
    UnknownChannel,
)

__all__ = ["LocalChannel", "LocalLinks"]


@dataclass(slots=True, repr=False)
class _Channel:
    kem: bytes
    opened: float  # loop time
    fetched: bool = False
    body: asyncio.Future[bytes] = field(default_factory=lambda: asyncio.Future())
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.Future())
    timeout: asyncio.Timeout | None = None  # the new device's wait for ``body``


class LocalChannel:
    """The new device's end (:class:`~.base.LinkChannel`)."""

    __slots__ = ("_channel", "_links", "channel_id")

    def __init__(self, links: LocalLinks, channel_id: bytes, channel: _Channel) -> None:
        self._links = links
        self._channel = channel
        self.channel_id = channel_id

    async def receive(self) -> bytes:
        channel = self._channel
        try:
            async with asyncio.timeout_at(self._links._deadline(channel)) as channel.timeout:
                return await asyncio.shield(channel.body)
        finally:  # a finished timer cannot be moved: a key fetched now moves none
            channel.timeout = None

    async def delivered(self) -> None:
        if not self._channel.done.done():
            self._channel.done.set_result(None)

    async def close(self) -> None:
        self._links._channels.pop(self.channel_id, None)
        done = self._channel.done
        if not done.done():
            done.set_exception(DeviceGone())
            done.exception()  # retrieved: nobody may be waiting


class LocalLinks:
    """:class:`~.base.LinkChannels` in memory."""

    def __init__(
        self, *, key_ttl: float, ttl: float, delivery_timeout: float = DELIVERY_TIMEOUT
    ) -> None:
        self._key_ttl = min(key_ttl, ttl)
        self._ttl = ttl
        self._delivery_timeout = delivery_timeout
        self._channels: dict[bytes, _Channel] = {}

    def _deadline(self, channel: _Channel) -> float:
        return channel.opened + (self._ttl if channel.fetched else self._key_ttl)

    async def open(self, channel_id: bytes, kem: bytes) -> LocalChannel:
        channel = _Channel(kem, opened=asyncio.get_running_loop().time())
        self._channels[channel_id] = channel
        return LocalChannel(self, channel_id, channel)

    def _get(self, channel_id: bytes) -> _Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise UnknownChannel()
        return channel

    async def key(self, channel_id: bytes) -> bytes:
        channel = self._get(channel_id)
        channel.fetched = True
        if channel.timeout is not None and not channel.timeout.expired():
            channel.timeout.reschedule(self._deadline(channel))
        return channel.kem

    async def provision(self, channel_id: bytes, body: bytes) -> None:
        channel = self._get(channel_id)
        if channel.body.done():
            raise AlreadyProvisioned()
        channel.body.set_result(body)
        try:
            await asyncio.wait_for(asyncio.shield(channel.done), self._delivery_timeout)
        except (TimeoutError, DeviceGone):
            raise DeviceGone() from None
