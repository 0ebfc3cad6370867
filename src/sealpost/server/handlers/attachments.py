"""Attachments: opaque encrypted blobs, uploaded by a device, fetched by anyone with the id.

Two ways to sign an upload. In both the request is authenticated (signature verified,
nonce spent) *before* a byte of its body is stored, so nobody without a device can make
the server write to disk; the blob store (:class:`~sealpost.server.blobs.BlobStore`)
receives the blob as a pending one while it is hashed, and it becomes visible only once its
SHA-256 is the one signed. A bad signature, an oversize or mismatching body, a body slower
than ``upload_timeout`` or a client that goes away leaves nothing behind (the pending blob
is discarded), and the blob counts against its account's
``max_attachment_bytes_per_account``. An upload whose pending blob was lost before it was
stored (removed as stale by another process sharing the store) is answered ``503
upload_lost`` and stores nothing:

``POST /v1/attachments``
    signed like any request: the signature header covers SHA-256(body), which the client
    also declares in ``X-Sealpost-Content-SHA256`` (64 hex digits), so the signature is
    checked against it first; the body's real digest must then match it (else 400).
``POST /v1/attachments?signature=trailer``
    for streaming clients (one pass over the file). The headers are signed as for an empty
    body, and are checked, nonce spent, *before* a byte is stored. The body is the blob
    followed by a 64-byte Ed25519 signature by the same device key over
    ``"sealpost/v1/attachment-trailer" 0x00 || request_message(POST, target, timestamp,
    nonce, SHA-256(blob))`` (:func:`sealpost.protocol.signing.trailer_message`), checked
    after the body. The context string keeps a trailer from ever verifying as a header
    signature or back.

Downloads need no authentication: the 32-byte random id is the capability, and the content
is ciphertext under a key only sender and recipients hold. They stream from the blob store
(:class:`~sealpost.server.blob_response.BlobResponse`: the size, one byte range).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from sealpost._errors import DecodeError, ProtocolError
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.signing import (
    DIGEST_HEADER,
    SIGNATURE_LEN,
    TRAILER_QUERY,
    trailer_message,
)
from sealpost.server.authn import Authenticator, unauthorized
from sealpost.server.blob_response import BlobResponse
from sealpost.server.blobs import ID_LEN, BlobLost, BlobTooLarge, PendingBlob
from sealpost.server.codec import json_response, parse_hex
from sealpost.server.context import Context
from sealpost.server.errors import ApiError, too_large
from sealpost.server.requests import body_too_slow, raw_target
from sealpost.server.schema import AttachmentStored
from sealpost.server.storage.base import AttachmentQuotaFull, AttachmentRecord

__all__ = ["AttachmentsApi"]

log = logging.getLogger("sealpost.server")

_EMPTY_SHA256: Final = hashlib.sha256(b"").digest()


class AttachmentsApi:
    def __init__(self, ctx: Context, auth: Authenticator) -> None:
        self._ctx = ctx
        self._auth = auth

    async def upload(self, request: Request) -> Response:
        cfg = self._ctx.config
        trailer = request.url.query == TRAILER_QUERY
        if request.url.query and not trailer:
            raise ApiError(400, "invalid_request", "unknown query")
        headers = await self._auth.headers(request, required=True)
        assert headers is not None
        certificate = await self._auth.device_certificate(request, headers)
        if trailer:  # the headers are signed on their own: check them before the body
            signed = _EMPTY_SHA256
        else:  # the signature covers the digest declared: check it before the body
            signed = parse_hex(request.headers.get(DIGEST_HEADER, ""), 32, DIGEST_HEADER)
        await self._auth.check(request, headers, signed, certificate)
        withhold = SIGNATURE_LEN if trailer else 0
        declared = request.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > cfg.max_attachment + withhold
        ):
            raise too_large(f"attachments are limited to {cfg.max_attachment} bytes")
        blob_id = self._ctx.rng(ID_LEN)
        try:
            async with asyncio.timeout(cfg.upload_timeout):
                pending = await self._ctx.blobs.receive(
                    blob_id, request.stream(), limit=cfg.max_attachment, withhold=withhold
                )
        except BlobTooLarge:
            raise too_large(f"attachments are limited to {cfg.max_attachment} bytes") from None
        except ClientDisconnect:
            raise ApiError(400, "invalid_request", "client disconnected") from None
        except TimeoutError:
            raise body_too_slow() from None
        try:
            if trailer:
                self._check_trailer(
                    request,
                    headers.timestamp_text,
                    headers.nonce_text,
                    pending,
                    certificate.signing_key,
                )
            elif not hmac.compare_digest(pending.digest, signed):
                raise ApiError(400, "invalid_request", f"the body does not match {DIGEST_HEADER}")
            await pending.commit()
        except BlobLost:
            await pending.discard()
            log.warning(
                "an upload's part vanished before it was stored (removed as stale by a"
                " process whose clock is ahead, or by hand); the upload was refused"
            )
            raise ApiError(
                503, "upload_lost", "the upload was lost before it was stored; upload it again"
            ) from None
        except BaseException:
            await pending.discard()
            raise
        now = self._ctx.clock()
        record = AttachmentRecord(
            blob_id, pending.size, now, now + cfg.attachment_ttl, owner=headers.account_id
        )
        try:
            await self._ctx.storage.add_attachment(
                record, max_owner_bytes=cfg.max_attachment_bytes_per_account
            )
        except AttachmentQuotaFull:
            await self._ctx.blobs.delete(blob_id)
            raise ApiError(
                507,
                "attachment_quota",
                f"an account may hold {cfg.max_attachment_bytes_per_account} bytes of"
                " attachments at once; older ones free their share when they expire",
            ) from None
        except BaseException:
            await self._ctx.blobs.delete(blob_id)
            raise
        self._ctx.metrics.inc("sealpost_attachments_stored_total", "attachments stored")
        return json_response(
            AttachmentStored(id=blob_id.hex(), size=record.size, expires_at=record.expires_at),
            201,
        )

    @staticmethod
    def _check_trailer(
        request: Request, timestamp: str, nonce: str, pending: PendingBlob, signing_key: bytes
    ) -> None:
        if len(pending.trailer) != SIGNATURE_LEN:
            raise ApiError(400, "invalid_request", "the body ends before its signature")
        message = trailer_message("POST", raw_target(request), timestamp, nonce, pending.digest)
        try:
            VerifyKey.from_public_bytes(signing_key).verify(pending.trailer, message)
        except (DecodeError, ProtocolError):
            raise unauthorized() from None

    async def download(self, request: Request) -> Response:
        blob_id = parse_hex(request.path_params["attachment_id"], ID_LEN, "attachment id")
        record = await self._ctx.storage.attachment(blob_id)
        if record is None or record.expires_at <= self._ctx.clock():
            raise ApiError(404, "not_found", "no such attachment")
        blob = await self._ctx.blobs.read(blob_id)
        if blob is None:  # expired and purged since the record was read
            raise ApiError(404, "not_found", "no such attachment")
        return BlobResponse(blob)
