"""Checking signed requests against stored devices: the stateful half of the request
signature format, which :mod:`sealpost.protocol.signing` defines for client and server.

Order of checks, cheapest and least stateful first: the address's budget of failed
authentications, header syntax, clock window, device lookup, signature; then the account's
rate limit is charged, and only then the nonce is recorded. So a forged request never
writes anything and never costs the account it names: every failure is charged to the
client address that sent it (``rate_auth_failures_per_address``; past it, 429 before any
check). A replayed request is refused with ``replayed`` because its nonce is already
stored. Failures other than ``clock_skew`` and ``replayed`` are one opaque
``unauthorized``: nobody learns whether a device exists or which check failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from sealpost._errors import DecodeError, ProtocolError
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.signing import (
    AuthHeaders,
    MalformedAuth,
    parse_auth_headers,
    request_message_for_digest,
)
from sealpost.protocol.wire import DeviceCertificate
from sealpost.server.context import Context
from sealpost.server.errors import ApiError
from sealpost.server.requests import client_address, raw_target

__all__ = ["AuthenticatedDevice", "Authenticator"]


@dataclass(frozen=True, slots=True)
class AuthenticatedDevice:
    account_id: bytes
    device_id: int
    certificate: DeviceCertificate


def unauthorized(message: str = "request authentication failed") -> ApiError:
    return ApiError(401, "unauthorized", message)


def rate_limited(wait: float) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        "too many requests",
        headers={"Retry-After": str(max(1, int(wait + 0.999)))},
    )


class Authenticator:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def failed(self, conn: HTTPConnection, error: ApiError) -> ApiError:
        """Charge a failed authentication to the client's address; returns ``error``."""
        await self._ctx.limits.auth_failures.take(client_address(conn))
        return error

    async def headers(self, conn: HTTPConnection, *, required: bool) -> AuthHeaders | None:
        try:
            parsed = parse_auth_headers(conn.headers)
        except MalformedAuth as exc:
            wait = await self._ctx.limits.auth_failures.blocked(client_address(conn))
            if wait:
                raise rate_limited(wait) from None
            raise await self.failed(conn, unauthorized(str(exc))) from None
        if parsed is None and required:
            raise unauthorized("this request must be signed by a device")
        if parsed is not None:
            wait = await self._ctx.limits.auth_failures.blocked(client_address(conn))
            if wait:
                raise rate_limited(wait)
            now = self._ctx.clock()
            if abs(now - parsed.timestamp) > self._ctx.config.auth_window:
                raise await self.failed(
                    conn,
                    ApiError(401, "clock_skew", "request timestamp outside the allowed window"),
                )
        return parsed

    async def device_certificate(
        self, conn: HTTPConnection, headers: AuthHeaders
    ) -> DeviceCertificate:
        record = await self._ctx.storage.device(headers.account_id, headers.device_id)
        if record is None:
            raise await self.failed(conn, unauthorized())
        return DeviceCertificate.decode(record.certificate)

    async def check(
        self,
        conn: HTTPConnection,
        headers: AuthHeaders,
        body_sha256: bytes,
        certificate: DeviceCertificate,
    ) -> AuthenticatedDevice:
        """Verify the signature with ``certificate``'s signing key, charge the account's
        rate limit, then spend the nonce."""
        if certificate.account_id != headers.account_id or (
            certificate.device_id != headers.device_id
        ):
            raise await self.failed(conn, unauthorized())
        message = request_message_for_digest(
            conn.scope.get("method", "GET"),
            raw_target(conn),
            headers.timestamp_text,
            headers.nonce_text,
            body_sha256,
        )
        try:
            VerifyKey.from_public_bytes(certificate.signing_key).verify(headers.signature, message)
        except (DecodeError, ProtocolError):
            raise await self.failed(conn, unauthorized()) from None
        wait = await self._ctx.per_account.take(headers.account_id)  # it signed this: charge it
        if wait:
            raise rate_limited(wait)
        expires = max(headers.timestamp, self._ctx.clock()) + self._ctx.config.auth_window + 1
        if not await self._ctx.storage.use_nonce(headers.nonce, expires):
            raise await self.failed(
                conn, ApiError(401, "replayed", "this request nonce was already used")
            )
        return AuthenticatedDevice(headers.account_id, headers.device_id, certificate)

    async def authenticate(self, conn: HTTPConnection, body_sha256: bytes) -> AuthenticatedDevice:
        headers = await self.headers(conn, required=True)
        assert headers is not None
        certificate = await self.device_certificate(conn, headers)
        return await self.check(conn, headers, body_sha256, certificate)

    async def authenticate_optional(
        self, conn: HTTPConnection, body_sha256: bytes
    ) -> AuthenticatedDevice | None:
        headers = await self.headers(conn, required=False)
        if headers is None:
            return None
        certificate = await self.device_certificate(conn, headers)
        return await self.check(conn, headers, body_sha256, certificate)
