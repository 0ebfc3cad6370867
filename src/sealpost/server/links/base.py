"""The relay's device-link channels behind one interface (:class:`LinkChannels`), whichever
process holds each end.

A channel has two ends: the new device's socket (:meth:`LinkChannels.open` gives its
process a :class:`LinkChannel` to wait on) and a device of the account, whose two signed
requests (:meth:`LinkChannels.key`, :meth:`LinkChannels.provision`) may reach any process.
Both implementations give the same guarantees:

- a channel is alive ``key_ttl`` seconds (at most ``ttl``) from :meth:`LinkChannels.open`
  until its key is fetched, then until ``ttl`` seconds from opening; an unknown, expired
  or ended channel is :class:`UnknownChannel`;
- a channel takes one body: a second :meth:`LinkChannels.provision` while the first is
  waiting is :class:`AlreadyProvisioned`;
- :meth:`LinkChannels.provision` returns only once the new device's process said
  :meth:`LinkChannel.delivered` (the body was written to its socket and the socket
  closed), and raises :class:`DeviceGone` if that end went away or did not say so in
  time;
- nothing is logged; what is kept is the new device's public KEM key and the body, which
  is end-to-end encrypted to the new device.

Errors (none of them says more than its name)::

    LinkError
    ├── UnknownChannel      404 not_found
    ├── AlreadyProvisioned  409 already_provisioned
    └── DeviceGone          410 gone
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = [
    "DELIVERY_TIMEOUT",
    "AlreadyProvisioned",
    "DeviceGone",
    "LinkChannel",
    "LinkChannels",
    "LinkError",
    "UnknownChannel",
]

#: Seconds a PUT waits for the new device's process to deliver its body: that process is
#: woken at once (or finds the body within a second, :mod:`.shared`), so this is only
#: reached when the new device is gone without its process having noticed yet.
DELIVERY_TIMEOUT: Final = 10.0


class LinkError(Exception):
    """Root of the link channels' refusals; nothing was changed."""


class UnknownChannel(LinkError):
    """No such channel, or it expired or ended."""


class AlreadyProvisioned(LinkError):
    """The channel already has its body."""


class DeviceGone(LinkError):
    """The new device is no longer there to receive the body (its socket closed, or its
    process did not deliver in time)."""


class LinkChannel(Protocol):
    """The new device's end of one channel, held by the process that holds its socket."""

    @property
    def channel_id(self) -> bytes: ...

    async def receive(self) -> bytes:
        """The provisioning body, once a device of the account PUT it. Raises
        ``TimeoutError`` when the channel expires first (it is then ended). Cancelling it
        changes nothing."""

    async def delivered(self) -> None:
        """The body was written to the socket and the socket closed: the PUT may answer."""

    async def close(self) -> None:
        """End the channel (always, once): a PUT waiting for a delivery not said by then
        learns :class:`DeviceGone`."""


class LinkChannels(Protocol):
    async def open(self, channel_id: bytes, kem: bytes) -> LinkChannel:
        """A new channel with the new device's public ``kem`` key (``channel_id``: 16
        random bytes)."""

    async def key(self, channel_id: bytes) -> bytes:
        """The channel's KEM key; the channel may now live until its full lifetime.
        Raises :class:`UnknownChannel`."""

    async def provision(self, channel_id: bytes, body: bytes) -> None:
        """Hand ``body`` to the new device's end and wait for its delivery. Raises
        :class:`UnknownChannel`, :class:`AlreadyProvisioned` or :class:`DeviceGone`."""
