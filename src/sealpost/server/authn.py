"""Checking signed requests against stored devices (the stateful half of :mod:`.auth`).

Order of checks, cheapest and least stateful first: header syntax, per-account rate, clock
window, device lookup, signature, and only then the nonce is recorded. So a forged request
never writes anything, and a replayed one is refused with ``replayed`` because its nonce is
already stored. Failures other than ``clock_skew`` and ``replayed`` are one opaque
``unauthorized``: nobody learns whether a device exists or which check failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from sealpost._errors import DecodeError, ProtocolError
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.wire import DeviceCertificate
from sealpost.server.auth import (
    AuthHeaders,
    MalformedAuth,
    parse_auth_headers,
    request_message_for_digest,
)
from sealpost.server.context import Context
from sealpost.server.errors import ApiError
from sealpost.server.requests import raw_target

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

    def headers(self, conn: HTTPConnection, *, required: bool) -> AuthHeaders | None:
        try:
            parsed = parse_auth_headers(conn.headers)
        except MalformedAuth as exc:
            raise unauthorized(str(exc)) from None
        if parsed is None and required:
            raise unauthorized("this request must be signed by a device")
        if parsed is not None:
            wait = self._ctx.per_account.take(parsed.account_id)
            if wait:
                raise rate_limited(wait)
            now = self._ctx.clock()
            if abs(now - parsed.timestamp) > self._ctx.config.auth_window:
                raise ApiError(401, "clock_skew", "request timestamp outside the allowed window")
        return parsed

    async def device_certificate(self, headers: AuthHeaders) -> DeviceCertificate:
        record = await self._ctx.storage.device(headers.account_id, headers.device_id)
        if record is None:
            raise unauthorized()
        return DeviceCertificate.decode(record.certificate)

    async def check(
        self,
        conn: HTTPConnection,
        headers: AuthHeaders,
        body_sha256: bytes,
        certificate: DeviceCertificate,
    ) -> AuthenticatedDevice:
        """Verify the signature with ``certificate``'s signing key, then spend the nonce."""
        if certificate.account_id != headers.account_id or (
            certificate.device_id != headers.device_id
        ):
            raise unauthorized()
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
            raise unauthorized() from None
        expires = max(headers.timestamp, self._ctx.clock()) + self._ctx.config.auth_window + 1
        if not await self._ctx.storage.use_nonce(headers.nonce, expires):
            raise ApiError(401, "replayed", "this request nonce was already used")
        return AuthenticatedDevice(headers.account_id, headers.device_id, certificate)

    async def authenticate(self, conn: HTTPConnection, body_sha256: bytes) -> AuthenticatedDevice:
        headers = self.headers(conn, required=True)
        assert headers is not None
        return await self.check(conn, headers, body_sha256, await self.device_certificate(headers))

    async def authenticate_optional(
        self, conn: HTTPConnection, body_sha256: bytes
    ) -> AuthenticatedDevice | None:
        headers = self.headers(conn, required=False)
        if headers is None:
            return None
        return await self.check(conn, headers, body_sha256, await self.device_certificate(headers))
