"""Wake-ups for connected devices (:class:`Fanout`), in-process by default."""

from sealpost.server.fanout.base import DeviceAddress, Fanout, Subscription
from sealpost.server.fanout.local import LocalFanout, LocalSubscription

__all__ = ["DeviceAddress", "Fanout", "LocalFanout", "LocalSubscription", "Subscription"]
