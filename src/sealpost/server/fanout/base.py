"""Waking the connection that holds a device's WebSocket when its queue grows.

The fanout carries no message content: a publish says only "device D has new messages",
and the stream that holds D's socket reads them from storage in queue order. So ordering
and durability stay the storage's job, and a Redis pub/sub implementation for several
server processes has nothing secret to transport (the device address only).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["DeviceAddress", "Fanout", "Subscription"]

DeviceAddress = tuple[bytes, int]  # (account id, device id)


class Subscription(Protocol):
    """A device's wake-up signal. ``clear`` before reading the queue, ``wait`` after."""

    def clear(self) -> None: ...

    async def wait(self) -> None: ...

    def close(self) -> None: ...


class Fanout(Protocol):
    def subscribe(self, address: DeviceAddress) -> Subscription: ...

    async def publish(self, addresses: Iterable[DeviceAddress]) -> None: ...

    def connected(self) -> int:
        """How many subscriptions are open (a metric)."""
