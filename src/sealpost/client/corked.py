"""WebSocket frames written in one event-loop iteration go out in one write.

The client writes its frames in bursts: the send pipeline puts a window of sealed sends on
``/v1/sealed`` at once, and the receive pipeline acknowledges a whole committed batch on
``/v1/stream`` at once. ``websockets`` writes each frame to the transport as it is made,
and an idle asyncio socket transport sends each write at once: one ``send()`` system call
per frame, and on loopback each call costs about as much as the rest of the frame's
handling (the kernel runs the receiving side's TCP stack inside it; the server reads the
frames one segment at a time). So a :class:`CorkedConnection` writes through a
:class:`CorkedTransport`, which holds the writes of an iteration and hands them to the
real transport together, in order, as one ``write`` at the end of it (``call_soon``).

Nothing else changes: the frames, their order and the flow control are the same
(``websockets`` still sees the real transport's buffer and pause/resume callbacks; what
is held is at most one iteration's frames, and it is written before the transport is
closed or half-closed). The server does the same for its pushes and answers.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from websockets.asyncio.client import ClientConnection

__all__ = ["CorkedConnection", "CorkedTransport"]


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


class CorkedConnection(ClientConnection):
    """A ``websockets`` client connection writing through a :class:`CorkedTransport`
    (pass it as ``connect(..., create_connection=CorkedConnection)``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        corked = CorkedTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
        super().connection_made(cast(asyncio.Transport, corked))
