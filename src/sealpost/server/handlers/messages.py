"""Sending, fetching and acknowledging messages.

Sending (``PUT /v1/messages``) takes one envelope per destination device. It may be

- **sealed** (no authentication headers): the server does not learn the sender. For each
  destination account the request carries a delivery token in ``X-Sealpost-Delivery-Token``
  (``<account id hex>:<base64 32 bytes>``, comma separated for several accounts), checked
  in constant time against the SHA-256 stored at registration; or, without a token, the
  account must accept sealed messages from anyone (the default) and the request is counted
  against a per-address limit. A wrong token is refused whatever the flag says.
- **authenticated** (signed by a device): used for the sender's copies to its own other
  devices, where the server knows the sender anyway. The sending device is exempt from its
  own account's device list.

Every destination account must be named with exactly all its devices; otherwise nothing is
stored and the answer is 409 ``mismatched_devices`` with, per account, the missing and
extra device ids and the current certificates, so the client can refresh and retry.
The answer is sent only after the envelopes are committed to disk. Nothing about the sender
(address, account, timing beyond the queue's own ``received_at``) is stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sealpost.server.authn import Authenticator, rate_limited
from sealpost.server.codec import (
    b64,
    decode_b64,
    get_int,
    get_list,
    get_str,
    parse_hex,
    parse_json_object,
)
from sealpost.server.context import Context
from sealpost.server.errors import ApiError, bad_request, too_large
from sealpost.server.handlers.accounts import devices_json
from sealpost.server.requests import client_address, read_body
from sealpost.server.storage.base import (
    Envelope,
    MismatchedDevices,
    QueueFull,
    UnknownAccount,
)

__all__ = ["DELIVERY_TOKEN_HEADER", "MessagesApi", "parse_delivery_tokens"]

DELIVERY_TOKEN_HEADER = "X-Sealpost-Delivery-Token"  # noqa: S105 (a header name)
MESSAGE_ID_LEN = 16


def parse_delivery_tokens(value: str, limit: int) -> dict[bytes, bytes]:
    tokens: dict[bytes, bytes] = {}
    items = [item.strip() for item in value.split(",") if item.strip()]
    if len(items) > limit:
        raise too_large("too many delivery tokens")
    for item in items:
        account_hex, sep, token_b64 = item.partition(":")
        if not sep:
            raise bad_request(f"{DELIVERY_TOKEN_HEADER} entries are <account hex>:<base64>")
        token = decode_b64(token_b64, DELIVERY_TOKEN_HEADER)
        if len(token) != 32:
            raise bad_request("delivery tokens are 32 bytes")
        tokens[parse_hex(account_hex, 16, "delivery token account id")] = token
    return tokens


class MessagesApi:
    def __init__(self, ctx: Context, auth: Authenticator) -> None:
        self._ctx = ctx
        self._auth = auth

    def _envelopes(self, doc: dict[str, Any]) -> list[Envelope]:
        cfg = self._ctx.config
        items = get_list(doc, "messages", limit=cfg.max_envelopes)
        if not items:
            raise bad_request("messages must not be empty")
        seen: set[tuple[bytes, int]] = set()
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise bad_request("each message must be an object")
            account_id = parse_hex(get_str(item, "account_id"), 16, "account_id")
            device_id = get_int(item, "device_id")
            body = decode_b64(get_str(item, "body"), "body")
            if len(body) > cfg.max_envelope:
                raise too_large(f"an envelope is over {cfg.max_envelope} bytes")
            if not body:
                raise bad_request("an envelope body must not be empty")
            if (account_id, device_id) in seen:
                raise bad_request("a device is named twice")
            seen.add((account_id, device_id))
            out.append(Envelope(self._ctx.rng(MESSAGE_ID_LEN), account_id, device_id, body))
        return out

    async def _check_sealed(self, request: Request, accounts: set[bytes]) -> None:
        tokens = parse_delivery_tokens(
            request.headers.get(DELIVERY_TOKEN_HEADER, ""), self._ctx.config.max_envelopes
        )
        open_needed = False
        for account_id in accounts:
            account = await self._ctx.storage.account_by_id(account_id)
            if account is None:
                raise ApiError(404, "not_found", "no such account")
            token = tokens.get(account_id)
            if token is not None:
                digest = hashlib.sha256(token).digest()
                if not hmac.compare_digest(digest, account.delivery_token_hash):
                    raise ApiError(403, "forbidden", "delivery token rejected")
            elif account.sealed_from_anyone:
                open_needed = True
            else:
                raise ApiError(403, "forbidden", "recipient requires a delivery token")
        if open_needed:
            wait = self._ctx.sealed_per_address.take(client_address(request))
            if wait:
                raise rate_limited(wait)

    async def send(self, request: Request) -> Response:
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_message_request)
        sender = await self._auth.authenticate_optional(request, hashlib.sha256(body).digest())
        envelopes = self._envelopes(parse_json_object(body))
        accounts = {e.account_id for e in envelopes}
        exempt: dict[bytes, int] = {}
        if sender is None:
            await self._check_sealed(request, accounts)
        else:
            exempt[sender.account_id] = sender.device_id
        now = self._ctx.clock()
        try:
            await self._ctx.storage.enqueue(
                envelopes,
                exempt=exempt,
                received_at=now,
                expires_at=now + cfg.message_ttl,
                max_depth=cfg.max_queue_depth,
            )
        except UnknownAccount:
            raise ApiError(404, "not_found", "no such account") from None
        except QueueFull:
            raise ApiError(507, "queue_full", "a destination device's queue is full") from None
        except MismatchedDevices as exc:
            raise await self._mismatch(exc) from None
        await self._ctx.fanout.publish({(e.account_id, e.device_id) for e in envelopes})
        self._ctx.metrics.inc(
            "sealpost_messages_stored_total", "envelopes durably queued", len(envelopes)
        )
        return JSONResponse({"stored": len(envelopes)})

    async def _mismatch(self, exc: MismatchedDevices) -> ApiError:
        accounts = {}
        for account_id, (missing, extra) in exc.accounts.items():
            accounts[account_id.hex()] = {
                "missing": missing,
                "extra": extra,
                "devices": devices_json(await self._ctx.storage.devices(account_id)),
            }
        return ApiError(
            409,
            "mismatched_devices",
            "the device list is not the destination's current one",
            extra={"accounts": accounts},
        )

    async def fetch(self, request: Request) -> Response:
        device = await self._auth.authenticate(request, hashlib.sha256(b"").digest())
        limit = self._ctx.config.fetch_batch
        queued = await self._ctx.storage.fetch(
            device.account_id, device.device_id, after_seq=0, limit=limit + 1
        )
        return JSONResponse(
            {
                "messages": [
                    {"id": m.message_id.hex(), "body": b64(m.body), "received_at": m.received_at}
                    for m in queued[:limit]
                ],
                "more": len(queued) > limit,
            }
        )

    async def ack(self, request: Request) -> Response:
        device = await self._auth.authenticate(request, hashlib.sha256(b"").digest())
        message_id = parse_hex(request.path_params["message_id"], MESSAGE_ID_LEN, "message id")
        if not await self._ctx.storage.ack(device.account_id, device.device_id, message_id):
            raise ApiError(404, "not_found", "no such message in this device's queue")
        return Response(status_code=204)
