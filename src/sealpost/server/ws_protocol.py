"""Uvicorn's WebSocket protocol (websockets' sans-I/O core), lighter per connection and
per frame.

A relay holds tens of thousands of idle WebSockets, so what each one keeps for its whole
life is most of the server's memory (docs/OPERATIONS.md, "Memory per connected device").
Uvicorn's protocol object keeps, beyond what a socket needs, an ``asyncio.Queue`` for the
frames received (three deques and an ``Event``: about 3 KiB), a second ``Event`` for write
flow control (a deque: about 700 bytes) and the handshake's HTTP response with its headers.
:class:`LeanWebSocketProtocol` replaces the two with one-consumer equivalents of a few
slots and drops the response once the handshake is done: measured with 2,000
connections, about 3.5 KiB less each. Nothing else changes on the wire (same frames, same
keepalive pings, same flow control).

Per frame, two things change. Reading:

- Uvicorn pauses reading the socket after every frame received and resumes it when the
  application has taken it: two libuv calls a frame when frames come one by one (a
  device's acks, with the load spread over many devices). Here reading pauses only once
  the frames waiting (:class:`Inbox`) hold more than :data:`READ_AHEAD` bytes, each
  counted with :data:`FRAME_COST` more for its slot, and resumes once the application has
  taken them all. The application is held back as before: a handler that stops taking
  frames stops the reading, the kernel's buffers fill and the client's writes wait. The
  worst case held per connection does not grow: uvloop reads up to 256 KiB at a time and
  every frame of a read is parsed at once (so uvicorn too holds a whole read), and the
  frames are held as their text alone, where uvicorn holds each as an ASGI message (a
  184-byte dict besides the text). Uvicorn's worst is a read of 256 KiB of empty or
  one-byte frames, about 36,000 frames, 8.8 MB; here the same read is about 2.1 MB, plus
  at most :data:`READ_AHEAD` (and one frame) held from before; a read of big frames
  costs the same as in uvicorn's plus that.
- An application may take text frames as they are parsed, in the protocol's callback,
  rather than through its ASGI ``receive`` (a task wake-up, and the frame's dict, each):
  the scope extension :data:`ON_TEXT`, ``on_text(hook)``, installs ``hook(data) -> bool``
  (``data`` the frame's bytes, not yet decoded as UTF-8; ``True``: it took the frame).
  It is offered a frame only while nothing waits in the inbox, so frames are handled in
  the order received: once one went to ``receive``, every later one goes there too until
  the inbox is empty again. It is called with ``None`` (its return value unused) when
  the client closes the connection or the connection is lost, in order with the frames,
  before the disconnect reaches ``receive``. ``on_text(None)`` removes it. The relay's
  streams take their acks so (:mod:`.acks`).

Writing: whether the application may write text frames now as plain frames
(:func:`~.connections.corked`'s ``send_texts``: pushes, answers) is one flag,
:attr:`LeanWebSocketProtocol.plain_open`, kept as what it stands for changes (websockets'
``state`` and ``expect_continuation_frame``, seen through a subclass of its
``ServerProtocol`` whose setters say so; uvicorn's ``close_sent``, a property here; the
transport's buffer, ``pause_writing`` / ``resume_writing``), rather than five objects'
fields read at every write, each out of the CPU's caches with the load spread over
10,000 sockets. :data:`WATCH_STATE` is false when websockets is shaped otherwise; then
the flag stays false and every write asks the protocol itself, as before.

Parsing: websockets' frame parser (``Protocol.receive_data``: a generator per frame, a
``Frame`` object, ``events_received``) costs 2 to 5 us a frame here, the most of what a
small frame costs the relay. ``data_received`` parses by hand the common frames at the
start of each read, when websockets' parser stands at a frame boundary with nothing
buffered (its generator waits in ``StreamReader.at_eof`` at the top of
``Protocol.parse``), the connection is OPEN, no fragmented message is in progress, no
extension is in use and websockets does not log frames (``debug``): a whole frame with
FIN set, the RSV bits clear, opcode TEXT or BINARY, masked and within ``max_size``. Its
payload is unmasked with websockets' own ``apply_mask`` and handed on as ``handle_text``
/ ``handle_bytes`` would. At the first frame that is anything else (a control frame, a
fragment, an unmasked or oversized one, RSV bits set, a frame cut by the end of the
read), the rest of the read goes to websockets (``receive_data``), which therefore sees a
stream starting at a frame boundary; the frames taken are handed on after that, then
websockets' events, as uvicorn's own ``data_received`` does (it parses the whole read
before handing on any frame, and hands on none when the read ends in a protocol error).
Such frames change nothing in websockets' state (``recv_frame`` only appends them to
``events``), so skipping it changes nothing either. :data:`FAST_PARSE` is true when a
self-test of the installed websockets (:func:`_fast_parse_works`) finds the structure
described above; otherwise every read goes to websockets, as in uvicorn.

It relies on names of uvicorn's ``WebSocketsSansIOProtocol``: the attributes ``queue``,
``writable``, ``response``, ``frames``, ``curr_msg_data_type``, ``read_paused``,
``close_sent``, ``handshake_complete`` and ``conn``; the methods ``receive``,
``send_receive_event_to_app`` (called for each whole message received),
``handle_connect``, ``handle_close``, ``connection_lost``, ``handle_parser_exception``,
``start_keepalive`` (called once the handshake response is written), ``data_received``,
``handle_events``, ``pause_writing`` and ``resume_writing``. :func:`websocket_protocol`
checks they are there and otherwise returns uvicorn's class unchanged (which offers no
:data:`ON_TEXT`: the application then takes every frame through ``receive``), so an
upgrade of uvicorn costs memory and time, never service.

    >>> websocket_protocol() is LeanWebSocketProtocol
    True
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets import frames as _ws_frames
from websockets.protocol import OPEN, Protocol, Side, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

try:  # as websockets.frames does
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "FAST_PARSE",
    "FRAME_COST",
    "ON_TEXT",
    "READ_AHEAD",
    "Inbox",
    "LeanWebSocketProtocol",
    "TextHook",
    "Writable",
    "websocket_protocol",
]

#: The ASGI scope extension :class:`LeanWebSocketProtocol` adds: ``on_text(hook)``.
ON_TEXT = "sealpost.on_text"
#: Bytes of frames the inbox may hold before the socket's reading pauses (a send frame of
#: a few envelopes is a few KiB; the default ``max_frame``, 384 KiB, passes whole anyway).
READ_AHEAD = 64 * 1024
#: What each item held counts besides its text: its text's object header and list slot.
FRAME_COST = 64

#: ``hook(data) -> bool``: a text frame's bytes (``True``: taken), or ``None``: closed.
TextHook = Callable[[bytes | None], bool]


def _cost(item: Any) -> int:
    return len(item) + FRAME_COST if type(item) is str else FRAME_COST


class Inbox:
    """``asyncio.Queue``'s ``put_nowait``, ``get``, ``empty`` and ``qsize`` for one
    consumer (uvicorn's ``receive``), keeping in ``size`` what it holds (:func:`_cost`):
    a received text frame is held as its ``str``, anything else as its ASGI message."""

    __slots__ = ("_head", "_items", "_waiter", "size")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0  # items before it were handed out (a list, not a deque: 600 bytes)
        self._waiter: asyncio.Future[None] | None = None
        self.size = 0

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self.size += _cost(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while self._head == len(self._items):
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        items = self._items
        item = items[self._head]
        self._head += 1
        if self._head == len(items):
            items.clear()
            self._head = 0
        else:
            items[self._head - 1] = None
        self.size -= _cost(item)
        return item

    def empty(self) -> bool:
        return self._head == len(self._items)

    def qsize(self) -> int:
        return len(self._items) - self._head


class Writable:
    """``asyncio.Event``'s ``set``, ``clear``, ``is_set`` and ``wait``, its waiters made only
    while the transport's buffer is full (``pause_writing``), which is rare."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            await waiter


class _WatchedServerProtocol(ServerProtocol):
    """websockets' server protocol, telling its uvicorn protocol (``watcher``) each time
    its ``state`` or ``expect_continuation_frame`` is set (websockets sets both only
    through these names), so that :attr:`LeanWebSocketProtocol.plain_open` stays true."""

    watcher: LeanWebSocketProtocol | None

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        Protocol.state.fset(self, state)  # type: ignore[attr-defined]
        watcher = self.__dict__.get("watcher")
        if watcher is not None:
            watcher.watch()

    @property
    def expect_continuation_frame(self) -> bool:
        return bool(self.__dict__["expect_continuation_frame"])

    @expect_continuation_frame.setter
    def expect_continuation_frame(self, value: bool) -> None:
        self.__dict__["expect_continuation_frame"] = value
        watcher = self.__dict__.get("watcher")
        if watcher is not None:
            watcher.watch()


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    #: Whether text frames may be written now as plain frames, without websockets:
    #: the connection OPEN, no extension, no fragmented message being sent, no close
    #: sent by the application and the transport's buffer not full (what
    #: :func:`~.connections.corked`'s ``send_texts`` checked at each call, five objects'
    #: fields, each cold in the CPU's caches with the load spread over 10,000 sockets).
    #: Kept by :meth:`watch`, called whenever one of them may have changed; the
    #: transport's ``is_closing`` is still asked each time. False: ask them all.
    plain_open = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._close_sent = False
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]
        self.text_hook: TextHook | None = None
        # ``conn.parser`` when last seen at a frame boundary with nothing buffered, no
        # message in progress, no extension and no debug log, the handshake complete:
        # only ``conn.receive_data`` moves it, and it is forgotten before each call.
        self.boundary: Any = None
        conn = self.conn
        if type(conn) is ServerProtocol and WATCH_STATE:  # else plain_open stays False
            conn.__class__ = _WatchedServerProtocol
            cast(_WatchedServerProtocol, conn).watcher = self
            self.watch()

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @close_sent.setter
    def close_sent(self, value: bool) -> None:
        self._close_sent = value
        if "plain_open" in self.__dict__:  # uvicorn's __init__ sets it before the conn
            self.watch()

    def watch(self) -> None:
        """Set :attr:`plain_open` from what it stands for (never true on a connection
        not watched: websockets would change its state unseen)."""
        conn = self.conn
        self.plain_open = (
            type(conn) is _WatchedServerProtocol
            and conn.state is OPEN
            and not conn.extensions
            and not conn.expect_continuation_frame
            and not self._close_sent
            and self.writable.is_set()
        )

    def pause_writing(self) -> None:
        super().pause_writing()
        self.plain_open = False

    def resume_writing(self) -> None:
        super().resume_writing()
        self.watch()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # accepted: the application's task has not started yet
            scope["extensions"][ON_TEXT] = self.on_text

    def on_text(self, hook: TextHook | None) -> None:
        self.text_hook = hook

    def start_keepalive(self) -> None:
        # The handshake's response is written: its headers are needed no more.
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if not (
            FAST_PARSE
            and (self.plain_open or conn.state is OPEN)  # the first implies the second
            and (conn.parser is self.boundary or self._at_boundary())
        ):
            self.boundary = None
            super().data_received(data)
            return
        limit = conn.max_message_size
        fragment = conn.max_fragment_size
        if fragment is not None:
            limit = fragment if limit is None else min(limit, fragment)
        taken: list[tuple[int, bytes]] = []
        end = len(data)
        pos = 0
        while end - pos >= 6:
            head = data[pos]
            if head != 0x81 and head != 0x82:  # FIN, no RSV bit, TEXT or BINARY
                break
            length = data[pos + 1] - 0x80  # negative: not masked
            if length < 0:
                break
            start = pos + 6
            if length == 126:
                start = pos + 8
                if start > end:
                    break
                length = data[pos + 2] << 8 | data[pos + 3]
            elif length == 127:
                start = pos + 14
                if start > end:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            stop = start + length
            if stop > end or (limit is not None and length > limit):
                break
            taken.append((head, apply_mask(data[start:stop], data[start - 4 : start])))
            pos = stop
        rest = pos < end
        if rest:
            self.boundary = None  # websockets' parser moves on, to where is its business
            conn.receive_data(data[pos:] if pos else data)
            if conn.parser_exc is not None:  # as uvicorn: no frame of this read handed on
                self.handle_parser_exception()
                return
        for head, payload in taken:
            self.curr_msg_data_type = "text" if head == 0x81 else "bytes"
            self._deliver(payload)
        if rest:
            self.handle_events()

    def _at_boundary(self) -> bool:
        """Whether the fast path may parse the next read (then :attr:`boundary` is set)."""
        conn = self.conn
        if (
            self.handshake_complete
            and not conn.reader.buffer
            and conn.current_size is None
            and conn.parser_exc is None
            and not conn.events
            and not conn.extensions
            and not conn.debug
            and _at_frame_boundary(conn)
        ):
            self.boundary = conn.parser
            return True
        return False

    def send_receive_event_to_app(self) -> None:
        frames = self.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.frames = []
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        """A whole message received, ``curr_msg_data_type`` telling its kind."""
        if self._close_sent:  # close_sent, without its property
            # Past the application's close: discard it (uvicorn's own rule), so reading
            # goes on until the peer's close arrives.
            return
        inbox: Inbox = self.queue  # type: ignore[assignment]
        if self.curr_msg_data_type == "text":
            hook = self.text_hook
            if hook is not None and not inbox.size and hook(data):  # size 0: empty
                return
            try:
                inbox.put_nowait(data.decode())
            except UnicodeDecodeError:
                self.logger.info("invalid UTF-8 in a text frame")  # uvicorn's close: 1007
                if self.conn.state is OPEN:
                    self.conn.send_close(1007)
                    self.handle_parser_exception()
                # else the client's close came in the same read, after this frame, and
                # websockets already answered it (uvicorn's send_close raised here)
                return
        else:
            inbox.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused and inbox.size > READ_AHEAD:
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> Any:
        inbox: Inbox = self.queue  # type: ignore[assignment]
        item = await inbox.get()
        if self.read_paused and inbox.empty():
            self.read_paused = False
            self.transport.resume_reading()
        if type(item) is str:
            return {"type": "websocket.receive", "text": item}
        return item

    def handle_close(self, event: Any) -> None:
        if not self.close_sent:
            self._closed()
        super().handle_close(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()
        super().connection_lost(exc)

    def _closed(self) -> None:
        hook, self.text_hook = self.text_hook, None
        if hook is not None:
            hook(None)


#: What :class:`LeanWebSocketProtocol` reads or writes of uvicorn's protocol object.
_ATTRIBUTES = frozenset(
    (
        "queue",
        "writable",
        "response",
        "frames",
        "curr_msg_data_type",
        "read_paused",
        "close_sent",
        "handshake_complete",
        "conn",
    )
)
_METHODS = (
    "data_received",
    "pause_writing",
    "resume_writing",
    "handle_events",
    "receive",
    "send_receive_event_to_app",
    "handle_connect",
    "handle_close",
    "connection_lost",
    "handle_parser_exception",
    "start_keepalive",
)


def _names_used(cls: type) -> set[str]:
    """Every attribute name the functions of ``cls`` itself read or assign."""
    names: set[str] = set()
    for value in vars(cls).values():
        code = getattr(value, "__code__", None)
        if code is not None:
            names.update(code.co_names)
    return names


def websocket_protocol(
    base: type[asyncio.Protocol] = WebSocketsSansIOProtocol,
) -> type[asyncio.Protocol]:
    """The protocol class to pass as uvicorn's ``ws``: the lean one, unless this uvicorn's
    class (``base``, for tests) has changed the names it relies on; then ``base``."""
    methods = all(callable(getattr(base, name, None)) for name in _METHODS)
    if methods and _ATTRIBUTES.issubset(_names_used(base)):
        return LeanWebSocketProtocol
    return base


def _watch_state_works() -> bool:
    """Whether websockets keeps a protocol's state as ``_state`` behind its ``state``
    property and sets ``expect_continuation_frame`` by that name, as
    :class:`_WatchedServerProtocol` assumes (else :attr:`LeanWebSocketProtocol.
    plain_open` stays False and every send asks the protocol itself)."""
    prop = getattr(Protocol, "state", None)
    if not isinstance(prop, property) or prop.fset is None:
        return False
    names = set(Protocol.send_text.__code__.co_names) | set(Protocol.send_close.__code__.co_names)
    try:
        conn = ServerProtocol()
        return (
            conn._state is conn.state
            and "expect_continuation_frame" in vars(conn)
            and {"state", "expect_continuation_frame"} <= names
        )
    except Exception:  # pragma: no cover - a websockets shaped otherwise
        return False


#: Whether :class:`LeanWebSocketProtocol` tracks its connection's state
#: (:func:`_watch_state_works`); tests turn it off to compare.
WATCH_STATE = _watch_state_works()

_PARSE_CODE = Protocol.parse.__code__
_AT_EOF_CODE = StreamReader.at_eof.__code__


def _at_frame_boundary(conn: Protocol) -> bool:
    """Whether ``conn``'s parser waits for a frame's first byte: its innermost generator
    is ``StreamReader.at_eof``, called from ``Protocol.parse`` itself (not from
    ``discard``, nor from within a frame, where ``Frame.parse`` waits in ``read_exact``)."""
    outer: Any = None
    gen: Any = conn.parser
    while (inner := gen.gi_yieldfrom) is not None:
        outer, gen = gen, inner
    return gen.gi_code is _AT_EOF_CODE and outer is not None and outer.gi_code is _PARSE_CODE


def _fast_parse_works(protocol: type[Protocol] = Protocol) -> bool:
    """Whether the installed websockets is shaped as :meth:`LeanWebSocketProtocol.
    data_received`'s fast path assumes: a server-side ``protocol`` fed a masked text frame
    in two reads stands at a frame boundary before and after it (nothing buffered, no
    message in progress), not between, and yields the frame."""
    mask = b"\x01\x02\x03\x04"
    frame = b"\x81\x82" + mask + apply_mask(b"hi", mask)
    try:
        conn = protocol(Side.SERVER, max_size=1 << 20)
        before = (
            conn.state is OPEN
            and _at_frame_boundary(conn)
            and not conn.reader.buffer
            and conn.current_size is None
            and conn.parser_exc is None
            and conn.events == []
            and conn.extensions == []
            and conn.max_message_size == 1 << 20
            and conn.max_fragment_size is None
            and isinstance(conn.debug, bool)
        )
        conn.receive_data(frame[:3])
        between = not _at_frame_boundary(conn)
        conn.receive_data(frame[3:])
        after = _at_frame_boundary(conn) and not conn.reader.buffer
        events = conn.events_received()
    except Exception:
        return False
    frames = [event for event in events if isinstance(event, _ws_frames.Frame)]
    return (
        before
        and between
        and after
        and len(events) == len(frames) == 1
        and frames[0].opcode is _ws_frames.Opcode.TEXT
        and frames[0].data == b"hi"
        and frames[0].fin
    )


#: Whether ``data_received`` takes the common frames itself (:func:`_fast_parse_works`);
#: tests and ``bench/ws_parse.py`` turn it off to compare with websockets' parser.
FAST_PARSE = _fast_parse_works()
