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

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sealpost.protocol.group_sealed import GROUP_SEALED_MIN, GROUP_SEALED_PREFIX
from sealpost.protocol.sealed_multi import MULTI_SEALED_PREFIX, WRAP_LEN, assemble
from sealpost.server.authn import AuthenticatedDevice, Authenticator, rate_limited
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
    SharedEnvelope,
    UnknownAccount,
)

__all__ = [
    "DELIVERY_TOKEN_HEADER",
    "MessagesApi",
    "PreparedSend",
    "parse_delivery_tokens",
    "parse_token_object",
]

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


def parse_token_object(value: object, limit: int) -> dict[bytes, bytes]:
    """The WebSocket form of delivery tokens: ``{"<account id hex>": "<base64>", ...}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("tokens must be an object of account id hex to base64")
    if len(value) > limit:
        raise too_large("too many delivery tokens")
    tokens: dict[bytes, bytes] = {}
    for account_hex, token_b64 in value.items():
        if not isinstance(token_b64, str):
            raise bad_request("tokens must be an object of account id hex to base64")
        token = decode_b64(token_b64, "delivery token")
        if len(token) != 32:
            raise bad_request("delivery tokens are 32 bytes")
        tokens[parse_hex(account_hex, 16, "delivery token account id")] = token
    return tokens


@dataclass(frozen=True, slots=True)
class PreparedSend:
    """A checked send, ready to be stored: what :meth:`MessagesApi.submit` takes."""

    envelopes: list[Envelope]
    exempt: dict[bytes, int]
    #: A multi-recipient send: its body, stored once, and each device's own part.
    shared: tuple[bytes, list[SharedEnvelope]] | None = None


class MessagesApi:
    """Sends arrive over HTTP (``PUT /v1/messages``) or as ``send`` frames on a WebSocket
    (:mod:`sealpost.server.stream`); both go through :meth:`prepare` and :meth:`submit`."""

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
        total = 0
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
            total += len(body)
            if total > cfg.max_message_request:
                raise too_large(f"a send is over {cfg.max_message_request} bytes")
            if (account_id, device_id) in seen:
                raise bad_request("a device is named twice")
            seen.add((account_id, device_id))
            out.append(Envelope(self._ctx.rng(MESSAGE_ID_LEN), account_id, device_id, body))
        return out

    def _multi_envelopes(self, doc: dict[str, Any]) -> list[Envelope]:
        """A multi-recipient send. Either a group-sealed ``body`` (``0x01 0x23 ...``) and
        ``recipients`` as ``[account id hex, device id]``, each device storing the body as
        it is; or (the legacy form) a ``shared`` part and ``[account id hex, device id,
        48-byte wrap base64]``, each device storing ``0x01 0x22 || wrap || shared``."""
        cfg = self._ctx.config
        grouped = "body" in doc
        if grouped:
            body = decode_b64(get_str(doc, "body"), "body")
            if len(body) < GROUP_SEALED_MIN or body[:2] != GROUP_SEALED_PREFIX:
                raise bad_request("body is not a group-sealed envelope")
            if len(body) > cfg.max_envelope:
                raise too_large(f"an envelope is over {cfg.max_envelope} bytes")
            shape = "each recipient is [account id hex, device id]"
        else:
            shared = decode_b64(get_str(doc, "shared"), "shared")
            if len(shared) < 48:
                raise bad_request("shared is too short to be a sealed message")
            if len(shared) + 2 + WRAP_LEN > cfg.max_envelope:
                raise too_large(f"an envelope is over {cfg.max_envelope} bytes")
            shape = "each recipient is [account id hex, device id, wrap base64]"
        items = get_list(doc, "recipients", limit=cfg.max_multi_recipients)
        if not items:
            raise bad_request("recipients must not be empty")
        seen: set[tuple[bytes, int]] = set()
        out = []
        for item in items:
            if not isinstance(item, list) or len(item) != (2 if grouped else 3):
                raise bad_request(shape)
            account_hex, device_id = item[0], item[1]
            if not isinstance(account_hex, str):
                raise bad_request(shape)
            if not isinstance(device_id, int) or isinstance(device_id, bool):
                raise bad_request("device ids are integers")
            if not 0 <= device_id <= 0xFFFFFFFF:
                raise bad_request("device ids are unsigned 32-bit integers")
            account_id = parse_hex(account_hex, 16, "account_id")
            if grouped:
                stored = body
            else:
                if not isinstance(item[2], str):
                    raise bad_request(shape)
                wrap = decode_b64(item[2], "wrap")
                if len(wrap) != WRAP_LEN:
                    raise bad_request(f"a key wrap is {WRAP_LEN} bytes")
                stored = assemble(wrap, shared)
            if (account_id, device_id) in seen:
                raise bad_request("a device is named twice")
            seen.add((account_id, device_id))
            out.append(Envelope(self._ctx.rng(MESSAGE_ID_LEN), account_id, device_id, stored))
        return out

    async def prepare_multi(
        self, doc: dict[str, Any], *, tokens: dict[bytes, bytes], address: str
    ) -> PreparedSend:
        """A multi-recipient sealed send, authorized like a sealed one (per account: its
        delivery token, or its open flag). Raises :class:`ApiError`; stores nothing."""
        envelopes = self._multi_envelopes(doc)
        await self._check_sealed(tokens, {e.account_id for e in envelopes}, address)
        # Stored once for all: the group-sealed body as it is, or the legacy form's shared
        # part behind each device's own 0x01 0x22 || wrap.
        own = 0 if "body" in doc else len(MULTI_SEALED_PREFIX) + WRAP_LEN
        body = envelopes[0].body[own:]
        shared = [
            SharedEnvelope(e.message_id, e.account_id, e.device_id, e.body[:own]) for e in envelopes
        ]
        return PreparedSend(envelopes, {}, (body, shared))

    async def send_multi(self, request: Request) -> Response:
        """``PUT /v1/messages/multi``: the HTTP form of the ``send_multi`` frame."""
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_frame)
        doc = parse_json_object(body)
        tokens = parse_token_object(doc.get("tokens"), cfg.max_envelopes * 8)
        prepared = await self.prepare_multi(doc, tokens=tokens, address=client_address(request))
        return JSONResponse({"stored": await self.submit(prepared)})

    async def _check_sealed(
        self, tokens: dict[bytes, bytes], accounts: set[bytes], address: str
    ) -> None:
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
            wait = self._ctx.sealed_per_address.take(address)
            if wait:
                raise rate_limited(wait)

    async def prepare(
        self,
        doc: dict[str, Any],
        *,
        sender: AuthenticatedDevice | None,
        tokens: dict[bytes, bytes],
        address: str,
    ) -> PreparedSend:
        """Validate a send and authorize it: sealed (``sender`` is ``None``) by delivery
        token or the recipient's open flag, authenticated by the sender's own account.
        Raises :class:`ApiError`; stores nothing."""
        envelopes = self._envelopes(doc)
        exempt: dict[bytes, int] = {}
        if sender is None:
            await self._check_sealed(tokens, {e.account_id for e in envelopes}, address)
        else:
            exempt[sender.account_id] = sender.device_id
        return PreparedSend(envelopes, exempt)

    def submit(self, prepared: PreparedSend) -> asyncio.Task[int]:
        """Start storing a prepared send. Sends submitted one after another reach the
        database in that order (tasks start in creation order and hand their write to the
        single writer queue before their first suspension), so a connection can pipeline
        its sends without reordering them. The task's result is the number stored, once
        durable; it raises :class:`ApiError`."""
        return asyncio.create_task(self._store(prepared))

    async def _store(self, prepared: PreparedSend) -> int:
        cfg = self._ctx.config
        envelopes = prepared.envelopes
        now = self._ctx.clock()
        self._ctx.disk.check()
        try:
            if prepared.shared is not None:
                body, shared = prepared.shared
                await self._ctx.storage.enqueue_shared(
                    body,
                    shared,
                    received_at=now,
                    expires_at=now + cfg.message_ttl,
                    max_depth=cfg.max_queue_depth,
                    max_bytes=cfg.max_queue_bytes,
                )
            else:
                await self._ctx.storage.enqueue(
                    envelopes,
                    exempt=prepared.exempt,
                    received_at=now,
                    expires_at=now + cfg.message_ttl,
                    max_depth=cfg.max_queue_depth,
                    max_bytes=cfg.max_queue_bytes,
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
        return len(envelopes)

    async def send(self, request: Request) -> Response:
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_message_request)
        sender = await self._auth.authenticate_optional(request, hashlib.sha256(body).digest())
        tokens = {}
        if sender is None:
            tokens = parse_delivery_tokens(
                request.headers.get(DELIVERY_TOKEN_HEADER, ""), cfg.max_envelopes
            )
        prepared = await self.prepare(
            parse_json_object(body),
            sender=sender,
            tokens=tokens,
            address=client_address(request),
        )
        return JSONResponse({"stored": await self.submit(prepared)})

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
