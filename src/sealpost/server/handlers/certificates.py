"""Sender certificates for sealed sender, signed by the server key.

A certificate binds account id, device id, device signing key and device identity key,
copied from the device's AIK-signed certificate, and expires after
``sender_certificate_ttl`` (24 h by default) so a device that is removed stops being
vouched for soon. The server learns only that a device asked for one, not to whom it will
send.
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import Response

from sealpost.protocol.sealed import SenderCertificate
from sealpost.server.authn import Authenticator
from sealpost.server.codec import json_response
from sealpost.server.context import Context
from sealpost.server.schema import PublicKey, SenderCertificateOut

__all__ = ["CertificatesApi"]


class CertificatesApi:
    def __init__(self, ctx: Context, auth: Authenticator) -> None:
        self._ctx = ctx
        self._auth = auth

    async def sender(self, request: Request) -> Response:
        device = await self._auth.authenticate(request, hashlib.sha256(b"").digest())
        cert = device.certificate
        expires = self._ctx.clock() + self._ctx.config.sender_certificate_ttl
        issued = SenderCertificate.issue(
            self._ctx.server_key,
            account_id=cert.account_id,
            device_id=cert.device_id,
            signing_key=cert.signing_key,
            identity_key=cert.identity_key,
            expires=expires,
        )
        return json_response(SenderCertificateOut(certificate=issued.encode(), expires=expires))

    async def server(self, request: Request) -> Response:
        key = self._ctx.server_key.public_key().public_bytes_raw()
        return json_response(PublicKey(public_key=key))
