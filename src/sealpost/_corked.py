"""A transport whose writes wait for the end of the event-loop iteration, then go out
together as one ``write``: shared by the client (:mod:`sealpost.client.corked`, its sealed
sends and acknowledgements) and the server (:func:`sealpost.server.connections.corked`,
its pushes and answers). On loopback each ``send()`` system call costs about as much as
the rest of a frame's handling (the kernel runs the receiving side's TCP stack inside it),
and both sides write frames in bursts. Nothing held, it keeps no list: a server holds tens
of thousands of idle ones."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["CorkedTransport"]


class CorkedTransport:
    """A transport whose writes wait for the end of the event-loop iteration, then go out
    together as one ``write`` on the wrapped transport. ``close`` and ``write_eof`` write
    what is held first; ``abort`` drops it. Everything else is the wrapped transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(bytes(data))

    def flush(self) -> None:
        """Write what is held now (nothing once the transport is closing)."""
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(b"".join(held) if len(held) > 1 else held[0])

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
