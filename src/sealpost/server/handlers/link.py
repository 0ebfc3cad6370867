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

Channels live in memory only: ``link_key_ttl`` seconds until a device of the account
fetches the key, then up to ``link_ttl`` seconds from opening (then closed with 4408); at
most ``max_link_channels`` at once and ``link_channels_per_address`` per client address
(more are refused before the upgrade, which the client sees as HTTP 403; the socket also
counts against ``max_sockets_per_address``), and opening one counts against the
per-address rate limit like any connection. So nobody
without an account can hold the channels everyone needs for long. Nothing about them is
logged or stored; the provisioning message is end-to-end encrypted to the new device's
keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from sealpost.server.authn import Authenticator
from sealpost.server.codec import json_response, parse_hex
from sealpost.server.context import Context
from sealpost.server.errors import ApiError
from sealpost.server.frames import ChannelFrame, LinkOpenFrame, ProvisionFrame
from sealpost.server.requests import client_address, read_body
from sealpost.server.schema import Delivered, KemKey, ProvisionRequest, decode, encode

__all__ = ["LinkApi"]

CHANNEL_LEN = 16


@dataclass(slots=True)
class _Channel:
    kem: bytes
    deadline: float  # loop time at which it closes once its key was fetched
    body: asyncio.Future[bytes] = field(default_factory=lambda: asyncio.Future())
    delivered: asyncio.Future[None] = field(default_factory=lambda: asyncio.Future())
    timeout: asyncio.Timeout | None = None  # the wait for ``body``

    def fetched(self) -> None:
        """The key was fetched: the channel may now live until its full deadline."""
        if self.timeout is not None and not self.timeout.expired():
            self.timeout.reschedule(self.deadline)


async def _body_or_gone(websocket: WebSocket, channel: _Channel) -> bytes | None:
    """The provisioning message, or ``None`` as soon as the new device closes its socket
    (so a channel nobody waits on is freed at once, not when it expires)."""
    receiver: asyncio.Future[Any] = asyncio.ensure_future(websocket.receive())
    waiters: set[asyncio.Future[Any]] = {channel.body, receiver}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not receiver.done():
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver
    return channel.body.result() if channel.body.done() else None


class LinkApi:
    def __init__(self, ctx: Context, auth: Authenticator) -> None:
        self._ctx = ctx
        self._auth = auth
        self._channels: dict[bytes, _Channel] = {}

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
            len(self._channels) >= ctx.config.max_link_channels
        ):
            await websocket.close(code=4429)
            return
        await websocket.accept()
        channel_id = b""
        try:
            async with asyncio.timeout(ctx.config.auth_handshake_timeout):
                message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            try:
                kem = decode(message.get("text") or "", LinkOpenFrame).kem
            except ApiError:  # also a binary frame
                await websocket.close(code=4400, reason="expected an open frame")
                return
            channel_id = ctx.rng(CHANNEL_LEN)
            loop = asyncio.get_running_loop()
            channel = _Channel(kem, deadline=loop.time() + ctx.config.link_ttl)
            self._channels[channel_id] = channel
            ctx.metrics.inc("sealpost_link_channels_total", "device-link channels opened")
            await websocket.send_text(encode(ChannelFrame(id=channel_id.hex())).decode())
            unfetched = min(ctx.config.link_key_ttl, ctx.config.link_ttl)
            try:
                async with asyncio.timeout(unfetched) as channel.timeout:
                    body = await _body_or_gone(websocket, channel)
            except TimeoutError:
                await websocket.close(code=4408, reason="the link expired")
                return
            if body is None:  # the new device went away (or spoke out of turn)
                with contextlib.suppress(Exception):
                    await websocket.close(code=4400, reason="expected nothing until provision")
                return
            try:
                await websocket.send_text(encode(ProvisionFrame(body=body)).decode())
                await websocket.close(code=1000)
            except Exception as exc:  # the new device went away: the PUT learns it
                if not channel.delivered.done():
                    channel.delivered.set_exception(exc)
                raise
            if not channel.delivered.done():
                channel.delivered.set_result(None)
        except (TimeoutError, WebSocketDisconnect):
            pass
        finally:
            left = self._channels.pop(channel_id, None) if channel_id else None
            if left is not None and not left.delivered.done():
                left.delivered.set_exception(ConnectionError("the new device went away"))
                left.delivered.exception()  # retrieved: nobody may be waiting

    def _channel(self, request: Request) -> _Channel:
        channel_id = parse_hex(request.path_params["channel_id"], CHANNEL_LEN, "channel id")
        channel = self._channels.get(channel_id)
        if channel is None:
            raise ApiError(404, "not_found", "no such link channel (or it expired)")
        return channel

    async def key(self, request: Request) -> Response:
        """``GET /v1/link/{id}`` (signed by a registered device)."""
        await self._auth.authenticate(request, hashlib.sha256(b"").digest())
        channel = self._channel(request)
        channel.fetched()
        return json_response(KemKey(kem=channel.kem))

    async def provision(self, request: Request) -> Response:
        """``PUT /v1/link/{id}`` (signed): forward the provisioning message."""
        body = await read_body(request, self._ctx.config.max_request)
        await self._auth.authenticate(request, hashlib.sha256(body).digest())
        channel = self._channel(request)
        message = decode(body, ProvisionRequest).body
        if channel.body.done():
            raise ApiError(409, "already_provisioned", "this link was already answered")
        channel.body.set_result(message)
        try:
            await asyncio.wait_for(asyncio.shield(channel.delivered), timeout=10)
        except (TimeoutError, ConnectionError, OSError, WebSocketDisconnect):
            raise ApiError(410, "gone", "the new device is no longer connected") from None
        with contextlib.suppress(Exception):
            self._ctx.metrics.inc("sealpost_devices_linked_total", "provisioning messages sent")
        return json_response(Delivered(delivered=True))
