"""Changes to this account's device list that others must hear of: a device removed, and
this device linked.

:meth:`DeviceChanges.remove` has the account key sign a revocation: the server deletes the
device, this account's other devices are told (a :class:`DeviceNotice`), and so is every
contact (the signed revocation itself, a :class:`RevocationNotice`), so they drop the
device even if the server keeps listing it. A device just linked tells its siblings its
name (:meth:`DeviceChanges.announce`). The notices go on the send queue (:mod:`.sending`)
as control messages; the device list itself is :mod:`.devices`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from sealpost.client.context import ClientContext
from sealpost.client.errors import ClientError
from sealpost.client.paths import api_path
from sealpost.client.records import DeviceRemoved, Message
from sealpost.client.rows import Outgoing
from sealpost.client.services.devices import OwnDevices
from sealpost.client.store.contacts import ContactRow
from sealpost.client.transport import b64
from sealpost.protocol.content import (
    DEVICE_LINKED,
    DEVICE_REMOVED,
    DeviceNotice,
    RevocationNotice,
)
from sealpost.protocol.keys import sign_revocation

__all__ = ["DeviceChanges"]

log = logging.getLogger("sealpost.client")

Enqueue = Callable[[Outgoing], Awaitable[Message | None]]


class DeviceChanges:
    """``enqueue`` sends a control message (the sending service's); ``contacts`` lists
    the contacts to tell of a revocation."""

    def __init__(
        self,
        ctx: ClientContext,
        devices: OwnDevices,
        *,
        enqueue: Enqueue,
        contacts: Callable[[], Iterable[ContactRow]],
    ) -> None:
        self._ctx = ctx
        self._devices = devices
        self._enqueue = enqueue
        self._contacts = contacts

    async def remove(self, device_id: int) -> None:
        """Revoke another device of this account: the account key signs a revocation,
        the server deletes the device, contacts stop encrypting to it, and this
        account's other devices are told."""
        ctx = self._ctx
        if device_id == ctx.device_id:
            raise ClientError("a device cannot remove itself; remove it from another device")
        revocation = sign_revocation(ctx.account, device_id, revoked_at=int(ctx.clock()))
        await ctx.transport.request(
            "DELETE", api_path("devices", device_id), body={"revocation": b64(revocation.encode())}
        )
        with ctx.store.unit() as repos:
            name = repos.devices.remove_own(device_id) or f"device {device_id}"
            self._devices.record_revocation(repos, ctx.account_id, device_id, revocation.encode())
        self._devices.changed()
        ctx.events.emit(DeviceRemoved(device_id, name))
        await self.notify_own(DeviceNotice(ctx.now_ms(), DEVICE_REMOVED, device_id, name))
        await self.notify_contacts(RevocationNotice(ctx.now_ms(), revocation.encode()))

    async def notify_contacts(self, notice: RevocationNotice) -> None:
        """Send the signed revocation to every contact's devices: they drop the device
        even if the server keeps listing it to them or replays an old lookup."""
        names = [c.username for c in self._contacts() if c.devices]
        loop = asyncio.get_running_loop()
        sends = [
            self._enqueue(Outgoing(n, notice, loop.create_future(), store=False)) for n in names
        ]
        for result in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(result, Exception):  # that contact learns it at its next lookup
                log.warning("a revocation notice was not sent: %s", type(result).__name__)

    async def notify_own(self, notice: DeviceNotice) -> None:
        """Tell this account's other devices (if it has any) of a device change."""
        if not self._devices.own_row().devices:
            return
        future = asyncio.get_running_loop().create_future()
        await self._enqueue(Outgoing("", notice, future, store=False, to_self=True))

    async def announce(self, device_name: str) -> None:
        """This device was just linked: fetch the account's device list and tell the
        other devices its name (if that fails, they learn of it from the list later)."""
        ctx = self._ctx
        try:
            await self._devices.refresh()
            await self.notify_own(
                DeviceNotice(ctx.now_ms(), DEVICE_LINKED, ctx.device_id, device_name)
            )
        except ClientError as exc:
            log.warning("could not tell the other devices about this one: %s", type(exc).__name__)
