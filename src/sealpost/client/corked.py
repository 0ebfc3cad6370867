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
from typing import cast

from websockets.asyncio.client import ClientConnection

from sealpost._corked import CorkedTransport

__all__ = ["CorkedConnection", "CorkedTransport"]


class CorkedConnection(ClientConnection):
    """A ``websockets`` client connection writing through a :class:`CorkedTransport`
    (pass it as ``connect(..., create_connection=CorkedConnection)``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        corked = CorkedTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
        super().connection_made(cast(asyncio.Transport, corked))
