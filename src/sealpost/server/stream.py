"""The WebSocket a connected device receives its messages on: ``/v1/stream``.

Frames are JSON text. After the connection opens::

    server → {"type": "challenge", "challenge": B64(32 random bytes)}
    client → {"type": "auth", "account": HEX, "device": INT, "signature": B64}
    server → {"type": "ready"}                      (or closes with 4401)

then, in queue order, for every message queued for this device, including those that
arrived while it was offline::

    server → {"type": "message", "id": HEX, "body": B64, "received_at": INT}
    client → {"type": "ack", "id": HEX}             (deletes it from this device's queue)

A message is deleted only when this very device acks it; unacknowledged messages are sent
again on the next connection, so a client must treat ids it has seen as duplicates. Close
codes: 4400 malformed frame, 4401 authentication failed, 4408 no answer to the challenge in
time, 4429 rate limited, 1009 frame over the size limit (enforced by the protocol layer).

Pushing reads from storage (after the last sequence number sent) whenever the fanout says
the device's queue grew, so push order is queue order and a wake-up carries no content.
Acks arriving together are committed together (one group commit).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from sealpost._errors import ProtocolError
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.wire import DeviceCertificate
from sealpost.server.auth import websocket_message
from sealpost.server.context import Context
from sealpost.server.fanout.base import Subscription
from sealpost.server.requests import client_address

__all__ = ["StreamEndpoint"]

log = logging.getLogger("sealpost.server.stream")

CHALLENGE_LEN = 32
PUSH_BATCH = 100


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _frame(message: MutableMapping[str, Any]) -> dict[str, Any]:
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise _Close(4400, "expected a JSON text frame")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise _Close(4400, "malformed JSON") from None
    if not isinstance(doc, dict):
        raise _Close(4400, "a frame must be a JSON object")
    return doc


class StreamEndpoint:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def handle(self, websocket: WebSocket) -> None:
        ctx = self._ctx
        if ctx.per_address.take(client_address(websocket)):
            await websocket.close(code=4429)
            return
        await websocket.accept()
        ctx.metrics.inc("sealpost_websocket_connections_total", "WebSocket connections opened")
        try:
            account_id, device_id = await self._handshake(websocket)
            await websocket.send_text(json.dumps({"type": "ready"}))
            await self._serve(websocket, account_id, device_id)
        except _Close as close:
            with contextlib.suppress(Exception):
                await websocket.close(code=close.code, reason=close.reason)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("stream failed")  # a bug; the traceback holds no frame contents
            with contextlib.suppress(Exception):
                await websocket.close(code=1011)

    async def _handshake(self, websocket: WebSocket) -> tuple[bytes, int]:
        challenge = self._ctx.rng(CHALLENGE_LEN)
        await websocket.send_text(
            json.dumps({"type": "challenge", "challenge": base64.b64encode(challenge).decode()})
        )
        try:
            async with asyncio.timeout(self._ctx.config.auth_handshake_timeout):
                doc = _frame(await websocket.receive())
        except TimeoutError:
            raise _Close(4408, "no answer to the challenge") from None
        try:
            if doc.get("type") != "auth":
                raise ValueError
            account_id = bytes.fromhex(doc["account"])
            device_id = doc["device"]
            signature = base64.b64decode(doc["signature"], validate=True)
            if (
                len(account_id) != 16
                or not isinstance(device_id, int)
                or isinstance(device_id, bool)
                or not 0 <= device_id <= 0xFFFFFFFF
            ):
                raise ValueError
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise _Close(4400, "expected an auth frame") from None
        if self._ctx.per_account.take(account_id):
            raise _Close(4429, "rate limited")
        record = await self._ctx.storage.device(account_id, device_id)
        if record is None:
            raise _Close(4401, "authentication failed")
        cert = DeviceCertificate.decode(record.certificate)
        try:
            key = VerifyKey.from_public_bytes(cert.signing_key)
            key.verify(signature, websocket_message(challenge))
        except ProtocolError:
            raise _Close(4401, "authentication failed") from None
        return account_id, device_id

    async def _serve(self, websocket: WebSocket, account_id: bytes, device_id: int) -> None:
        subscription = self._ctx.fanout.subscribe((account_id, device_id))
        acks: asyncio.Queue[bytes] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._push(websocket, subscription, account_id, device_id)),
            asyncio.create_task(self._ack(acks, account_id, device_id)),
            asyncio.create_task(self._receive(websocket, acks)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise _Close / disconnect
        finally:
            subscription.close()
            tasks[0].cancel()
            tasks[2].cancel()
            # Let acks already received reach the database, then stop the acker.
            acks.put_nowait(b"")
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self, websocket: WebSocket, acks: asyncio.Queue[bytes]) -> None:
        while True:
            doc = _frame(await websocket.receive())
            if doc.get("type") != "ack" or not isinstance(doc.get("id"), str):
                raise _Close(4400, "expected an ack frame")
            try:
                message_id = bytes.fromhex(doc["id"])
            except ValueError:
                raise _Close(4400, "bad message id") from None
            if len(message_id) != 16:
                raise _Close(4400, "bad message id")
            acks.put_nowait(message_id)

    async def _ack(self, acks: asyncio.Queue[bytes], account_id: bytes, device_id: int) -> None:
        storage = self._ctx.storage
        while True:
            ids = [await acks.get()]
            while not acks.empty():
                ids.append(acks.get_nowait())
            stop = b"" in ids
            ids = [i for i in ids if i]
            if ids:
                await asyncio.gather(*(storage.ack(account_id, device_id, i) for i in ids))
                self._ctx.metrics.inc(
                    "sealpost_messages_acked_total", "messages acknowledged", len(ids)
                )
            if stop:
                return

    async def _push(
        self, websocket: WebSocket, subscription: Subscription, account_id: bytes, device_id: int
    ) -> None:
        storage = self._ctx.storage
        last = 0
        while True:
            subscription.clear()
            batch = await storage.fetch(account_id, device_id, after_seq=last, limit=PUSH_BATCH)
            if not batch:
                await subscription.wait()
                continue
            for message in batch:
                frame = {
                    "type": "message",
                    "id": message.message_id.hex(),
                    "body": base64.b64encode(message.body).decode(),
                    "received_at": message.received_at,
                }
                await websocket.send_text(json.dumps(frame))
                last = message.seq
            self._ctx.metrics.inc("sealpost_messages_pushed_total", "messages pushed", len(batch))
