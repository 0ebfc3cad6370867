"""Device-link channels (:class:`LinkChannels`): in this process's memory when it serves
alone (:class:`LocalLinks`), in the shared database when several do (:mod:`.shared`)."""

from sealpost.server.links.base import (
    DELIVERY_TIMEOUT,
    AlreadyProvisioned,
    DeviceGone,
    LinkChannel,
    LinkChannels,
    LinkError,
    UnknownChannel,
)
from sealpost.server.links.local import LocalChannel, LocalLinks

__all__ = [
    "DELIVERY_TIMEOUT",
    "AlreadyProvisioned",
    "DeviceGone",
    "LinkChannel",
    "LinkChannels",
    "LinkError",
    "LocalChannel",
    "LocalLinks",
    "UnknownChannel",
]
