"""Linking a new device to an account: both ends (docs/PROTOCOL.md, "Linking").

The new device (:func:`join_account`) opens a link channel on the server and shows a link
code (the channel, its ephemeral ML-KEM key and its name) and a confirmation code. On a
device of the account, :meth:`Linking.accept` reads the code, has the user compare the
confirmation codes, and seals the account's material to the new device's key: the account
key, the delivery token, the device id it will take, its siblings' names, the contacts,
groups and timers, and the pinned log key and newest head. The new device opens it,
checks it names this server's key and the account the directory lists, and registers
(:func:`~.registration.register`); nothing the server relays can be read or changed by
it. Afterwards the new device tells its siblings (a ``DeviceNotice``), each of which, the
accepting device too, then has one :class:`~sealpost.client.records.DeviceLinked` event;
the accepting device lists it by name at once, until a lookup brings its certificate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from sealpost._errors import ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.errors import ClientError, LinkRefused, ServerError
from sealpost.client.paths import api_path
from sealpost.client.provisioning import ContactRecord, Provisioning
from sealpost.client.services.devices import MAX_DEVICES, OwnDevices
from sealpost.client.services.monitoring import Monitoring, fetch_log_key
from sealpost.client.services.registration import Setup, fetch_server_key, register
from sealpost.client.store import KdfParams, Store
from sealpost.client.store.contacts import ContactRow
from sealpost.client.store.unit import Repositories
from sealpost.client.transport import Transport, b64, unb64
from sealpost.entropy import Rng
from sealpost.protocol import DeviceKeys
from sealpost.protocol.linking import (
    LinkCode,
    LinkSecrets,
    confirmation_code,
    open_provisioning,
    seal_provisioning,
)

__all__ = ["Linking", "join_account"]


async def join_account(
    profile: Path,
    passcode: str,
    *,
    server_url: str,
    device_name: str,
    show: Callable[[str, str], None],
    timeout: float,
    params: KdfParams | None,
    wipe_after: int | None,
    rng: Rng,
    clock: Callable[[], float],
) -> tuple[Store, Provisioning]:
    """The new device's end: wait (up to ``timeout`` seconds) for a device of the account
    to provision this one, check what it sent, and register; returns the new profile's
    store and the provisioning it was made from."""
    if Store.exists(profile):
        raise ClientError(f"a profile already exists in {profile}")
    secrets = LinkSecrets.generate(rng)
    async with Transport(server_url, clock=clock, rng=rng) as anonymous:
        server_key = await fetch_server_key(anonymous)
        channel = await anonymous.open_link(secrets.kem_public())
        try:
            code = secrets.code(channel.channel, device_name)
            show(code.to_text(), confirmation_code(code, secrets.kem_public()))
            message = await channel.provisioning(timeout)
        finally:
            await channel.close()
        try:
            payload = Provisioning.from_bytes(open_provisioning(message, secrets, code))
        except ProtocolError:
            raise LinkRefused("the provisioning message does not open") from None
        if payload.server_key != server_key:
            raise LinkRefused("the provisioning names another server key")
        log_key = payload.log_key or await fetch_log_key(anonymous.request)
        # the account key must be the one the directory has for the account
        doc = await anonymous.request("GET", api_path("accounts", payload.username), signed=False)
    account = payload.account
    try:
        listed_id = bytes.fromhex(doc["account_id"])
        listed_key = unb64(doc["account_key"])
    except (KeyError, TypeError, ValueError):
        raise ServerError(0, "bad_response", "malformed account lookup") from None
    if listed_id != account.account_id or listed_key != account.public_key().public_bytes_raw():
        raise LinkRefused("the provisioned account is not the directory's")

    def body(device: DeviceKeys) -> dict[str, Any]:
        return {"certificate": b64(device.certificate.encode())}

    def seed(repos: Repositories) -> None:
        now = int(clock())
        for c in payload.contacts:
            repos.contacts.add(
                c.account_id,
                c.username,
                c.account_key,
                now,
                verified=c.verified,
                delivery_token=c.delivery_token,
            )
        for state in payload.groups:
            repos.groups.add_provisioned(state, now)
        for peer, seconds in payload.timers.items():
            repos.messages.set_timer(peer, seconds)
        repos.devices.add_named_own(
            {d: n for d, n in payload.devices.items() if d != payload.device_id}, now
        )

    setup = Setup(
        server_url,
        server_key,
        payload.username,
        account,
        payload.delivery_token,
        payload.device_id,
        device_name,
        log_key,
        payload.log_head,
    )
    store = await register(
        profile,
        passcode,
        setup,
        "/v1/devices",
        body,
        seed,
        params=params,
        wipe_after=wipe_after,
        rng=rng,
        clock=clock,
    )
    return store, payload


class Linking:
    """The accepting end, on a device of the account. ``contacts`` lists the contacts to
    hand over (the directory's)."""

    def __init__(
        self,
        ctx: ClientContext,
        devices: OwnDevices,
        monitoring: Monitoring,
        *,
        contacts: Callable[[], Iterable[ContactRow]],
    ) -> None:
        self._ctx = ctx
        self._devices = devices
        self._monitoring = monitoring
        self._contacts = contacts

    async def accept(
        self, code_text: str, confirm: Callable[[str, str], bool | Awaitable[bool]]
    ) -> int:
        """Provision the new device that shows ``code_text``: ``confirm(device name,
        confirmation code)`` must return true (the user compared the code with the one on
        the new device). Sends it the account key, contacts, groups and timers, sealed to
        its keys; returns the device id it will take."""
        ctx = self._ctx
        code = LinkCode.from_text(code_text)
        doc = await ctx.transport.request("GET", api_path("link", code.channel.hex()))
        kem_public = unb64(doc.get("kem") if isinstance(doc, dict) else None)
        code.check_kem(kem_public)
        answer = confirm(code.device_name, confirmation_code(code, kem_public))
        if not isinstance(answer, bool):
            answer = await answer
        if not answer:
            raise LinkRefused("the link was not confirmed")
        devices, revoked = await self._devices.directory()
        if len(devices) >= MAX_DEVICES:
            raise ClientError(f"this account has {len(devices)} devices, the most it may have")
        device_id = max([ctx.device_id, *devices, *revoked]) + 1
        repos = ctx.store.repos()
        names = repos.devices.own_names()
        names[ctx.device_id] = (repos.meta.get("device_name") or b"device").decode()
        names[device_id] = code.device_name
        kt = await self._monitoring.transparency()
        payload = Provisioning(
            server_url=ctx.server_url,
            server_key=ctx.server_key.public_bytes_raw(),
            username=ctx.username,
            account=ctx.account,
            delivery_token=ctx.delivery_token,
            device_id=device_id,
            devices=names,
            contacts=[
                ContactRecord(c.account_id, c.username, c.account_key, c.verified, c.delivery_token)
                for c in self._contacts()
            ],
            groups=repos.groups.states(),
            timers=repos.messages.timers(),
            log_key=kt.log_key,
            log_head=kt.gossip(),
        )
        message = seal_provisioning(payload.to_bytes(), code, kem_public, rng=ctx.rng)
        await ctx.transport.request(
            "PUT", api_path("link", code.channel.hex()), body={"body": b64(message)}
        )
        with ctx.store.unit() as repos:
            repos.devices.name_own(device_id, code.device_name, int(ctx.clock()))
        self._devices.changed()
        # no DeviceLinked here: the new device announces itself to every device of the
        # account (this one too), and that notice, received and stored, is the one event
        return device_id
