"""The lighter WebSocket protocol (:mod:`sealpost.server.ws_protocol`): its two stand-ins
behave as the asyncio queue and event they replace; reading pauses only past the inbox's
bound, and a blocked handler still stops it; the text hook keeps the frames' order; and
the server uses it with the uvicorn installed (an upgrade that renamed what it relies on
would show here, and would get uvicorn's own class)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from sealpost.server.ws_protocol import (
    FRAME_COST,
    ON_TEXT,
    READ_AHEAD,
    Inbox,
    LeanWebSocketProtocol,
    Writable,
    websocket_protocol,
)


def test_the_inbox_hands_out_frames_in_order_and_waits_for_the_next() -> None:
    async def run() -> list[object]:
        inbox = Inbox()
        inbox.put_nowait(1)
        inbox.put_nowait(2)
        assert inbox.qsize() == 2 and not inbox.empty()
        got = [await inbox.get(), await inbox.get()]
        assert inbox.empty()
        waiting = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing there: it waits
        inbox.put_nowait(3)
        got.append(await asyncio.wait_for(waiting, 1))
        cancelled = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        cancelled.cancel()  # a reader cancelled while waiting leaves no stale waiter
        await asyncio.gather(cancelled, return_exceptions=True)
        inbox.put_nowait(4)
        got.append(await inbox.get())
        return got

    assert asyncio.run(run()) == [1, 2, 3, 4]


def test_writable_holds_writers_while_the_transport_is_full() -> None:
    async def run() -> None:
        writable = Writable()
        assert writable.is_set()
        await asyncio.wait_for(writable.wait(), 1)  # set: no wait
        writable.clear()
        writers = [asyncio.create_task(writable.wait()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in writers)
        writable.set()
        await asyncio.wait_for(asyncio.gather(*writers), 1)

    asyncio.run(run())


def test_the_server_runs_the_lean_protocol_with_this_uvicorn() -> None:
    assert websocket_protocol() is LeanWebSocketProtocol


# -- the protocol itself, driven by a client's bytes ---------------------------------------


class _Transport(asyncio.Transport):
    """What the protocol writes, and whether it asked to stop reading."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False
        self.resumes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8765)}.get(
            name, default
        )


class _Peer:
    """A client (websockets' sans-I/O one) talking to a :class:`LeanWebSocketProtocol`
    that runs ``app``, on a :class:`_Transport`."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        config = Config(app=app, ws_max_size=1 << 20, ws_ping_interval=None, log_level="error")
        config.load()
        self.protocol = LeanWebSocketProtocol(config, ServerState(), {})
        self.transport = _Transport()
        self.protocol.connection_made(self.transport)
        self.client = ClientProtocol(parse_uri("ws://127.0.0.1:8765/v1/stream"))
        self.client.send_request(self.client.connect())
        self._push()

    def _push(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.protocol.data_received(data)

    async def accepted(self) -> None:
        for _ in range(100):
            await asyncio.sleep(0)
            if self.transport.written:
                self.client.receive_data(bytes(self.transport.written))
                self.transport.written.clear()
                return
        raise AssertionError("not accepted")

    def send(self, *texts: str) -> None:
        """Frames arriving in one read."""
        for text in texts:
            self.client.send_text(text.encode())
        self.protocol.data_received(b"".join(self.client.data_to_send()))

    def close(self) -> None:
        self.client.send_close(1000)
        self.protocol.data_received(b"".join(self.client.data_to_send()))


def test_reading_pauses_only_once_the_inbox_holds_more_than_its_bound() -> None:
    """A handler that takes no frame (here: until told) stops the socket's reading once
    READ_AHEAD bytes of frames wait, not at the first frame; it resumes once the handler
    took them all, and the frames come out whole and in order."""
    text = "x" * (1000 - FRAME_COST)  # each counts 1000

    async def run() -> None:
        go = asyncio.Event()
        received: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            await go.wait()
            while len(received) < 100:
                message = await receive()
                received.append(message["text"])

        peer = _Peer(app)
        await peer.accepted()
        under = READ_AHEAD // 1000
        for i in range(under):
            peer.send(f"{i:03d}{text[3:]}")
        assert peer.transport.pauses == 0  # frames one by one: reading goes on
        peer.send(*(f"{i:03d}{text[3:]}" for i in range(under, 100)))  # one read, past it
        assert peer.transport.paused and peer.transport.pauses == 1
        go.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert [r[:3] for r in received] == [f"{i:03d}" for i in range(100)]
        assert received[0] == f"000{text[3:]}"
        assert not peer.transport.paused and peer.transport.resumes == 1

    asyncio.run(run())


def test_a_flood_while_the_handler_is_blocked_is_held_to_its_bound() -> None:
    """Frames arriving read after read while the handler waits: reading pauses, and what
    waits is at most READ_AHEAD plus the read that crossed it."""

    async def run() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await asyncio.Event().wait()  # blocked for good

        peer = _Peer(app)
        await peer.accepted()
        inbox = peer.protocol.queue
        assert isinstance(inbox, Inbox)
        reads = 0
        while not peer.transport.paused:
            peer.send(*['{"type":"ack","id":"' + "0" * 32 + '"}'] * 10)
            reads += 1
            assert reads < 10_000, "reading never paused"
        assert reads > 1  # not at the first frame
        assert READ_AHEAD < inbox.size <= READ_AHEAD + 10 * (FRAME_COST + 100)

    asyncio.run(run())


def test_the_text_hook_takes_frames_only_while_nothing_waits_in_the_inbox() -> None:
    """Frames go to the hook or to receive in the order they came: once one waits in the
    inbox, the later ones wait behind it; the hook hears of the client's close after the
    frames before it."""

    async def run() -> None:
        seen: list[bytes | None] = []
        installed = asyncio.Event()
        go = asyncio.Event()
        received: list[dict[str, Any]] = []

        def hook(data: bytes | None) -> bool:
            seen.append(data)
            return data is not None and data.startswith(b"take")

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            scope["extensions"][ON_TEXT](hook)
            installed.set()
            await go.wait()
            while not received or received[-1]["type"] != "websocket.disconnect":
                received.append(await receive())

        peer = _Peer(app)
        await peer.accepted()
        await installed.wait()
        peer.send("take 1", "keep 2", "take 3")
        peer.send("take 4")
        assert seen == [b"take 1", b"keep 2"]  # 3 and 4 wait behind 2
        go.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert [m.get("text") for m in received] == ["keep 2", "take 3", "take 4"]
        peer.send("take 5")
        peer.close()
        for _ in range(10):
            await asyncio.sleep(0)
        assert seen == [b"take 1", b"keep 2", b"take 5", None]
        assert received[-1]["type"] == "websocket.disconnect"
        assert [m.get("text") for m in received[:-1]] == ["keep 2", "take 3", "take 4"]

    asyncio.run(run())


def test_uvicorns_class_is_used_when_it_lacks_what_the_lean_one_relies_on() -> None:
    class Renamed(WebSocketsSansIOProtocol):
        send_receive_event_to_app = None  # type: ignore[assignment]

    assert websocket_protocol(Renamed) is Renamed

    class Reshaped(asyncio.Protocol):  # the methods, none of the attributes
        def receive(self) -> None: ...
        def send_receive_event_to_app(self) -> None: ...
        def handle_connect(self) -> None: ...
        def handle_close(self) -> None: ...
        def handle_parser_exception(self) -> None: ...
        def start_keepalive(self) -> None: ...

    assert websocket_protocol(Reshaped) is Reshaped
