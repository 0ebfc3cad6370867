"""Device-link channels: the relay's part in linking a new device (like Signal's
provisioning socket). It only forwards opaque bytes between two devices and keeps nothing.

1. The new device opens the WebSocket ``/v1/link`` and sends ``{"type": "open", "kem":
   B64}`` (its ML-KEM-768 public key, 1184 bytes); the relay answers ``{"type":
   "channel", "id": HEX}`` (16 random bytes). The device shows a link code naming the
   channel and a hash of that key.
2. A device of the account fetches the key: ``GET /v1/link/{id}`` (signed) -> ``{"kem":
   B64}``, checks its hash against the code, and after its user confirms, sends the
   provisioning message: ``PUT /v1/link/{id}`` (signed, ``{"body": B64}``).
3. The relay writes ``{"type": "provision", "body": B64}`` to the waiting socket, closes it
   (1000), and only then answers the PUT (200). An unknown or expired channel is 404, a
   second PUT 409.

A channel lives ``link_key_ttl`` seconds until a device of the account fetches the key,
then up to ``link_ttl`` seconds from opening (then closed with 4408); at most
``max_link_channels`` at once on a process and ``link_channels_per_address`` per client
address on a process (more are refused before the upgrade, which the client sees as HTTP
403; the socket also counts against ``max_sockets_per_address``), and opening one counts
against the per-address rate limit like any connection. So nobody without an account can
hold the channels everyone needs for long.

Where channels are kept is :mod:`sealpost.server.links`: in this process's memory when it
serves alone, in the shared database when several processes do (PostgreSQL with Redis,
:mod:`sealpost.server.links.shared`), so that each of the three requests may reach any
process. Nothing about them is logged; what is kept, for a channel's few minutes only, is
the new device's public KEM key and the provisioning message, which is end-to-end
encrypted to the new device's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from sealpost.server.authn import Authenticator
from sealpost.server.codec import json_response, parse_hex
from sealpost.server.context import Context
from sealpost.server.errors import ApiError
from sealpost.server.frames import ChannelFrame, LinkOpenFrame, ProvisionFrame
from sealpost.server.links.base import (
    AlreadyProvisioned,
    DeviceGone,
    LinkChannel,
    LinkChannels,
    UnknownChannel,
)
from sealpost.server.requests import client_address, read_body
from sealpost.server.schema import Delivered, KemKey, ProvisionRequest, decode, encode
from sealpost.server.storage.base import StorageUnavailable

__all__ = ["LinkApi"]

CHANNEL_LEN = 16


async def _body_or_gone(websocket: WebSocket, channel: LinkChannel) -> bytes | None:
    """The provisioning message, or ``None`` as soon as the new device closes its socket
    (so a channel nobody waits on is freed at once, not when it expires). Raises
    ``TimeoutError`` when the channel expires."""
    body: asyncio.Future[bytes] = asyncio.ensure_future(channel.receive())
    receiver: asyncio.Future[Any] = asyncio.ensure_future(websocket.receive())
    try:
        await asyncio.wait({body, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (body, receiver):
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(BaseException):
                    await waiter
    if body.done() and not body.cancelled():
        return body.result()  # or its TimeoutError
    return None


class LinkApi:
    def __init__(self, ctx: Context, auth: Authenticator, channels: LinkChannels) -> None:
        self._ctx = ctx
        self._auth = auth
        self._channels = channels
        self._open = 0  # channels whose new device's socket this process holds

    async def handle(self, websocket: WebSocket) -> None:
        """``/v1/link``: the new device's end."""
        limits = self._ctx.limits
        address = client_address(websocket)
        with limits.sockets.hold(address) as socket_ok, limits.link_channels.hold(address) as ok:
            if not (socket_ok and ok):
                await websocket.close(code=4429)
                return
            await self._handle(websocket)

    async def _handle(self, websocket: WebSocket) -> None:
        ctx = self._ctx
        if await ctx.per_address.take(client_address(websocket)) or (
            self._open >= ctx.config.max_link_channels
        ):
            await websocket.close(code=4429)
            return
        self._open += 1
        try:
            await websocket.accept()
            await self._serve(websocket)
        except (TimeoutError, WebSocketDisconnect):
            pass
        except StorageUnavailable:  # the shared channels' database: the device tries again
            with contextlib.suppress(Exception):
                await websocket.close(code=1013, reason="storage is unavailable; retry")
        finally:
            self._open -= 1

    async def _serve(self, websocket: WebSocket) -> None:
        ctx = self._ctx
        async with asyncio.timeout(ctx.config.auth_handshake_timeout):
            message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        try:
            kem = decode(message.get("text") or "", LinkOpenFrame).kem
        except ApiError:  # also a binary frame
            await websocket.close(code=4400, reason="expected an open frame")
            return
        channel = await self._channels.open(ctx.rng(CHANNEL_LEN), kem)
        try:
            ctx.metrics.inc("sealpost_link_channels_total", "device-link channels opened")
            await websocket.send_text(encode(ChannelFrame(id=channel.channel_id.hex())).decode())
            try:
                body = await _body_or_gone(websocket, channel)
            except TimeoutError:
                await websocket.close(code=4408, reason="the link expired")
                return
            if body is None:  # the new device went away (or spoke out of turn)
                with contextlib.suppress(Exception):
                    await websocket.close(code=4400, reason="expected nothing until provision")
                return
            # If the new device went away meanwhile, this raises and the PUT learns it.
            await websocket.send_text(encode(ProvisionFrame(body=body)).decode())
            await websocket.close(code=1000)
            await channel.delivered()
        finally:
            await channel.close()

    @staticmethod
    def _channel_id(request: Request) -> bytes:
        return parse_hex(request.path_params["channel_id"], CHANNEL_LEN, "channel id")

    async def key(self, request: Request) -> Response:
        """``GET /v1/link/{id}`` (signed by a registered device)."""
        await self._auth.authenticate(request, hashlib.sha256(b"").digest())
        try:
            kem = await self._channels.key(self._channel_id(request))
        except UnknownChannel:
            raise _unknown() from None
        return json_response(KemKey(kem=kem))

    async def provision(self, request: Request) -> Response:
        """``PUT /v1/link/{id}`` (signed): forward the provisioning message."""
        body = await read_body(request, self._ctx.config.max_request)
        await self._auth.authenticate(request, hashlib.sha256(body).digest())
        channel_id = self._channel_id(request)
        message = decode(body, ProvisionRequest).body
        try:
            await self._channels.provision(channel_id, message)
        except UnknownChannel:
            raise _unknown() from None
        except AlreadyProvisioned:
            raise ApiError(409, "already_provisioned", "this link was already answered") from None
        except DeviceGone:
            raise ApiError(410, "gone", "the new device is no longer connected") from None
        with contextlib.suppress(Exception):
            self._ctx.metrics.inc("sealpost_devices_linked_total", "provisioning messages sent")
        return json_response(Delivered(delivered=True))


def _unknown() -> ApiError:
    return ApiError(404, "not_found", "no such link channel (or it expired)")
