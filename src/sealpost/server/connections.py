"""Connection limits under uvicorn: a deadline for request headers and a cap on open
connections, as an HTTP protocol class (:func:`limited_protocol`); and WebSockets whose
frames written in one event-loop iteration go out in one write (:func:`corked`).

Uvicorn closes a keep-alive connection idle between requests (``timeout_keep_alive``) but
sets no deadline on a request's headers: a client sending one header byte every few
seconds would hold its connection, and a file descriptor, for good. So every connection
gets ``header_timeout`` seconds, from when it opens or a request begins, until its headers
are complete; then it is closed. (Bodies have their own deadline, in the application:
:mod:`.requests`; WebSockets, once upgraded, their idle and handshake timeouts.)

Past ``max_connections`` open connections (HTTP and WebSocket alike), a new one is answered
``503 {"error": "busy", ...}`` at once and closed, before anything of it is parsed; so the
server stays under its file descriptor limit and keeps the JSON error contract (uvicorn's
own ``limit_concurrency`` answers plain text).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Sequence
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.protocol import State

from sealpost._corked import CorkedTransport
from sealpost.server.ws_protocol import LeanWebSocketProtocol

__all__ = ["BUSY_BODY", "SEND_TEXTS", "corked", "limited_protocol", "text_frames"]

BUSY_BODY = json.dumps(
    {"error": "busy", "message": "the server is at its connection limit; retry later"}
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 5\r\nconnection: close\r\ncontent-length: "
    + str(len(BUSY_BODY)).encode()
    + b"\r\n\r\n"
    + BUSY_BODY
)


class _LimitedProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_connections: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections and len(self.connections) > self.max_connections:
            self._refused = True
            transport.write(_BUSY)
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        if self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def limited_protocol(*, header_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """An httptools protocol class with these limits, to pass as uvicorn's ``http``."""
    return type(
        "SealpostHttpProtocol",
        (_LimitedProtocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )


#: The ASGI scope extension that :func:`corked` adds: ``send_texts(texts) -> bool``.
SEND_TEXTS = "sealpost.send_texts"


def text_frames(texts: Sequence[str]) -> bytes:
    """``texts`` as unmasked, unfragmented WebSocket text frames (RFC 6455 section 5.2), as
    a server writes them with no extension: the bytes websockets' ``send_text`` makes, in
    a seventh of its time (it builds and serializes a ``Frame`` object for each, about
    1 us; pushes, ``empty`` and ``sent`` answers are most of what the server writes). The
    protocol's state is not touched: a text frame does not change it."""
    out = []
    for text in texts:
        data = text.encode()
        n = len(data)
        if n < 126:
            out.append(_SHORT[n])
        elif n < 65536:
            out.append(_MEDIUM.pack(0x81, 126, n))
        else:
            out.append(_LONG.pack(0x81, 127, n))
        out.append(data)
    return b"".join(out)


_SHORT = [bytes((0x81, n)) for n in range(126)]  # FIN | text, then the length
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def corked(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """Uvicorn's WebSocket protocol class ``base`` (``ws``: a ``WebSocketsSansIOProtocol``),
    writing through a :class:`~sealpost._corked.CorkedTransport`, and offering the
    application, as the scope extension :data:`SEND_TEXTS`, a way to write text frames
    at once, without an ASGI ``send`` (a coroutine through the framework and the server) for each:
    ``send_texts(texts)`` writes them (through the websockets protocol, so its state stays
    right) and returns ``True``, or does nothing and returns ``False`` when the socket
    cannot take them now (not open, closing, or its buffer full: then ``send`` waits).
    On the lean protocol (:class:`~.ws_protocol.LeanWebSocketProtocol`) all but the
    transport's closing are one flag it keeps, ``plain_open``: with the load spread over
    10,000 sockets, each written once an iteration, every object a push reads is cold in
    the CPU's caches, and the checks read five (bench/percall.py)."""

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        corked = CorkedTransport(cast(asyncio.Transport, transport), loop)
        base.connection_made(self, cast(asyncio.Transport, corked))

    def handle_connect(self: Any, event: Any) -> None:
        base.handle_connect(self, event)  # type: ignore[attr-defined]
        scope = getattr(self, "scope", None)
        if scope is not None:  # accepted: the application's task has not started yet
            scope["extensions"][SEND_TEXTS] = self.send_texts

    def send_texts(self: Any, texts: Sequence[str]) -> bool:
        transport = self.transport  # a CorkedTransport (connection_made): its own
        # transport asked, without CorkedTransport.is_closing's frame (once a push)
        if self.plain_open and not transport._transport.is_closing():  # what checked() asks
            transport.write(text_frames(texts))
            return True
        return checked(self, texts)

    def checked(self: Any, texts: Sequence[str]) -> bool:
        conn = self.conn
        if (
            not self.handshake_complete
            or self.close_sent
            or conn.state is not State.OPEN
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        if conn.extensions or conn.expect_continuation_frame:  # never so here: no deflate
            for text in texts:
                conn.send_text(text.encode())
            self.transport.write(b"".join(conn.data_to_send()))
        else:
            self.transport.write(text_frames(texts))
        return True

    return type(
        f"Corked{base.__name__}",
        (base,),
        {
            "connection_made": connection_made,
            "handle_connect": handle_connect,
            "send_texts": send_texts if issubclass(base, LeanWebSocketProtocol) else checked,
        },
    )
