"""The lighter WebSocket protocol (:mod:`sealpost.server.ws_protocol`): its two stand-ins
behave as the asyncio queue and event they replace; reading pauses only past the inbox's
bound, and a blocked handler still stops it; the text hook keeps the frames' order; and
the server uses it with the uvicorn installed (an upgrade that renamed what it relies on
would show here, and would get uvicorn's own class). Its own frame parser hands the
application the same messages, and the server writes the same bytes, as websockets'
parser does (the fast path off), for any sequence of client frames cut into any reads."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN, Protocol
from websockets.streams import StreamReader
from websockets.utils import apply_mask
from wspeer import Peer

from sealpost.server import ws_protocol
from sealpost.server.connections import SEND_TEXTS, corked
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

        peer = Peer(app)
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

        peer = Peer(app)
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

        peer = Peer(app)
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


def _may_write_plain(protocol: Any) -> bool:
    """What ``send_texts`` asked of the protocol at each call before ``plain_open``."""
    conn = protocol.conn
    return bool(
        protocol.handshake_complete
        and not protocol.close_sent
        and conn.state is OPEN
        and protocol.writable.is_set()
        and not conn.extensions
        and not conn.expect_continuation_frame
    )


def _kept(protocol: Any) -> bool:
    assert protocol.plain_open == _may_write_plain(protocol)
    return bool(protocol.plain_open)


@pytest.mark.parametrize("end", ["client close", "server close", "bad frame", "lost"])
def test_plain_open_follows_the_connection_through_every_change(end: str) -> None:
    """The lean protocol's one flag equals the five checks it replaces at every step: the
    handshake, the transport's buffer full and drained, a fragmented message being sent,
    and each way a connection ends (websockets' state and uvicorn's close_sent)."""

    async def run() -> None:
        close = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await close.wait()
            await send({"type": "websocket.close", "code": 1000})

        peer = Peer(app)
        protocol = peer.protocol
        assert not _kept(protocol)  # the handshake is not done
        await peer.accepted()
        assert _kept(protocol)
        protocol.pause_writing()
        assert not _kept(protocol)
        protocol.resume_writing()
        assert _kept(protocol)
        protocol.conn.send_text(b"part", fin=False)
        assert not _kept(protocol)
        protocol.conn.send_continuation(b"", fin=True)
        assert _kept(protocol)
        protocol.conn.data_to_send()
        if end == "client close":
            peer.close()
        elif end == "server close":
            close.set()
            for _ in range(5):
                await asyncio.sleep(0)
            assert protocol.close_sent
        elif end == "bad frame":
            protocol.data_received(_frame(0x1, b"unmasked", masked=False))
        else:
            protocol.connection_lost(None)
            assert peer.transport.is_closing()  # what send_texts asks besides the flag
            assert _kept(protocol) == _may_write_plain(protocol)  # websockets: still OPEN
            return
        assert not _kept(protocol)
        close.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not _kept(protocol)

    asyncio.run(run())


@pytest.mark.parametrize("watch", [True, False])
def test_send_texts_writes_only_while_the_socket_may_take_frames(watch: bool) -> None:
    """``send_texts`` (SEND_TEXTS) through the flag, or through its five checks when the
    protocol keeps none (``WATCH_STATE`` off: a websockets shaped otherwise): frames out
    while open, nothing and ``False`` while the buffer is full or once the client closed."""

    async def run() -> None:
        sends: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            sends.append(scope["extensions"][SEND_TEXTS])
            await asyncio.Event().wait()

        peer = Peer(app, cls=corked(LeanWebSocketProtocol))
        await peer.accepted()
        await asyncio.sleep(0)
        assert peer.protocol.plain_open is watch
        (send_texts,) = sends
        assert send_texts(["one", "two"])
        await asyncio.sleep(0)
        peer.client.receive_data(bytes(peer.transport.written))
        peer.transport.written.clear()
        got = [e.data for e in peer.client.events_received() if hasattr(e, "opcode")]
        assert got == [b"one", b"two"]
        peer.protocol.pause_writing()
        assert not send_texts(["held"])
        peer.protocol.resume_writing()
        assert peer.protocol.plain_open is watch  # unwatched: never set, whatever happens
        peer.protocol.close_sent = False
        assert peer.protocol.plain_open is watch
        peer.transport.closed = True
        assert not send_texts(["closing"])
        peer.transport.closed = False
        peer.close()
        assert not send_texts(["closed"])
        await asyncio.sleep(0)
        assert b"held" not in peer.transport.written and b"closed" not in peer.transport.written

    was = ws_protocol.WATCH_STATE
    ws_protocol.WATCH_STATE = watch
    try:
        asyncio.run(run())
    finally:
        ws_protocol.WATCH_STATE = was


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


# -- the fast path of data_received against websockets' parser -----------------------------

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
#: The servers' ``max_size`` in these tests: a 65,536-byte frame fits, 70,001 does not.
MAX_SIZE = 70_000


def _frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes = b"\x3c\xa5\x0f\x96",
) -> bytes:
    """A client's frame, by hand (so it can be malformed), in the shortest length form."""
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        length = bytes([bit | n])
    elif n < 1 << 16:
        length = bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([bit | 127]) + n.to_bytes(8, "big")
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode]) + length
    return head + mask + apply_mask(payload, mask) if masked else head + payload


def _record(reads: list[bytes], *, fast: bool, max_size: int = MAX_SIZE) -> list[tuple[str, Any]]:
    """What an application sees (its text hook's calls and its ASGI messages, in order)
    and what the server writes, read by read, with ``reads`` arriving one after another
    (each once reading is not paused, none once the transport is closed)."""
    log: list[tuple[str, Any]] = []

    def hook(data: bytes | None) -> bool:
        log.append(("hook", data))
        return data is not None and data.startswith(b"h")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        scope["extensions"][ON_TEXT](hook)
        while True:
            message = await receive()
            log.append(("receive", message))
            if message["type"] == "websocket.disconnect":
                return

    async def run() -> None:
        peer = Peer(app, max_size=max_size)
        await peer.accepted()
        for data in reads:
            for _ in range(20):
                if not peer.transport.paused:
                    break
                await asyncio.sleep(0)
            if peer.transport.closed:
                break
            peer.protocol.data_received(data)
            for _ in range(5):
                await asyncio.sleep(0)
            log.append(("wrote", bytes(peer.transport.written)))
            peer.transport.written.clear()
        log.append(("closed", peer.transport.closed))

    was = ws_protocol.FAST_PARSE
    ws_protocol.FAST_PARSE = fast
    try:
        asyncio.run(run())
    finally:
        ws_protocol.FAST_PARSE = was
    return log


def _same_either_way(reads: list[bytes], max_size: int = MAX_SIZE) -> list[tuple[str, Any]]:
    fast = _record(reads, fast=True, max_size=max_size)
    assert fast == _record(reads, fast=False, max_size=max_size)
    return fast


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _text(kind: str, n: int) -> bytes:
    """``n`` bytes of text: for the hook (``h...``), for ``receive`` (``k...``), or not
    UTF-8 (``k\\xff...``)."""
    body = {"hook": b"h", "receive": b"k", "invalid": b"k\xff"}[kind] + b"x" * n
    return body[:n]


_LENGTHS = st.sampled_from([0, 1, 2, 125, 126, 127, 600, 65_535, 65_536, 69_000])
_SMALL = st.integers(0, 125)
_MASKS = st.sampled_from([b"\x3c\xa5\x0f\x96", b"\x00\x00\x00\x00", b"\xff\x01\x80\x7f"])


@st.composite
def _frames(draw: st.DrawFn) -> bytes:
    """One client frame, or a fragmented message, common or odd."""
    mask = draw(_MASKS)
    kind = draw(
        st.sampled_from(
            ["text"] * 6
            + ["binary", "ping", "pong", "fragmented", "close", "unmasked", "rsv"]
            + ["oversized", "bad opcode", "stray continuation"]
        )
    )
    if kind == "text":
        text = _text(draw(st.sampled_from(["hook", "receive", "invalid"])), draw(_LENGTHS))
        return _frame(TEXT, text, mask=mask)
    if kind == "binary":
        return _frame(BINARY, b"b" * draw(_LENGTHS), mask=mask)
    if kind in ("ping", "pong"):
        return _frame(PING if kind == "ping" else PONG, b"p" * draw(_SMALL), mask=mask)
    if kind == "fragmented":
        opcode = draw(st.sampled_from([TEXT, BINARY]))
        pieces = draw(st.lists(st.sampled_from([0, 1, 125, 126, 700]), min_size=2, max_size=4))
        out = b""
        for i, n in enumerate(pieces):
            out += _frame(opcode if i == 0 else CONT, b"f" * n, fin=i == len(pieces) - 1)
            if draw(st.booleans()):
                out += _frame(PING, b"between")
        return out
    if kind == "close":
        payload = draw(st.sampled_from([b"", (1000).to_bytes(2, "big") + b"bye"]))
        return _frame(CLOSE, payload, mask=mask)
    if kind == "unmasked":
        return _frame(TEXT, b"k unmasked", masked=False)
    if kind == "rsv":
        return _frame(TEXT, b"k rsv", rsv=draw(st.sampled_from([1, 2, 4])), mask=mask)
    if kind == "oversized":
        return _frame(BINARY, b"o" * (MAX_SIZE + 1), mask=mask)
    if kind == "bad opcode":
        return _frame(0x3, b"k", mask=mask)
    return _frame(CONT, b"k", mask=mask)


@settings(max_examples=300)
@given(st.lists(_frames(), min_size=1, max_size=8), st.data())
def test_the_fast_path_changes_nothing_the_application_or_client_sees(
    frames: list[bytes], data: st.DataObject
) -> None:
    """Any sequence of client frames (text and binary of every length form, control
    frames, fragmented messages, and the odd ones websockets refuses), cut into reads
    anywhere: the same hook calls and ASGI messages in the same order, and the same bytes
    written after each read (pongs, close frames), with the fast path as without."""
    stream = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    _same_either_way(_split(stream, cuts))


#: Common and control frames, a fragmented message with a ping inside, and the close.
_MIXED = [
    _frame(TEXT, b'h{"type":"ack","id":"' + b"0" * 32 + b'"}'),
    _frame(TEXT, _text("receive", 600)),
    _frame(BINARY, b"b" * 130),
    _frame(PING, b"ping"),
    _frame(TEXT, b"k frag", fin=False),
    _frame(PING, b"in"),
    _frame(CONT, b"ment", fin=False),
    _frame(CONT, b"ed", fin=True),
    _frame(PONG, b""),
    _frame(TEXT, b""),
    _frame(TEXT, b"h last"),
    _frame(CLOSE, (1000).to_bytes(2, "big")),
]


def test_a_read_cut_at_every_byte_offset_sees_the_same() -> None:
    stream = b"".join(_MIXED)
    whole = _same_either_way([stream])
    assert ("wrote", b"\x8a\x04ping\x8a\x02in\x88\x02\x03\xe8") in whole  # pongs, close
    texts = [m.get("text") for kind, m in whole if kind == "receive"]
    # "h last" waits behind "" in the inbox, so the hook is not offered it; then the close
    assert texts == [_text("receive", 600).decode(), None, "k fragmented", "", "h last", None]
    for cut in range(1, len(stream)):
        _same_either_way([stream[:cut], stream[cut:]])
    _same_either_way([stream[i : i + 1] for i in range(len(stream))])


def test_the_fast_path_takes_common_frames_without_websockets_parser() -> None:
    """Whole text and binary frames reach the application with ``receive_data`` never
    called; the first control frame and all after it go to websockets."""

    async def run() -> list[int]:
        got: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                got.append(await receive())

        peer = Peer(app)
        await peer.accepted()
        fed: list[int] = []
        conn = peer.protocol.conn
        receive_data = conn.receive_data

        def counted(data: bytes | bytearray) -> None:
            fed.append(len(data))
            receive_data(data)

        conn.receive_data = counted  # type: ignore[method-assign]
        peer.protocol.data_received(
            _frame(TEXT, b"one") + _frame(BINARY, b"b" * 200) + _frame(TEXT, b"x" * 70_000)
        )
        assert fed == []
        tail = _frame(PING, b"p") + _frame(TEXT, b"two")
        peer.protocol.data_received(_frame(TEXT, b"three") + tail)
        assert fed == [len(tail)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert [m.get("text", m.get("bytes")) for m in got] == [
            "one",
            b"b" * 200,
            "x" * 70_000,
            "three",
            "two",
        ]
        assert peer.transport.written == b"\x8a\x01p"  # the pong
        return fed

    asyncio.run(run())


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (_frame(TEXT, b"k unmasked", masked=False), 1002),
        (_frame(BINARY, b"o" * (MAX_SIZE + 1)), 1009),
        (_frame(TEXT, b"k\xff\xfe"), 1007),
        (_frame(TEXT, b"k rsv", rsv=4), 1002),
    ],
    ids=["unmasked", "over max_size", "invalid UTF-8", "RSV bit"],
)
def test_a_bad_frame_after_good_ones_closes_as_before(bad: bytes, code: int) -> None:
    """A bad frame in the same read as good ones before it, and in a read of its own:
    the same close, with the same code, as websockets' parser and uvicorn give."""
    good = _frame(TEXT, b"k good") + _frame(TEXT, b"h good")
    for reads in ([good + bad + good], [good, bad, good]):
        log = _same_either_way(reads)
        assert log[-1] == ("closed", True)
        closes = [m for kind, m in log if kind == "receive" and m["type"] == "websocket.disconnect"]
        assert [m["code"] for m in closes] == [code]
        assert any(kind == "wrote" and code.to_bytes(2, "big") in w for kind, w in log)


def test_invalid_utf8_then_the_clients_close_in_one_read_answers_the_close() -> None:
    """The close is parsed (and answered by websockets) before the text frame before it
    is decoded: the frame is dropped and the client's close answered, where uvicorn's
    1007 raised InvalidState out of ``data_received`` (found by the test above)."""
    bad = _frame(TEXT, b"k\xff") + _frame(CLOSE, (1000).to_bytes(2, "big"))
    log = _same_either_way([bad])
    assert ("wrote", b"\x88\x02\x03\xe8") in log and log[-1] == ("closed", True)
    closes = [m for kind, m in log if kind == "receive"]
    assert closes == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]


def test_the_fast_path_is_off_when_websockets_parser_is_shaped_otherwise() -> None:
    assert ws_protocol.FAST_PARSE and ws_protocol._fast_parse_works()

    class Reader(StreamReader):
        def at_eof(self):  # type: ignore[no-untyped-def]
            return (yield from super().at_eof())

    class Reshaped(Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.reader = Reader()
            self.parser = self.parse()
            next(self.parser)

    assert not ws_protocol._fast_parse_works(Reshaped)
