"""In-process fanout: a callback per subscribed stream. Right for a single server
process; several processes need a shared bus (Redis pub/sub) behind the same interface."""

from __future__ import annotations

from collections.abc import Iterable

from sealpost.server.fanout.base import DeviceAddress, DisplaceHandler, Wake

__all__ = ["LocalFanout", "LocalSubscription"]


class LocalSubscription:
    """A device's wake-up: ``wake`` is called, on the event loop, each time its queue may
    have grown. No event and no task of its own (a server holds tens of thousands)."""

    __slots__ = ("_address", "_fanout", "_wake")

    def __init__(self, fanout: LocalFanout, address: DeviceAddress, wake: Wake) -> None:
        self._fanout = fanout
        self._address = address
        self._wake = wake

    def notify(self) -> None:
        self._wake()

    def close(self) -> None:
        self._fanout._remove(self._address, self)


class LocalFanout:
    def __init__(self) -> None:
        self._subs: dict[DeviceAddress, set[LocalSubscription]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def displace(self, address: DeviceAddress, epoch: int) -> None:
        pass  # one process: the stream endpoint replaces its own connections

    def on_displace(self, handler: DisplaceHandler) -> None:
        pass

    async def reachable(self) -> bool:
        return True

    def local(self, address: DeviceAddress) -> bool:
        return address in self._subs

    def subscribe(self, address: DeviceAddress, wake: Wake) -> LocalSubscription:
        sub = LocalSubscription(self, address, wake)
        self._subs.setdefault(address, set()).add(sub)
        return sub

    async def publish(self, addresses: Iterable[DeviceAddress]) -> None:
        subs = self._subs
        for address in addresses:
            for sub in subs.get(address, ()):
                sub._wake()  # notify(), without its call: a device a message, spread thin

    def connected(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def _remove(self, address: DeviceAddress, sub: LocalSubscription) -> None:
        subs = self._subs.get(address)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[address]
