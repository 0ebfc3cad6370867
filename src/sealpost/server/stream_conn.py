"""A ``/v1/stream`` or ``/v1/sealed`` connection's parts, apart from the endpoint's handling
of them (:mod:`.stream`): the accepted socket (:class:`Socket`: its sends serialized,
written at once where the server can take them), a connection's state (:class:`Connection`:
kept small, a server holds tens of thousands, and its acks taken by its text hook as they
are parsed), how a client frame is read (:func:`read_frame`), and the two ways a frame
ends in other than a send (:class:`Close`, :class:`Refused`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from sealpost.server.acks import MAX_PENDING_ACKS, AckCommitter
from sealpost.server.connections import SEND_TEXTS
from sealpost.server.errors import ApiError
from sealpost.server.fanout.base import DeviceAddress
from sealpost.server.frames import AckFrame, AcksFrame, NumberedFrame
from sealpost.server.requests import client_address
from sealpost.server.schema import decoder, invalid
from sealpost.server.storage.base import StaleEpoch

__all__ = ["Close", "Connection", "Refused", "Socket", "acked", "read_frame"]

_ACK = decoder(AckFrame | AcksFrame)


class Close(Exception):
    """End the connection with WebSocket close ``code`` and ``reason`` (docs/PROTOCOL.md's
    close codes): raised by the handler, or given to :meth:`Connection.stop`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Refused(Exception):
    """A send frame that did not decode, answered with an error frame (not a close)."""

    def __init__(self, req: int, error: ApiError) -> None:
        super().__init__(error.message)
        self.req = req
        self.error = error


def read_frame(message: MutableMapping[str, Any], kind: Any, what: str) -> Any:
    """Decode a client frame as ``kind`` (:mod:`.frames`). A malformed frame closes the
    socket (4400); a send with a readable request number that fails only in its content
    is :class:`Refused`, so the client learns which send and which field."""
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise Close(4400, "expected a JSON text frame")
    try:
        return decoder(kind).decode(text)
    except msgspec.ValidationError as exc:
        try:
            numbered = decoder(NumberedFrame).decode(text)
        except (msgspec.DecodeError, RecursionError):
            raise Close(4400, f"expected {what}") from None
        if numbered.type not in ("send", "send_multi"):
            raise Close(4400, f"expected {what}") from None
        raise Refused(numbered.req, invalid(exc)) from None
    except (msgspec.DecodeError, RecursionError):  # also deep nesting, huge integers
        raise Close(4400, "malformed JSON") from None


class Socket:
    """One accepted WebSocket: its sends are serialized (push and answers share it).
    Frames go out at once through the server's :data:`~.connections.SEND_TEXTS` when it
    can take them and no ASGI send is waiting (which keeps their order), else by ASGI,
    one at a time (``lock``: made by the first send that must wait; most sockets never
    make one). ``peer``: the client's address (:func:`~.requests.client_address`), read
    once, not for each send (the sealed send limits are per address)."""

    __slots__ = ("fast", "lock", "peer", "ws")

    def __init__(self, ws: WebSocket, peer: str | None = None) -> None:
        self.ws = ws
        self.peer = client_address(ws) if peer is None else peer
        self.lock: asyncio.Lock | None = None
        self.fast: Callable[[Sequence[str]], bool] | None = ws.scope.get("extensions", {}).get(
            SEND_TEXTS
        )

    def waiting(self) -> bool:
        """Whether an ASGI send is under way or waits (then frames queue behind it)."""
        lock = self.lock
        return lock is not None and lock.locked()

    async def send(self, doc: dict[str, Any]) -> None:
        await self.send_text(json.dumps(doc))

    async def send_text(self, text: str) -> None:
        await self.send_texts((text,))

    async def send_texts(self, texts: Sequence[str]) -> None:
        fast = self.fast
        lock = self.lock
        if fast is not None and (lock is None or not lock.locked()) and fast(texts):
            return
        if lock is None:
            lock = self.lock = asyncio.Lock()
        async with lock:
            for text in texts:
                await self.ws.send_text(text)


class Connection:
    """One accepted socket's moving parts, kept small (a server holds tens of thousands):
    an idle connection costs one task, its handler, which reads the client's frames; the
    pusher and the answerer run only while there is something to do, and acks are taken
    by :meth:`on_text` as they are parsed and committed by the process's
    :class:`~.acks.AckCommitter` (an :class:`~.acks.Acking`). :meth:`stop` ends it from
    outside (another connection of the device displacing it, a failed pusher, answerer or
    commit of its acks, an idle timeout): the reading (:meth:`~.stream.StreamEndpoint._receive`) is
    interrupted and raises the reason."""

    __slots__ = (
        "acks",
        "address",
        "again",
        "answerer",
        "answers",
        "busy",
        "committer",
        "committing",
        "epoch",
        "fence",
        "idle",
        "last",
        "pending",
        "pusher",
        "reader",
        "reason",
        "room",
        "seen",
        "sock",
    )

    def __init__(
        self,
        sock: Socket,
        epoch: int = 0,
        address: DeviceAddress | None = None,
        committer: AckCommitter | None = None,
    ) -> None:
        self.sock = sock
        self.epoch = epoch
        self.address = address  # /v1/stream's device; None on /v1/sealed
        self.committer = committer
        self.reader: asyncio.Task[Any] | None = None  # the handler's task, while it reads
        self.busy = False  # the handler is at a frame (not waiting for the next)
        self.reason: BaseException | None = None  # why it was stopped
        # Acks (:class:`~.acks.Acking`): checked against ``fence``, the epoch, until the
        # client closes (then its acks are its own, whatever connection of it came since).
        self.fence: int | None = epoch
        self.acks: list[bytes] = []  # received, not yet queued to the storage
        self.pending = 0  # received, not yet committed
        self.committing: asyncio.Future[Any] | None = None
        # Sends in flight, oldest first (at most MAX_IN_FLIGHT + 1: a list, 56 bytes empty
        # where a deque is 600; idle connections are the many).
        self.answers: list[tuple[int, int, asyncio.Future[int]]] = []  # req, envelopes, stored
        self.answerer: asyncio.Task[None] | None = None
        self.room: asyncio.Future[None] | None = None  # a send waiting for fewer in flight
        self.pusher: asyncio.Task[None] | None = None  # pushing, while the queue is not empty
        self.again = False  # woken while pushing: read the queue once more
        self.idle = False  # "empty" was said since the last message pushed
        self.last = 0  # the sequence number of the last message pushed
        # The queue position a poll (:meth:`~.stream.StreamEndpoint._poll`) last woke it for: the
        # queue was read after that position was, so nothing up to it is left to push.
        self.seen = 0

    def stop(self, exc: BaseException) -> None:
        if self.reason is None:
            self.reason = exc
            if self.reader is not None:
                self.reader.cancel()

    def failed(self, task: asyncio.Task[None]) -> None:
        """A pusher or answerer ended: only a failure ends the connection."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.stop(exc)

    def ack_failed(self, exc: BaseException) -> None:
        if isinstance(exc, StaleEpoch):
            exc = Close(4409, "replaced by a newer connection of this device")
        self.stop(exc)

    def on_text(self, data: bytes | None) -> bool:
        """The socket's text hook (:data:`~.ws_protocol.ON_TEXT`), while its handler reads:
        take an ack frame, as :meth:`~.stream.StreamEndpoint._receive` would, without waking it.
        Anything else (a send, a frame that does not decode) is left to the handler, and
        so is an ack past :data:`~.acks.MAX_PENDING_ACKS` (its reader waits for room).
        ``None``: the client closed."""
        if self.reason is not None or self.committer is None:
            return False
        if data is None:
            self.fence = None
            return False
        if self.pending >= MAX_PENDING_ACKS:
            return False
        try:
            frame: AckFrame | AcksFrame = _ACK.decode(data)
        except (msgspec.DecodeError, RecursionError):
            return False
        ids = acked(frame)
        if self.pending + len(ids) > MAX_PENDING_ACKS:
            return False  # the reader waits for room, then takes it
        self.committer.add_all(self, ids)
        return True

    async def wind_down(self) -> None:
        tasks = [t for t in (self.answerer, self.pusher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.committer is not None:  # let the acks received reach the database
            await self.committer.drain(self)


def acked(frame: AckFrame | AcksFrame) -> list[bytes]:
    """The message ids an ``ack`` or ``acks`` frame acknowledges, in order."""
    if isinstance(frame, AckFrame):
        return [bytes.fromhex(frame.id)]
    return list(map(bytes.fromhex, frame.ids))  # no comprehension's frame: one an ack
