"""This account's own devices: which siblings are encrypted to, and refreshing the list.

A sibling is encrypted to only with a certificate signed by the account key and held by a
lookup of this account that the key-transparency log confirmed (:meth:`OwnDevices.
directory`), or brought by a sibling's own message; a device revoked by the account key is
never encrypted to again, whatever the server lists. Removing a device, and telling the
other devices and the contacts of a change, is :mod:`.device_changes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sealpost.client.context import ClientContext
from sealpost.client.errors import ServerError
from sealpost.client.paths import api_path
from sealpost.client.services.directory import verified_devices, verified_revocations
from sealpost.client.services.monitoring import Monitoring
from sealpost.client.store.contacts import ContactRow
from sealpost.client.store.unit import Repositories
from sealpost.client.transport import unb64
from sealpost.protocol.wire import DeviceCertificate

__all__ = ["MAX_DEVICES", "OwnDevices"]

MAX_DEVICES = 5  # devices an account may have (the server's default limit too)


class OwnDevices:
    """``forget_session(account id, device id)`` drops a cached session with a revoked
    device."""

    def __init__(
        self,
        ctx: ClientContext,
        monitoring: Monitoring,
        *,
        forget_session: Callable[[bytes, int | None], None],
    ) -> None:
        self._ctx = ctx
        self._monitoring = monitoring
        self._forget_session = forget_session
        self._siblings: dict[int, DeviceCertificate] | None = None  # cached

    @property
    def account_key(self) -> bytes:
        return self._ctx.account.public_key().public_bytes_raw()

    def changed(self) -> None:
        """The stored device list may have changed: read it again when next needed."""
        self._siblings = None

    def own_row(self, extra: Mapping[int, DeviceCertificate] | None = None) -> ContactRow:
        """This account as a recipient: its other devices that the account key certified
        (with ``extra``: those a batch being received learnt)."""
        ctx = self._ctx
        if self._siblings is None:
            self._siblings = {
                device_id: cert
                for device_id, cert in ctx.store.repos().devices.own_certified().items()
                if device_id != ctx.device_id
            }
        devices = dict(self._siblings)
        if extra:
            devices.update(extra)
        return ContactRow(
            ctx.account_id, ctx.username, self.account_key, True, False, ctx.delivery_token, devices
        )

    def record_revocation(
        self, repos: Repositories, account_id: bytes, device_id: int, revocation: bytes | None
    ) -> None:
        """In a unit: ``account_id``'s key revoked ``device_id`` (its sessions go)."""
        repos.devices.record_revocation(account_id, device_id, revocation)
        self._forget_session(account_id, device_id)

    def forget_own(self, repos: Repositories, device_id: int) -> None:
        """In a unit: a sibling said this account removed ``device_id``."""
        repos.devices.remove_own(device_id)
        self.record_revocation(repos, self._ctx.account_id, device_id, None)

    async def directory(self) -> tuple[dict[int, DeviceCertificate], dict[int, bytes]]:
        """This account's devices as the server lists them, each checked against the
        account key, and the device ids the account key revoked (with the revocations);
        the answer is checked against the key-transparency log."""
        ctx = self._ctx
        kt = await self._monitoring.transparency()
        floor = kt.freshness_floor()
        doc = await ctx.transport.request("GET", api_path("accounts", ctx.username), signed=False)
        try:
            if bytes.fromhex(doc["account_id"]) != ctx.account_id:
                raise ServerError(0, "bad_response", "the lookup answered for another account")
            if unb64(doc["account_key"]) != self.account_key:
                raise ServerError(0, "bad_response", "the server lists another account key")
        except (KeyError, TypeError, ValueError):
            raise ServerError(0, "bad_response", "malformed account lookup") from None
        await kt.check_lookup(
            doc,
            account_id=ctx.account_id,
            username=ctx.username,
            account_key=self.account_key,
            floor=floor,
        )
        try:
            revoked = verified_revocations(
                ctx.account_id, self.account_key, doc.get("revocations", [])
            )
            devices = verified_devices(ctx.account_id, self.account_key, doc["devices"])
        except (KeyError, TypeError, ValueError):
            raise ServerError(0, "bad_response", "malformed account lookup") from None
        for device_id in revoked:
            devices.pop(device_id, None)
        return devices, revoked

    async def refresh(self) -> None:
        """Fetch this account's device list again (after a change or a refused send)."""
        devices, revoked = await self.directory()
        with self._ctx.store.unit() as repos:
            repos.devices.replace_own(devices, int(self._ctx.clock()))
            for device_id, revocation in revoked.items():
                self.record_revocation(repos, self._ctx.account_id, device_id, revocation)
        self.changed()

    async def list(self) -> list[dict[str, Any]]:
        """This account's devices (certified by its key), this one marked ``current``."""
        await self.refresh()
        ctx = self._ctx
        meta = ctx.store.repos().meta
        out = [
            {
                "device_id": ctx.device_id,
                "name": (meta.get("device_name") or b"this device").decode(),
                "created": ctx.device.certificate.created,
                "current": True,
            }
        ]
        for device in ctx.store.repos().devices.own():
            if device.certificate is None or device.device_id == ctx.device_id:
                continue
            out.append(
                {
                    "device_id": device.device_id,
                    "name": device.name,
                    "created": device.certificate.created,
                    "current": False,
                }
            )
        return sorted(out, key=lambda d: int(d["device_id"]))
