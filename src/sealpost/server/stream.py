"""The WebSockets: ``/v1/stream`` (a device's own, authenticated) and ``/v1/sealed``
(anonymous, for sealed sends). docs/PROTOCOL.md ("WebSocket frames") is the reference.

Frames are JSON text. ``/v1/stream`` opens with a challenge::

    server → {"type": "challenge", "challenge": B64(32 random bytes), "features": ["acks"]}
    client → {"type": "auth", "account": HEX, "device": INT, "signature": B64}
    server → {"type": "ready"}                      (or closes with 4401)

then, in queue order, every message queued for this device, including those that arrived
while it was offline::

    server → {"type": "message", "id": HEX, "body": B64, "received_at": INT}
    client → {"type": "ack", "id": HEX}             (deletes it from this device's queue)
    client → {"type": "acks", "ids": [HEX, ...]}    (the same for up to 256 at once)
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
the first, which is closed with 4409; each connection takes a new epoch for its device
(:meth:`~.storage.base.Storage.claim_device`), and its acks and sends carry it, so those
the first still makes (on another process, before it is told) are refused (a send stores
nothing and is not answered, an ack deletes nothing) and close it with 4409 too. Where the
telling is lost (Redis down), the fanout's poll finds the newer epoch in the database and
closes the first within ``poll_interval`` (:meth:`StreamEndpoint._poll`).

Close codes: 4400 malformed frame, 4401 authentication failed, 4403 the device was
removed, 4408 no answer to the challenge in time (or, on ``/v1/sealed``, no frame for
``sealed_idle_timeout`` seconds), 4409 replaced by a newer connection of the same device,
4429 rate limited, 1009 frame over the size limit.
A socket refused before it is accepted (the per-address rate limit, or on ``/v1/sealed``
an address holding ``max_sockets_per_address`` sockets already) gets its upgrade
answered with HTTP 403 instead: no WebSocket close code can be sent before the accept.

A connection's parts (its socket, its state, how a client frame is read) are
:mod:`.stream_conn`'s. Pushing (a device's queue, in queue order, whenever the fanout says
it grew) is :mod:`.push`'s: :class:`StreamEndpoint` has it from its base, :class:`~.push.Pushing`.
Acks are taken as the socket's frames are parsed, without waking the connection's task
(the protocol's text hook, :data:`~.ws_protocol.ON_TEXT`), and those of every connection
in one event-loop iteration are committed together (:mod:`.acks`). So are ``/v1/sealed``
sends whose checks are all answered from memory (:meth:`StreamEndpoint._sealed_text`);
the others are the handler's, in their turn.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from sealpost._errors import ProtocolError
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.signing import websocket_message
from sealpost.protocol.wire import DeviceCertificate
from sealpost.server.acks import MAX_PENDING_ACKS, AckCommitter
from sealpost.server.authn import AuthenticatedDevice
from sealpost.server.context import Context
from sealpost.server.errors import ApiError
from sealpost.server.fanout.base import DeviceAddress
from sealpost.server.frames import (
    ACKS_FEATURE,
    SEALED_CLIENT_FRAMES,
    STREAM_CLIENT_FRAMES,
    AckFrame,
    AcksFrame,
    AuthFrame,
    SendFrame,
    SendMultiFrame,
)
from sealpost.server.handlers.messages import MessagesApi, token_map
from sealpost.server.push import PUSH_BATCH as PUSH_BATCH  # importable here as before
from sealpost.server.push import Pushing, message_text
from sealpost.server.requests import client_address
from sealpost.server.schema import decoder
from sealpost.server.storage.base import (
    Fence,
    MismatchedDevices,
    StaleEpoch,
    StorageUnavailable,
)
from sealpost.server.stream_conn import Close, Connection, Refused, Socket, acked, read_frame
from sealpost.server.ws_protocol import ON_TEXT

__all__ = ["StreamEndpoint", "message_text", "sent_text"]

log = logging.getLogger("sealpost.server.stream")

CHALLENGE_LEN = 32
#: Sends a connection may have submitted and not yet answered; the next waits.
MAX_IN_FLIGHT = 64
#: Devices whose queue positions one query of the poll reads (:meth:`StreamEndpoint._poll`):
#: a primary key lookup each, 2,000 in about 12 ms of the database's time (100,000 devices
#: registered, on this 2-core machine shared with other work), so that no query holds a
#: pool connection long; 10,000 devices connected take 5 queries a poll.
POLL_BATCH = 2000
_SEND = decoder(SendFrame)


class StreamEndpoint(Pushing):
    def __init__(self, ctx: Context, messages: MessagesApi) -> None:
        self._ctx = ctx
        self._messages = messages
        # The connection holding each device's stream here, with its epoch, to close it
        # when the device connects again, here or (told by the fanout) on another process.
        self._current: dict[DeviceAddress, Connection] = {}
        self._notices: set[asyncio.Task[None]] = set()
        self._acks = AckCommitter(ctx.storage, ctx.metrics)
        ctx.fanout.on_displace(self._displaced_elsewhere)
        ctx.fanout.on_poll(self._poll)
        # Messages pushed: counted here (with the load spread over many devices, a push a
        # message), read by /metrics.
        self._pushed = 0
        ctx.metrics.counter("sealpost_messages_pushed_total", "messages pushed", self._count)

    def _count(self) -> int:
        return self._pushed

    def prekeys_low(self, address: DeviceAddress) -> None:
        """A device's one-time prekeys run low: tell it, if connected, so it refills now
        rather than at its next hourly upkeep (``{"type": "prekeys_low"}``)."""
        conn = self._current.get(address)
        if conn is None:
            return
        task = asyncio.create_task(self._notify(conn.sock))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    @staticmethod
    async def _notify(sock: Socket) -> None:
        with contextlib.suppress(Exception):  # a socket closing: it refills on connecting
            await sock.send_text('{"type":"prekeys_low"}')

    def _displaced_elsewhere(self, address: DeviceAddress, epoch: int) -> None:
        current = self._current.get(address)
        if current is not None and current.epoch < epoch:
            current.stop(Close(4409, "replaced by a newer connection of this device"))

    async def _poll(self) -> None:
        """The fanout's poll (where wake-ups and displacements can be lost: Redis): read
        the queue positions (:meth:`~.storage.base.Storage.queue_positions`) of every
        device connected here, :data:`POLL_BATCH` a query, and

        - close (4409) a connection whose epoch is older than the device's, as a
          displacement told over Redis would: a connection on another process took it;
        - wake one whose queue position is past both the last message pushed to it
          (``last``) and the position an earlier poll woke it for (``seen``).

        Nothing is missed for the filtering: a message committed before the read has a
        sequence number of at most its device's position, so, unless that position is past
        ``last`` and ``seen``, the message was pushed, or read by the pusher that an earlier
        poll's wake started or sent round once more (``again``), or is gone (acked, expired).
        One committed after the read is its publish's, or the next poll's. A device with no
        queue row (being removed) is woken, as every device was before."""
        current = self._current
        local = list(current.items())
        storage = self._ctx.storage
        for start in range(0, len(local), POLL_BATCH):
            chunk = local[start : start + POLL_BATCH]
            try:
                positions = await storage.queue_positions([address for address, _ in chunk])
            except StorageUnavailable:
                log.warning("poll: the database is not reachable; trying again next time")
                return
            for address, conn in chunk:
                if current.get(address) is not conn or conn.reason is not None:
                    continue  # gone, or replaced, meanwhile
                position = positions.get(address)
                if position is None:
                    self._wake(conn, address)
                elif position.epoch > conn.epoch:
                    conn.stop(Close(4409, "replaced by a newer connection of this device"))
                elif position.seq > conn.last and position.seq > conn.seen:
                    conn.seen = position.seq
                    self._wake(conn, address)

    def revoke(self, address: DeviceAddress) -> None:
        """A device was removed: close its stream (4403)."""
        current = self._current.get(address)
        if current is not None:
            current.stop(Close(4403, "this device was removed from its account"))

    def revoke_account(self, account_id: bytes) -> None:
        """An account was removed: close the streams of all its devices (4403)."""
        for address in [a for a in self._current if a[0] == account_id]:
            self.revoke(address)

    async def _run(self, websocket: WebSocket, serve: Callable[[Socket], Awaitable[None]]) -> None:
        ctx = self._ctx
        peer = client_address(websocket)
        if await ctx.per_address.take(peer):
            await websocket.close(code=4429)
            return
        await websocket.accept()
        # What follows needs only the peer's address (``scope["client"]``): the request
        # headers would be kept for the socket's life (about 1 KiB each).
        websocket.scope["headers"] = []
        ctx.metrics.inc("sealpost_websocket_connections_total", "WebSocket connections opened")
        try:
            await serve(Socket(websocket, peer))
        except Close as close:
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

    def handle(self, websocket: WebSocket) -> Awaitable[None]:
        """``/v1/stream``: a device's authenticated connection. (Not a coroutine itself:
        every coroutine frame on a connection's chain is kept for as long as it is open.)"""
        return self._run(websocket, self._serve)

    async def handle_sealed(self, websocket: WebSocket) -> None:
        """``/v1/sealed``: anonymous sends; nothing ties them to an account."""
        with self._ctx.limits.sockets.hold(client_address(websocket)) as allowed:
            if not allowed:
                await websocket.close(code=4429)
                return
            await self._run(websocket, self._serve_sealed)

    async def _handshake(self, websocket: WebSocket) -> AuthenticatedDevice:
        challenge = self._ctx.rng(CHALLENGE_LEN)
        await websocket.send_text(
            json.dumps(
                {
                    "type": "challenge",
                    "challenge": base64.b64encode(challenge).decode(),
                    "features": [ACKS_FEATURE],
                }
            )
        )
        try:
            async with asyncio.timeout(self._ctx.config.auth_handshake_timeout):
                received = await websocket.receive()
        except TimeoutError:
            raise Close(4408, "no answer to the challenge") from None
        try:
            auth: AuthFrame = read_frame(received, AuthFrame, "an auth frame")
        except Refused:
            raise Close(4400, "expected an auth frame") from None
        account_id = bytes.fromhex(auth.account)
        device_id = auth.device
        signature = auth.signature
        # As for signed requests (:mod:`.authn`): failures cost the address, and the
        # account's rate limit is charged only once its device's signature verified.
        failures = self._ctx.limits.auth_failures
        address = client_address(websocket)
        if await failures.blocked(address):
            raise Close(4429, "rate limited")
        record = await self._ctx.storage.device(account_id, device_id)
        if record is None:
            await failures.take(address)
            raise Close(4401, "authentication failed")
        cert = DeviceCertificate.decode(record.certificate)
        try:
            key = VerifyKey.from_public_bytes(cert.signing_key)
            key.verify(signature, websocket_message(challenge))
        except ProtocolError:
            await failures.take(address)
            raise Close(4401, "authentication failed") from None
        if await self._ctx.per_account.take(account_id):
            raise Close(4429, "rate limited")
        return AuthenticatedDevice(account_id, device_id, cert)

    async def _serve(self, sock: Socket) -> None:
        device = await self._handshake(sock.ws)
        await sock.send({"type": "ready"})
        address = (device.account_id, device.device_id)
        # A new epoch in the database: the fencing token of this connection. Acks and sends
        # of an older connection of this device, on any process, are refused from now on.
        epoch = await self._ctx.storage.claim_device(*address)
        conn = Connection(sock, epoch, address, self._acks)
        previous = self._current.get(address)
        if previous is not None:
            previous.stop(Close(4409, "replaced by a newer connection of this device"))
        self._ctx.fanout.displace(address, epoch)
        self._current[address] = conn
        subscription = self._ctx.fanout.subscribe(address, partial(self._wake, conn, address))
        self._wake(conn, address)  # what was queued while it was away
        try:
            await self._receive(conn, device)
        except WebSocketDisconnect:
            # The client closed: the acks it sent first are its own, whatever connection
            # of it came since (they delete only what this device received).
            conn.fence = None
            raise
        finally:
            if self._current.get(address) is conn:
                del self._current[address]
            subscription.close()
            await conn.wind_down()  # the acks already received reach the database

    async def _serve_sealed(self, sock: Socket) -> None:
        conn = Connection(sock)
        loop = asyncio.get_running_loop()
        seen = [loop.time()]  # when the client last sent a frame
        idle = self._ctx.config.sealed_idle_timeout
        timer: list[asyncio.TimerHandle | None] = [None]

        def watch() -> None:
            """Close a ``/v1/sealed`` socket whose client sent nothing for
            ``sealed_idle_timeout`` seconds: one timer that re-arms itself for when the
            socket would next be idle that long (a timeout around every receive cost about
            6 us of CPU a frame under uvloop, against 3 to 4 us for the receive itself)."""
            left = seen[0] + idle - loop.time()
            if left > 0:
                timer[0] = loop.call_later(left, watch)
            else:
                conn.stop(Close(4408, "idle for too long"))

        watch()
        try:
            await self._receive(conn, None, seen)
        finally:
            if timer[0] is not None:
                timer[0].cancel()
            await conn.wind_down()

    async def _receive(
        self,
        conn: Connection,
        device: AuthenticatedDevice | None,
        seen: list[float] | None = None,
    ) -> None:
        """Read the client's frames until it disconnects, a frame closes the socket, or
        :meth:`Connection.stop` interrupts the reading (then raise the reason given);
        ``seen[0]`` is set to the loop time of each frame. Acks are taken by the socket's
        text hook while it has one (:meth:`Connection.on_text`), else here, and committed
        by the :class:`~.acks.AckCommitter`; answers are sent by an answerer that runs
        while sends are in flight: an idle connection holds none."""
        loop = asyncio.get_running_loop()
        kinds, what = (
            (SEALED_CLIENT_FRAMES, "a send frame")
            if device is None
            else (STREAM_CLIENT_FRAMES, "an ack or send frame")
        )
        sock = conn.sock
        task = asyncio.current_task()
        assert task is not None
        conn.reader = task
        hook: Callable[[Callable[[bytes | None], bool] | None], None] | None = None
        if conn.committer is not None:
            hook = sock.ws.scope.get("extensions", {}).get(ON_TEXT)
            if hook is not None:
                hook(conn.on_text)
        elif device is None and seen is not None:
            hook = sock.ws.scope.get("extensions", {}).get(ON_TEXT)
            if hook is not None:
                hook(partial(self._sealed_text, conn, seen))
        try:
            while conn.reason is None:
                conn.busy = False
                message = await sock.ws.receive()
                conn.busy = True
                if seen is not None:
                    seen[0] = loop.time()
                try:
                    frame = read_frame(message, kinds, what)
                except Refused as refused:
                    await self._refuse(conn, refused.req, refused.error)
                    continue
                if isinstance(frame, AckFrame | AcksFrame):
                    committer = conn.committer
                    assert committer is not None
                    ids = acked(frame)
                    if conn.pending + len(ids) > MAX_PENDING_ACKS:
                        # The hook's frames wait behind this one, in the inbox, meanwhile.
                        if hook is not None:
                            hook(None)
                        await committer.room(conn, len(ids))
                        if hook is not None:
                            hook(conn.on_text)
                    committer.add_all(conn, ids)
                else:
                    await self._send(conn, frame, device)
        except asyncio.CancelledError:
            if conn.reason is None:
                raise  # not ours: the server is shutting down
            task.uncancel()
        finally:
            conn.reader = None
            if hook is not None:
                hook(None)
        assert conn.reason is not None
        raise conn.reason

    async def _send(
        self,
        conn: Connection,
        frame: SendFrame | SendMultiFrame,
        device: AuthenticatedDevice | None,
    ) -> None:
        req = frame.req
        multi = isinstance(frame, SendMultiFrame)
        ctx = self._ctx
        sock = conn.sock
        try:
            # Each take answered from memory where it can be, without a coroutine.
            if device is None:
                address = sock.peer
                wait = ctx.per_address.take_now(address)
                if wait is None:
                    wait = await ctx.per_address.take(address)
                limit = ctx.config.max_multi_recipients if multi else ctx.config.max_envelopes
                tokens = token_map(frame.tokens, limit)
            else:
                address = ""
                wait = ctx.per_account.take_now(device.account_id)
                if wait is None:
                    wait = await ctx.per_account.take(device.account_id)
                tokens = {}
            if wait:
                raise _too_many(wait)
            if isinstance(frame, SendMultiFrame):
                prepared = await self._messages.prepare_multi(frame, tokens=tokens, address=address)
            else:
                prepared = await self._messages.prepare(
                    frame, sender=device, tokens=tokens, address=address
                )
        except ApiError as exc:
            await self._refuse(conn, req, exc)
            return
        # On /v1/stream, stored only while this connection's epoch is the device's: a send
        # of a connection that a newer one replaced is refused, on whatever process it is
        # (StaleEpoch, closing it with 4409 in ``_answer``), even before it hears of it.
        fence = None if device is None else Fence(device.account_id, device.device_id, conn.epoch)
        stored = self._messages.store(prepared, fence=fence)
        self._await_answer(conn, req, len(prepared.envelopes), stored)
        if len(conn.answers) > MAX_IN_FLIGHT:  # the next send waits for an answer
            conn.room = asyncio.get_running_loop().create_future()
            await conn.room

    async def _refuse(self, conn: Connection, req: int, error: ApiError) -> None:
        """Answer a send refused before it was stored (its frame's content, a rate limit,
        its authorization): at once if no send before it waits for its answer, else after
        theirs, so that every answer comes in the order of the sends."""
        if conn.answerer is None and not conn.answers:
            await conn.sock.send(_error(req, error))
            return
        self._refuse_later(conn, req, error)

    def _refuse_later(self, conn: Connection, req: int, error: ApiError) -> None:
        """Queue the refusal of send ``req``: answered after the sends before it."""
        refused: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        refused.set_exception(error)
        self._await_answer(conn, req, 0, refused)

    def _sealed_text(self, conn: Connection, seen: list[float], data: bytes | None) -> bool:
        """``/v1/sealed``'s text hook (:data:`~.ws_protocol.ON_TEXT`), while its handler
        waits for a frame: a ``send`` whose checks are all answered from memory (its
        recipients' account records, this process's own limits:
        :meth:`~.handlers.messages.MessagesApi.sealed_known`) is checked, charged and
        submitted here as the socket's frames are parsed, as :meth:`_send` does, without
        waking the handler (its receive, and a coroutine for the send and each check).
        Everything else is left to the handler, untouched: a frame that does not decode
        as a send (it closes the socket or refuses the send), a multi-recipient send, a
        recipient not in memory, a connection at :data:`MAX_IN_FLIGHT` (the handler waits
        for room). Its answer, or refusal, comes in order after the sends before it."""
        if data is None or conn.reason is not None or conn.busy:
            return False
        if len(conn.answers) >= MAX_IN_FLIGHT:
            return False
        try:
            frame: SendFrame = _SEND.decode(data)
        except (msgspec.DecodeError, RecursionError):
            return False
        messages = self._messages
        accounts = messages.sealed_known(frame)
        if accounts is None:
            return False
        ctx = self._ctx
        seen[0] = asyncio.get_running_loop().time()
        address = conn.sock.peer
        try:
            try:
                wait = ctx.per_address.take_now(address)
                if wait is None:  # not this process's own limit: sealed_known said so
                    raise RuntimeError("the per-address limit is not answered from memory")
                tokens = token_map(frame.tokens, ctx.config.max_envelopes)  # as _send: first
                if wait:
                    raise _too_many(wait)
                prepared = messages.prepare_now(
                    frame, tokens=tokens, address=address, accounts=accounts
                )
            except ApiError as exc:
                self._refuse_later(conn, frame.req, exc)
                return True
            stored = messages.store(prepared)
            self._await_answer(conn, frame.req, len(prepared.envelopes), stored)
        except Exception as exc:  # a bug: the connection ends, as it would in its handler
            conn.stop(exc)
        return True

    def _await_answer(
        self, conn: Connection, req: int, envelopes: int, stored: asyncio.Future[int]
    ) -> None:
        """Queue the answer to send ``req`` after those before it: ``sent`` once ``stored``
        is done, or its refusal; the answerer runs while any wait."""
        conn.answers.append((req, envelopes, stored))
        if conn.answerer is None:
            conn.answerer = asyncio.create_task(self._answer(conn))
            conn.answerer.add_done_callback(conn.failed)

    async def _answer(self, conn: Connection) -> None:
        """Answer the connection's sends in the order they came, each once stored: woken
        when the oldest is stored (a group commit stores many at once), it answers every
        send stored by then, in order, in one write. A send refused for a stale epoch (a
        newer connection of the device took over) closes the connection with 4409,
        unanswered, as a stale ack does; a failing database ends the connection."""
        sock = conn.sock
        answers = conn.answers
        loop = asyncio.get_running_loop()
        try:
            while answers:
                stored = answers[0][2]
                if not stored.done():
                    # Not the storage's future itself: cancelling this task (the connection
                    # ends) must not cancel it, which would lose its devices' wake-up.
                    waiter = loop.create_future()
                    stored.add_done_callback(partial(_resolve, waiter))
                    await waiter
                texts = []
                while answers and (stored := answers[0][2]).done():
                    req, envelopes, _ = answers.pop(0)
                    exc = stored.exception()
                    if exc is None:
                        texts.append(sent_text(req, envelopes))
                        continue
                    refusal = self._messages.refusal(exc)
                    if refusal is None:
                        if texts:  # the answers before it go out first
                            await sock.send_texts(texts)
                            texts = []
                        if isinstance(exc, StaleEpoch):
                            raise Close(4409, "replaced by a newer connection of this device")
                        if not isinstance(exc, MismatchedDevices):
                            raise exc
                        refusal = await self._messages.mismatch(exc)
                    texts.append(json.dumps(_error(req, refusal)))
                room = conn.room
                if room is not None and not room.done():
                    room.set_result(None)
                if texts:
                    await sock.send_texts(texts)
        finally:
            conn.answerer = None


def sent_text(req: int, stored: int) -> str:
    """A :class:`~.frames.SentFrame`, formatted by hand."""
    return f'{{"type":"sent","req":{req},"stored":{stored}}}'


def _resolve(waiter: asyncio.Future[None], done: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _too_many(wait: float) -> ApiError:
    return ApiError(429, "rate_limited", "too many requests", extra={"retry_after": wait})


def _error(req: int, exc: ApiError) -> dict[str, Any]:
    return {"type": "error", "req": req, "error": exc.code, "message": exc.message, **exc.extra}
