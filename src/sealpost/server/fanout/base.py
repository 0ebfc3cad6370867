"""Waking the connection that holds a device's WebSocket when its queue grows.

The fanout carries no message content: a publish says only "device D has new messages",
and the stream that holds D's socket reads them from storage in queue order. So ordering
and durability stay the storage's job, and a Redis pub/sub implementation for several
server processes has nothing secret to transport (the device address only).

The same bus wakes the two ends of a device-link channel (:mod:`sealpost.server.links`):
a wake-up names the channel (its random 16-byte id) and says only "look at it again".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

__all__ = [
    "DeviceAddress",
    "DisplaceHandler",
    "Fanout",
    "LinkHandler",
    "PollHandler",
    "Subscription",
    "Wake",
]

DeviceAddress = tuple[bytes, int]  # (account id, device id)
#: Called with (address, epoch) when another process's connection took that epoch.
DisplaceHandler = Callable[[DeviceAddress, int], None]
#: Called with a link channel's id when its row may have changed (on any process).
LinkHandler = Callable[[bytes], None]
#: Called when a subscribed device's queue may have grown.
Wake = Callable[[], None]
#: Called where wake-ups can be lost, to find what they missed (:meth:`Fanout.on_poll`).
PollHandler = Callable[[], Awaitable[None]]


class Subscription(Protocol):
    """A device's wake-ups, from :meth:`Fanout.subscribe` until ``close``."""

    def close(self) -> None: ...


class Fanout(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def subscribe(self, address: DeviceAddress, wake: Wake) -> Subscription:
        """Call ``wake()`` (on the event loop; it must not block) whenever the device's
        queue may have grown. Where wake-ups can be lost (Redis), what they missed is found
        by the poll (:meth:`on_poll`); with no poll handler, every subscription is woken
        each poll interval instead."""

    async def publish(self, addresses: Iterable[DeviceAddress]) -> None: ...

    def displace(self, address: DeviceAddress, epoch: int) -> None:
        """Tell the other processes that a connection of this device took ``epoch``: a
        connection of theirs with an older one closes (4409)."""

    def on_displace(self, handler: DisplaceHandler) -> None:
        """Call ``handler`` when another process says so."""

    def on_poll(self, handler: PollHandler) -> None:
        """Where wake-ups can be lost, await ``handler()`` every poll interval, and once
        each time the bus is listened to again: it reads the connected devices' queue
        positions and wakes those a lost wake-up missed (and closes, 4409, a connection
        that a lost displacement did not reach). Never called where nothing is lost."""

    def wake_link(self, channel_id: bytes) -> None:
        """Tell every process (this one too) that link channel ``channel_id`` changed.
        Only a hint: it may be lost, and its receivers look at the channel on a timer too."""

    def on_link(self, handler: LinkHandler) -> None:
        """Call ``handler`` (on the event loop; it must not block) with each channel id
        that :meth:`wake_link` names, on any process."""

    async def reachable(self) -> bool:
        """Whether the bus between processes answers (``/healthz``)."""

    def connected(self) -> int:
        """How many subscriptions are open (a metric)."""
