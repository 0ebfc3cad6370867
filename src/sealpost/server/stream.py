"""The WebSockets: ``/v1/stream`` (a device's own, authenticated) and ``/v1/sealed``
(anonymous, for sealed sends). docs/PROTOCOL.md ("WebSocket frames") is the reference.

Frames are JSON text. ``/v1/stream`` opens with a challenge::

    server → {"type": "challenge", "challenge": B64(32 random bytes)}
    client → {"type": "auth", "account": HEX, "device": INT, "signature": B64}
    server → {"type": "ready"}                      (or closes with 4401)

then, in queue order, every message queued for this device, including those that arrived
while it was offline::

    server → {"type": "message", "id": HEX, "body": B64, "received_at": INT}
    client → {"type": "ack", "id": HEX}             (deletes it from this device's queue)
    server → {"type": "empty"}       (everything queued so far was pushed; again after
                                      each later burst)
    server → {"type": "prekeys_low"} (a bundle fetch left a one-time prekey stock under
                                      ``prekey_refill_below``: upload more now)

Either socket also takes sends, the same JSON as ``PUT /v1/messages`` plus a request number
the answer echoes. On ``/v1/stream`` they are authenticated as this device (copies to the
account's other devices); on ``/v1/sealed`` they are sealed and carry delivery tokens::

    client → {"type": "send", "req": INT, "messages": [...], "tokens": {HEX: B64, ...}}
    server → {"type": "sent", "req": INT, "stored": INT}      (once durably stored)
    server → {"type": "error", "req": INT, "error": CODE, "message": TEXT, ...}

A connection's sends are stored in the order sent, and answered in that order; a client
may pipeline up to ``MAX_IN_FLIGHT`` of them. A message is deleted only when this very
device acks it; unacknowledged messages are sent again on the next connection, so a client
must treat ids it has seen as duplicates. A second connection of the same device replaces
the first, which is closed with 4409. Close codes: 4400 malformed frame, 4401
authentication failed, 4403 the device was removed, 4408 no answer to the challenge in
time (or, on ``/v1/sealed``, no frame for ``sealed_idle_timeout`` seconds), 4409 replaced by
a newer connection of the same device, 4429 rate limited, 1009 frame over the size limit.
A socket refused before it is accepted (the per-address rate limit, or on ``/v1/sealed``
an address holding ``max_sockets_per_address`` sockets already) gets its upgrade
answered with HTTP 403 instead: no WebSocket close code can be sent before the accept.

Pushing reads from storage (after the last sequence number sent) whenever the fanout says
the device's queue grew, so push order is queue order and a wake-up carries no content.
Acks arriving together are committed together (one group commit).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import MutableMapping
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from sealpost._errors import ProtocolError
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.signing import websocket_message
from sealpost.protocol.wire import DeviceCertificate
from sealpost.server.authn import AuthenticatedDevice
from sealpost.server.context import Context
from sealpost.server.errors import ApiError
from sealpost.server.fanout.base import DeviceAddress, Subscription
from sealpost.server.frames import (
    SEALED_CLIENT_FRAMES,
    STREAM_CLIENT_FRAMES,
    AckFrame,
    AuthFrame,
    NumberedFrame,
    SendFrame,
    SendMultiFrame,
)
from sealpost.server.handlers.messages import MessagesApi, token_map
from sealpost.server.requests import client_address
from sealpost.server.schema import decoder, invalid
from sealpost.server.storage.base import StaleEpoch, StorageUnavailable

__all__ = ["StreamEndpoint", "message_text", "sent_text"]

log = logging.getLogger("sealpost.server.stream")

CHALLENGE_LEN = 32
PUSH_BATCH = 100
#: Sends a connection may have submitted and not yet answered; the next waits.
MAX_IN_FLIGHT = 64


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Refused(Exception):
    """A send frame that did not decode, answered with an error frame (not a close)."""

    def __init__(self, req: int, error: ApiError) -> None:
        super().__init__(error.message)
        self.req = req
        self.error = error


def _frame(message: MutableMapping[str, Any], kind: Any, what: str) -> Any:
    """Decode a client frame as ``kind`` (:mod:`.frames`). A malformed frame closes the
    socket (4400); a send with a readable request number that fails only in its content
    is :class:`_Refused`, so the client learns which send and which field."""
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise _Close(4400, "expected a JSON text frame")
    try:
        return decoder(kind).decode(text)
    except msgspec.ValidationError as exc:
        try:
            numbered = decoder(NumberedFrame).decode(text)
        except (msgspec.DecodeError, RecursionError):
            raise _Close(4400, f"expected {what}") from None
        if numbered.type not in ("send", "send_multi"):
            raise _Close(4400, f"expected {what}") from None
        raise _Refused(numbered.req, invalid(exc)) from None
    except (msgspec.DecodeError, RecursionError):  # also deep nesting, huge integers
        raise _Close(4400, "malformed JSON") from None


class _Socket:
    """One accepted WebSocket: its sends are serialized (push and answers share it)."""

    __slots__ = ("lock", "ws")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()

    async def send(self, doc: dict[str, Any]) -> None:
        await self.send_text(json.dumps(doc))

    async def send_text(self, text: str) -> None:
        async with self.lock:
            await self.ws.send_text(text)


class StreamEndpoint:
    def __init__(self, ctx: Context, messages: MessagesApi) -> None:
        self._ctx = ctx
        self._messages = messages
        # The connection holding each device's stream here, with its epoch, to close it
        # when the device connects again, here or (told by the fanout) on another process.
        self._current: dict[DeviceAddress, tuple[int, asyncio.Event]] = {}
        self._revoked: set[DeviceAddress] = set()  # closing because the device was removed
        self._sockets: dict[DeviceAddress, _Socket] = {}  # each device's current stream
        self._notices: set[asyncio.Task[None]] = set()
        ctx.fanout.on_displace(self._displaced_elsewhere)

    def prekeys_low(self, address: DeviceAddress) -> None:
        """A device's one-time prekeys run low: tell it, if connected, so it refills now
        rather than at its next hourly upkeep (``{"type": "prekeys_low"}``)."""
        sock = self._sockets.get(address)
        if sock is None:
            return
        task = asyncio.create_task(self._notify(sock))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    @staticmethod
    async def _notify(sock: _Socket) -> None:
        with contextlib.suppress(Exception):  # a socket closing: it refills on connecting
            await sock.send_text('{"type":"prekeys_low"}')

    def _displaced_elsewhere(self, address: DeviceAddress, epoch: int) -> None:
        current = self._current.get(address)
        if current is not None and current[0] < epoch:
            current[1].set()  # that connection closes itself with 4409

    def revoke(self, address: DeviceAddress) -> None:
        """A device was removed: close its stream (4403)."""
        current = self._current.get(address)
        if current is not None:
            self._revoked.add(address)
            current[1].set()

    async def _run(self, websocket: WebSocket, body: Any) -> None:
        ctx = self._ctx
        if ctx.per_address.take(client_address(websocket)):
            await websocket.close(code=4429)
            return
        await websocket.accept()
        ctx.metrics.inc("sealpost_websocket_connections_total", "WebSocket connections opened")
        try:
            await body(_Socket(websocket))
        except _Close as close:
            with contextlib.suppress(Exception):
                await websocket.close(code=close.code, reason=close.reason)
        except WebSocketDisconnect:
            pass
        except StorageUnavailable:  # 1013: try again later (on this or another process)
            with contextlib.suppress(Exception):
                await websocket.close(code=1013)
        except Exception:
            log.exception("stream failed")  # a bug; the traceback holds no frame contents
            with contextlib.suppress(Exception):
                await websocket.close(code=1011)

    async def handle(self, websocket: WebSocket) -> None:
        """``/v1/stream``: a device's authenticated connection."""

        async def body(sock: _Socket) -> None:
            device = await self._handshake(sock.ws)
            await sock.send({"type": "ready"})
            await self._serve(sock, device)

        await self._run(websocket, body)

    async def handle_sealed(self, websocket: WebSocket) -> None:
        """``/v1/sealed``: anonymous sends; nothing ties them to an account."""

        async def body(sock: _Socket) -> None:
            await self._serve_sealed(sock)

        with self._ctx.limits.sockets.hold(client_address(websocket)) as allowed:
            if not allowed:
                await websocket.close(code=4429)
                return
            await self._run(websocket, body)

    async def _handshake(self, websocket: WebSocket) -> AuthenticatedDevice:
        challenge = self._ctx.rng(CHALLENGE_LEN)
        await websocket.send_text(
            json.dumps({"type": "challenge", "challenge": base64.b64encode(challenge).decode()})
        )
        try:
            async with asyncio.timeout(self._ctx.config.auth_handshake_timeout):
                received = await websocket.receive()
        except TimeoutError:
            raise _Close(4408, "no answer to the challenge") from None
        try:
            auth: AuthFrame = _frame(received, AuthFrame, "an auth frame")
        except _Refused:
            raise _Close(4400, "expected an auth frame") from None
        account_id = bytes.fromhex(auth.account)
        device_id = auth.device
        signature = auth.signature
        # As for signed requests (:mod:`.authn`): failures cost the address, and the
        # account's rate limit is charged only once its device's signature verified.
        failures = self._ctx.limits.auth_failures
        address = client_address(websocket)
        if failures.blocked(address):
            raise _Close(4429, "rate limited")
        record = await self._ctx.storage.device(account_id, device_id)
        if record is None:
            failures.take(address)
            raise _Close(4401, "authentication failed")
        cert = DeviceCertificate.decode(record.certificate)
        try:
            key = VerifyKey.from_public_bytes(cert.signing_key)
            key.verify(signature, websocket_message(challenge))
        except ProtocolError:
            failures.take(address)
            raise _Close(4401, "authentication failed") from None
        if self._ctx.per_account.take(account_id):
            raise _Close(4429, "rate limited")
        return AuthenticatedDevice(account_id, device_id, cert)

    async def _serve(self, sock: _Socket, device: AuthenticatedDevice) -> None:
        address = (device.account_id, device.device_id)
        # A new epoch in the database: the fencing token of this connection. Acks of an
        # older connection of this device, on any process, are refused from now on.
        epoch = await self._ctx.storage.claim_device(*address)
        previous = self._current.get(address)
        if previous is not None:
            previous[1].set()  # that connection closes itself with 4409
        self._ctx.fanout.displace(address, epoch)
        fence: list[int | None] = [epoch]  # what acks are checked against (see below)
        displaced = asyncio.Event()
        mine = (epoch, displaced)
        self._current[address] = mine
        self._sockets[address] = sock
        subscription = self._ctx.fanout.subscribe(address)
        acks: asyncio.Queue[bytes] = asyncio.Queue()
        answers: asyncio.Queue[tuple[int, asyncio.Task[int]] | None] = asyncio.Queue(MAX_IN_FLIGHT)
        tasks = [
            asyncio.create_task(self._push(sock, subscription, address)),
            asyncio.create_task(self._receive(sock, acks, answers, device)),
            asyncio.create_task(self._answer(sock, answers)),
            asyncio.create_task(self._displaced(displaced, address)),
            asyncio.create_task(self._ack(acks, address, fence)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise _Close / disconnect
        except WebSocketDisconnect:
            # The client closed: the acks it sent first are its own, whatever connection
            # of it came since (they delete only what this device received).
            fence[0] = None
            raise
        finally:
            if self._current.get(address) is mine:
                del self._current[address]
            if self._sockets.get(address) is sock:
                del self._sockets[address]
            subscription.close()
            for task in tasks[:4]:
                task.cancel()
            # Let acks already received reach the database, then stop the acker.
            acks.put_nowait(b"")
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_sealed(self, sock: _Socket) -> None:
        answers: asyncio.Queue[tuple[int, asyncio.Task[int]] | None] = asyncio.Queue(MAX_IN_FLIGHT)
        acks: asyncio.Queue[bytes] = asyncio.Queue()  # never used: nothing to ack here
        seen = [asyncio.get_running_loop().time()]  # when the client last sent a frame
        tasks = [
            asyncio.create_task(self._receive(sock, acks, answers, None, seen)),
            asyncio.create_task(self._answer(sock, answers)),
            asyncio.create_task(self._idle(seen)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _idle(self, seen: list[float]) -> None:
        """Close a ``/v1/sealed`` socket whose client sent nothing for
        ``sealed_idle_timeout`` seconds. (A watchdog that sleeps, rather than a timeout
        around every receive: a timer armed and cancelled per frame cost about 6 us of CPU a
        frame under uvloop, against 3 to 4 us for the receive itself.)"""
        idle = self._ctx.config.sealed_idle_timeout
        loop = asyncio.get_running_loop()
        while (left := seen[0] + idle - loop.time()) > 0:
            await asyncio.sleep(left)
        raise _Close(4408, "idle for too long")

    async def _displaced(self, event: asyncio.Event, address: DeviceAddress) -> None:
        await event.wait()
        if address in self._revoked:
            self._revoked.discard(address)
            raise _Close(4403, "this device was removed from its account")
        raise _Close(4409, "replaced by a newer connection of this device")

    async def _receive(
        self,
        sock: _Socket,
        acks: asyncio.Queue[bytes],
        answers: asyncio.Queue[tuple[int, asyncio.Task[int]] | None],
        device: AuthenticatedDevice | None,
        seen: list[float] | None = None,
    ) -> None:
        """Read the client's frames; ``seen[0]`` is set to the loop time of each."""
        loop = asyncio.get_running_loop()
        kinds, what = (
            (SEALED_CLIENT_FRAMES, "a send frame")
            if device is None
            else (STREAM_CLIENT_FRAMES, "an ack or send frame")
        )
        while True:
            message = await sock.ws.receive()
            if seen is not None:
                seen[0] = loop.time()
            try:
                frame = _frame(message, kinds, what)
            except _Refused as refused:
                await sock.send(_error(refused.req, refused.error))
                continue
            if isinstance(frame, AckFrame):
                acks.put_nowait(bytes.fromhex(frame.id))
            else:
                await self._send(sock, frame, answers, device)

    async def _send(
        self,
        sock: _Socket,
        frame: SendFrame | SendMultiFrame,
        answers: asyncio.Queue[tuple[int, asyncio.Task[int]] | None],
        device: AuthenticatedDevice | None,
    ) -> None:
        req = frame.req
        multi = isinstance(frame, SendMultiFrame)
        ctx = self._ctx
        try:
            if device is None:
                address = client_address(sock.ws)
                wait = ctx.per_address.take(address)
                limit = ctx.config.max_multi_recipients if multi else ctx.config.max_envelopes
                tokens = token_map(frame.tokens, limit)
            else:
                address = ""
                wait = ctx.per_account.take(device.account_id)
                tokens = {}
            if wait:
                raise ApiError(
                    429, "rate_limited", "too many requests", extra={"retry_after": wait}
                )
            if isinstance(frame, SendMultiFrame):
                prepared = await self._messages.prepare_multi(frame, tokens=tokens, address=address)
            else:
                prepared = await self._messages.prepare(
                    frame, sender=device, tokens=tokens, address=address
                )
        except ApiError as exc:
            await sock.send(_error(req, exc))
            return
        await answers.put((req, self._messages.submit(prepared)))

    async def _answer(
        self, sock: _Socket, answers: asyncio.Queue[tuple[int, asyncio.Task[int]] | None]
    ) -> None:
        while True:
            item = await answers.get()
            if item is None:
                return
            req, task = item
            try:
                stored = await task
            except ApiError as exc:
                await sock.send(_error(req, exc))
            else:
                await sock.send_text(sent_text(req, stored))

    async def _ack(
        self, acks: asyncio.Queue[bytes], address: DeviceAddress, fence: list[int | None]
    ) -> None:
        storage = self._ctx.storage
        account_id, device_id = address
        while True:
            ids = [await acks.get()]
            while not acks.empty():
                ids.append(acks.get_nowait())
            stop = b"" in ids
            ids = [i for i in ids if i]
            if ids:
                try:
                    await storage.ack_all(account_id, device_id, ids, epoch=fence[0])
                except StaleEpoch:
                    raise _Close(4409, "replaced by a newer connection of this device") from None
                self._ctx.metrics.inc(
                    "sealpost_messages_acked_total", "messages acknowledged", len(ids)
                )
            if stop:
                return

    async def _push(
        self, sock: _Socket, subscription: Subscription, address: DeviceAddress
    ) -> None:
        storage = self._ctx.storage
        account_id, device_id = address
        last = 0
        idle = False
        while True:
            subscription.clear()
            batch = await storage.fetch(account_id, device_id, after_seq=last, limit=PUSH_BATCH)
            if not batch:
                if not idle:
                    await sock.send({"type": "empty"})
                    idle = True
                await subscription.wait()
                continue
            idle = False
            for message in batch:
                await sock.send_text(
                    message_text(message.message_id, message.body, message.received_at)
                )
                last = message.seq
            self._ctx.metrics.inc("sealpost_messages_pushed_total", "messages pushed", len(batch))


def message_text(message_id: bytes, body: bytes, received_at: int) -> str:
    """A :class:`~.frames.MessageFrame`, formatted by hand (the hottest frame): hex and
    base64 need no JSON escaping."""
    return (
        f'{{"type":"message","id":"{message_id.hex()}","body":"'
        f'{base64.b64encode(body).decode()}","received_at":{received_at}}}'
    )


def sent_text(req: int, stored: int) -> str:
    """A :class:`~.frames.SentFrame`, formatted by hand."""
    return f'{{"type":"sent","req":{req},"stored":{stored}}}'


def _error(req: int, exc: ApiError) -> dict[str, Any]:
    return {"type": "error", "req": req, "error": exc.code, "message": exc.message, **exc.extra}
