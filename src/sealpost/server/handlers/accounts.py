"""Accounts and devices: registration, adding a device, lookup by username.

Usernames: 3 to 32 characters from ``a-z 0-9 _ . -`` after lowercasing (ASCII only, so
no homoglyph confusion between two names that look alike). Unique case-insensitively;
the spelling given at registration is kept for display.

Who may register is the ``registration`` setting: ``open``, ``invite`` (the request's
``invite`` field holds a code made by ``sealpost admin invite create``; it is spent in the
registration's own transaction, so one single-use code registers one account however many
try at once) or ``closed``.

Registration proves possession twice over: the device certificate must verify under the
account key in the request, and the request itself must be signed (see
:mod:`sealpost.protocol.signing`) by the device signing key that certificate names. Adding a
device is the same, except the account key is the one already registered, so only a holder
of the account identity key (the user's own devices) can add one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sealpost._errors import ProtocolError
from sealpost.protocol.keys import VerifiedDevice, verify_certificate, verify_revocation
from sealpost.protocol.wire import DeviceCertificate, DeviceRevocation
from sealpost.server.authn import Authenticator, rate_limited, unauthorized
from sealpost.server.codec import json_response, parse_device_id
from sealpost.server.context import Context
from sealpost.server.errors import ApiError, bad_request
from sealpost.server.handlers.log import LogService, absence_out, lookup_out
from sealpost.server.handlers.prekeys import invalid_key, parse_prekeys
from sealpost.server.invites import parse_invite
from sealpost.server.requests import client_address, read_body
from sealpost.server.schema import (
    AccountLookup,
    AddDeviceRequest,
    DeviceOut,
    Registered,
    RegisterRequest,
    Removed,
    RemoveDeviceRequest,
    decode,
)
from sealpost.server.storage.base import (
    AccountExists,
    AccountRecord,
    DeviceExists,
    DeviceRecord,
    DeviceRevoked,
    InviteRefused,
    InviteUse,
    LastDevice,
    TooManyDevices,
    UnknownAccount,
    UnknownDevice,
    UsernameTaken,
)

__all__ = ["USERNAME_PATTERN", "AccountsApi"]

USERNAME_PATTERN = re.compile(r"[a-z0-9_.-]{3,32}")


def normalize_username(name: str) -> str | None:
    lower = name.lower()
    return lower if name.isascii() and USERNAME_PATTERN.fullmatch(lower) else None


def _certificate(raw: bytes, account_key: bytes | None) -> VerifiedDevice:
    try:
        cert = DeviceCertificate.decode(raw)
    except ProtocolError:
        raise invalid_key("certificate does not decode") from None
    try:
        return verify_certificate(cert, expected_account_key=account_key)
    except ProtocolError:
        raise invalid_key("certificate is not validly signed by the account key") from None


def devices_out(devices: list[DeviceRecord]) -> list[DeviceOut]:
    return [DeviceOut(device_id=d.device_id, certificate=d.certificate) for d in devices]


class AccountsApi:
    def __init__(
        self,
        ctx: Context,
        auth: Authenticator,
        log: LogService,
        on_revoke: Callable[[tuple[bytes, int]], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._auth = auth
        self._log = log
        self._on_revoke = on_revoke  # closes a removed device's connection

    async def _proven(self, request: Request, body: bytes, device: VerifiedDevice) -> None:
        """The request must be signed by the (new) device the certificate names."""
        headers = await self._auth.headers(request, required=True)
        assert headers is not None
        if headers.account_id != device.certificate.account_id:
            raise unauthorized("the request is not signed by the certified device")
        await self._auth.check(request, headers, hashlib.sha256(body).digest(), device.certificate)

    async def _invite(self, request: Request, doc: RegisterRequest) -> InviteUse | None:
        """What the server's ``registration`` mode asks of a registration: nothing (open),
        an invite code (invite; wrong ones are charged to the address, and past
        ``rate_invite_failures_per_address`` a minute refused before any check) or
        refusal (closed). The code itself goes no further than its :class:`InviteUse`."""
        mode = self._ctx.config.registration
        if mode == "closed":
            raise ApiError(403, "registration_closed", "this server registers no new accounts")
        if mode != "invite":
            return None
        if doc.invite is None:
            raise ApiError(403, "invite_required", "this server registers with an invite only")
        address = client_address(request)
        wait = await self._ctx.limits.invite_failures.blocked(address)
        if wait:
            raise rate_limited(wait)
        use = parse_invite(doc.invite, now=self._ctx.clock())
        if use is None:
            raise await self._wrong_invite(request)
        return use

    async def _wrong_invite(self, request: Request) -> ApiError:
        await self._ctx.limits.invite_failures.take(client_address(request))
        return ApiError(403, "invite_invalid", "that invite code is not valid (or used up)")

    async def register(self, request: Request) -> Response:
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_request)
        doc = decode(body, RegisterRequest)
        invite = await self._invite(request, doc)
        username = doc.username
        if normalize_username(username) is None:  # the schema's pattern already says so
            raise bad_request("username must be 3-32 characters of a-z 0-9 _ . -")
        account_key = doc.account_key
        device = _certificate(doc.certificate, account_key)
        prekeys = parse_prekeys(doc, device.signing_key, limit=cfg.max_prekeys)
        token = doc.delivery_token
        sealed = doc.sealed_from_anyone
        await self._proven(request, body, device)
        cert = device.certificate
        now = self._ctx.clock()
        try:
            await self._ctx.storage.create_account(
                AccountRecord(
                    cert.account_id,
                    username,
                    account_key,
                    hashlib.sha256(token).digest(),
                    sealed,
                    now,
                ),
                DeviceRecord(cert.account_id, cert.device_id, cert.encode(), now),
                prekeys,
                invite=invite,
            )
        except InviteRefused:
            raise await self._wrong_invite(request) from None
        except UsernameTaken:
            raise ApiError(409, "username_taken", "that username is taken") from None
        except AccountExists:
            raise ApiError(409, "account_exists", "that account id is registered") from None
        self._ctx.metrics.inc("sealpost_accounts_registered_total", "accounts registered")
        return json_response(
            Registered(account_id=cert.account_id.hex(), device_id=cert.device_id), 201
        )

    async def add_device(self, request: Request) -> Response:
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_request)
        doc = decode(body, AddDeviceRequest)
        try:
            account_id = DeviceCertificate.decode(doc.certificate).account_id
        except ProtocolError:
            raise invalid_key("certificate does not decode") from None
        account = await self._ctx.storage.account_by_id(account_id)
        if account is None:
            raise ApiError(404, "not_found", "no such account")
        device = _certificate(doc.certificate, account.account_key)
        prekeys = parse_prekeys(doc, device.signing_key, limit=cfg.max_prekeys)
        await self._proven(request, body, device)
        cert = device.certificate
        try:
            await self._ctx.storage.add_device(
                DeviceRecord(cert.account_id, cert.device_id, cert.encode(), self._ctx.clock()),
                prekeys,
                max_devices=cfg.max_devices,
            )
        except DeviceExists:
            raise ApiError(409, "device_exists", "that device id is registered") from None
        except DeviceRevoked:
            raise ApiError(409, "device_revoked", "that device id was revoked") from None
        except TooManyDevices:
            raise ApiError(
                409, "too_many_devices", f"an account has at most {cfg.max_devices} devices"
            ) from None
        except UnknownAccount:
            raise ApiError(404, "not_found", "no such account") from None
        return json_response(
            Registered(account_id=cert.account_id.hex(), device_id=cert.device_id), 201
        )

    async def remove_device(self, request: Request) -> Response:
        """``DELETE /v1/devices/{device_id}``, signed by a device of the account, with the
        account key's revocation of that device: the server cannot revoke on its own,
        and a revocation it did not get from the account's key does not exist."""
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_request)
        sender = await self._auth.authenticate(request, hashlib.sha256(body).digest())
        device_id = parse_device_id(request.path_params["device_id"])
        raw = decode(body, RemoveDeviceRequest).revocation
        account = await self._ctx.storage.account_by_id(sender.account_id)
        if account is None:
            raise unauthorized()
        try:
            revocation = DeviceRevocation.decode(raw)
            verify_revocation(revocation, expected_account_key=account.account_key)
        except ProtocolError:
            raise invalid_key("the revocation is not signed by the account key") from None
        if revocation.account_id != sender.account_id or revocation.device_id != device_id:
            raise bad_request("the revocation names another device")
        try:
            await self._ctx.storage.remove_device(sender.account_id, device_id, raw)
        except UnknownDevice:
            raise ApiError(404, "not_found", "no such device") from None
        except LastDevice:
            raise ApiError(409, "last_device", "the account's last device stays") from None
        if self._on_revoke is not None:
            self._on_revoke((sender.account_id, device_id))
        self._ctx.metrics.inc("sealpost_devices_removed_total", "devices revoked")
        return json_response(Removed(removed=device_id))

    async def lookup(self, request: Request) -> Response:
        """The account's current state, served from its newest key-transparency entry
        (the certificates and revocations that entry commits to), with the entry, its
        inclusion proof, its account-map proof (that it is the name's newest entry) and
        the signed tree head both are against: a client checks all of it before it
        encrypts to any of these devices. An unknown name is the 404 ``not_found`` error
        with a ``transparency`` object holding the head and the map's proof of absence."""
        lower = normalize_username(request.path_params["username"])
        if lower is None:
            raise ApiError(404, "not_found", "no such account")
        account = await self._ctx.storage.account_by_username(lower)
        found, head = await self._log.lookup(lower)
        if account is None and found.latest is not None:  # registered meanwhile
            account = await self._ctx.storage.account_by_username(lower)
        if found.latest is not None and found.latest.deletion:  # removed: its deletion proves it
            raise ApiError(
                404,
                "not_found",
                "no such account",
                extra={"transparency": msgspec.to_builtins(absence_out(found, head))},
            )
        if account is None or found.latest is None:
            if account is not None or found.latest is not None:  # logged with its creation
                raise ApiError(503, "unavailable", "the account is not in the log yet")
            raise ApiError(
                404,
                "not_found",
                "no such account",
                extra={"transparency": msgspec.to_builtins(absence_out(found, head))},
            )
        latest = found.latest
        devices = [
            DeviceOut(device_id=DeviceCertificate.decode(c).device_id, certificate=c)
            for c in latest.certificates
        ]
        transparency = lookup_out(found, head)
        assert transparency is not None  # found.latest is not None
        return json_response(
            AccountLookup(
                account_id=account.account_id.hex(),
                username=account.username,
                account_key=account.account_key,
                devices=sorted(devices, key=lambda d: d.device_id),
                revocations=list(latest.revocations),
                transparency=transparency,
            )
        )
