"""In-process fanout: a callback per subscribed stream. Right for a single server
process; several processes need a shared bus (Redis pub/sub) behind the same interface."""

from __future__ import annotations

from collections.abc import Iterable

from sealpost.server.fanout.base import (
    DeviceAddress,
    DisplaceHandler,
    LinkHandler,
    PollHandler,
    Wake,
)

__all__ = ["LocalFanout", "LocalSubscription"]


class LocalSubscription:
    """A device's wake-up: ``wake`` is called, on the event loop, each time its queue may
    have grown. No event and no task of its own (a server holds tens of thousands); the
    subscriptions of one device (a reconnecting one has two for a moment) are a chain
    through ``_next``, the newest first, with no set each."""

    __slots__ = ("_address", "_fanout", "_next", "_wake")

    def __init__(self, fanout: LocalFanout, address: DeviceAddress, wake: Wake) -> None:
        self._fanout = fanout
        self._address = address
        self._wake = wake
        self._next: LocalSubscription | None = None

    def notify(self) -> None:
        self._wake()

    def close(self) -> None:
        self._fanout._remove(self._address, self)


class LocalFanout:
    def __init__(self) -> None:
        self._subs: dict[DeviceAddress, LocalSubscription] = {}  # each device's newest
        self._link_handlers: list[LinkHandler] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def displace(self, address: DeviceAddress, epoch: int) -> None:
        pass  # one process: the stream endpoint replaces its own connections

    def on_displace(self, handler: DisplaceHandler) -> None:
        pass

    def on_poll(self, handler: PollHandler) -> None:
        pass  # one process: no wake-up is lost

    def wake_link(self, channel_id: bytes) -> None:
        self._wake_link_here(channel_id)

    def on_link(self, handler: LinkHandler) -> None:
        self._link_handlers.append(handler)

    def _wake_link_here(self, channel_id: bytes) -> None:
        for handler in self._link_handlers:
            handler(channel_id)

    async def reachable(self) -> bool:
        return True

    def local(self, address: DeviceAddress) -> bool:
        return address in self._subs

    def subscribe(self, address: DeviceAddress, wake: Wake) -> LocalSubscription:
        sub = LocalSubscription(self, address, wake)
        sub._next = self._subs.get(address)
        self._subs[address] = sub
        return sub

    async def publish(self, addresses: Iterable[DeviceAddress]) -> None:
        # With the load spread over many devices, each is woken for about one message: a
        # subscription's wake is called without notify()'s frame.
        subs = self._subs
        for address in addresses:
            sub = subs.get(address)
            while sub is not None:
                sub._wake()
                sub = sub._next

    def _wake_here(self, address: DeviceAddress) -> bool:
        """Wake the device's subscriptions here; whether it has any."""
        sub = self._subs.get(address)
        if sub is None:
            return False
        while sub is not None:
            sub._wake()
            sub = sub._next
        return True

    def _wake_everyone(self) -> None:
        for first in list(self._subs.values()):
            sub: LocalSubscription | None = first
            while sub is not None:
                sub._wake()
                sub = sub._next

    def connected(self) -> int:
        count = 0
        for first in self._subs.values():
            sub: LocalSubscription | None = first
            while sub is not None:
                count += 1
                sub = sub._next
        return count

    def _remove(self, address: DeviceAddress, sub: LocalSubscription) -> None:
        """Unlink ``sub`` (once; again is nothing). It keeps its own ``_next``, so that a
        publish at it when a wake closed it goes on to the rest of the chain."""
        first = self._subs.get(address)
        if first is sub:
            if sub._next is None:
                del self._subs[address]
            else:
                self._subs[address] = sub._next
            return
        before = first
        while before is not None and before._next is not sub:
            before = before._next
        if before is not None:
            before._next = sub._next
