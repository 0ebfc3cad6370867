"""Attachments: opaque encrypted blobs, uploaded by a device, fetched by anyone with the id.

The upload is signed like any request, but its body hash can only be known once the body
has streamed through: so the cheap checks (headers, clock, rate, device) run first, the
body is written to a temporary file while hashed, and only a valid signature over that hash
makes the blob visible. A bad signature or an oversize body leaves nothing behind.
Downloads need no authentication: the 32-byte random id is the capability, and the content
is ciphertext under a key only sender and recipients hold.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from sealpost.server.authn import Authenticator
from sealpost.server.blobs import ID_LEN, BlobTooLarge
from sealpost.server.codec import parse_hex
from sealpost.server.context import Context
from sealpost.server.errors import ApiError, too_large
from sealpost.server.storage.base import AttachmentRecord

__all__ = ["AttachmentsApi"]


class AttachmentsApi:
    def __init__(self, ctx: Context, auth: Authenticator) -> None:
        self._ctx = ctx
        self._auth = auth

    async def upload(self, request: Request) -> Response:
        cfg = self._ctx.config
        headers = self._auth.headers(request, required=True)
        assert headers is not None
        certificate = await self._auth.device_certificate(headers)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cfg.max_attachment:
            raise too_large(f"attachments are limited to {cfg.max_attachment} bytes")
        blob_id = self._ctx.rng(ID_LEN)
        try:
            pending = await self._ctx.blobs.receive(
                blob_id, request.stream(), limit=cfg.max_attachment
            )
        except BlobTooLarge:
            raise too_large(f"attachments are limited to {cfg.max_attachment} bytes") from None
        except ClientDisconnect:
            raise ApiError(400, "invalid_request", "client disconnected") from None
        try:
            await self._auth.check(request, headers, pending.sha256.digest(), certificate)
            pending.commit()
        except BaseException:
            pending.discard()
            raise
        now = self._ctx.clock()
        record = AttachmentRecord(blob_id, pending.size, now, now + cfg.attachment_ttl)
        try:
            await self._ctx.storage.add_attachment(record)
        except BaseException:
            self._ctx.blobs.delete(blob_id)
            raise
        self._ctx.metrics.inc("sealpost_attachments_stored_total", "attachments stored")
        return JSONResponse(
            {"id": blob_id.hex(), "size": record.size, "expires_at": record.expires_at},
            status_code=201,
        )

    async def download(self, request: Request) -> Response:
        blob_id = parse_hex(request.path_params["attachment_id"], ID_LEN, "attachment id")
        record = await self._ctx.storage.attachment(blob_id)
        path = self._ctx.blobs.path(blob_id)
        if record is None or record.expires_at <= self._ctx.clock() or not path.exists():
            raise ApiError(404, "not_found", "no such attachment")
        return FileResponse(path, media_type="application/octet-stream", filename=None)
