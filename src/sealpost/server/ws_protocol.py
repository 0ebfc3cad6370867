"""Uvicorn's WebSocket protocol (websockets' sans-I/O core), lighter per connection.

A relay holds tens of thousands of idle WebSockets, so what each one keeps for its whole
life is most of the server's memory (docs/OPERATIONS.md, "Memory per connected device").
Uvicorn's protocol object keeps, beyond what a socket needs, an ``asyncio.Queue`` for the
frames received (three deques and an ``Event``: about 3 KiB), a second ``Event`` for write
flow control (a deque: about 700 bytes) and the handshake's HTTP response with its headers.
:class:`LeanWebSocketProtocol` replaces the two with one-consumer equivalents of a few
slots and drops the response once the handshake is done; nothing else changes (same
frames, same keepalive pings, same flow control): measured with 2,000 connections,
about 3.5 KiB less each.

It relies on three names of uvicorn's ``WebSocketsSansIOProtocol`` (``queue``,
``writable``, ``response``, and its ``start_keepalive`` called once the handshake
response is written). :func:`websocket_protocol` checks they are there and otherwise
returns uvicorn's class unchanged, so an upgrade of uvicorn costs memory, never service.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["Inbox", "LeanWebSocketProtocol", "Writable", "websocket_protocol"]


class Inbox:
    """``asyncio.Queue``'s ``put_nowait``, ``get``, ``empty`` and ``qsize`` for one
    consumer (uvicorn's ``receive``). Uvicorn stops reading the socket while a received
    frame waits, so it holds one or two items."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


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


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        # The handshake's response is written: its headers are needed no more.
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()


def websocket_protocol() -> type[asyncio.Protocol]:
    """The protocol class to pass as uvicorn's ``ws``: the lean one, unless this uvicorn's
    class has changed the names it relies on."""
    base = WebSocketsSansIOProtocol
    if callable(getattr(base, "start_keepalive", None)) and callable(
        getattr(base, "receive", None)
    ):
        return LeanWebSocketProtocol
    return base
