"""A transport whose writes wait for the end of the event-loop iteration, then go out
together as one ``write``: shared by the client (:mod:`sealpost.client.corked`, its sealed
sends and acknowledgements) and the server (:func:`sealpost.server.connections.corked`,
its pushes and answers). On loopback each ``send()`` system call costs about as much as
the rest of a frame's handling (the kernel runs the receiving side's TCP stack inside it),
and both sides write frames in bursts.

The transports of one event loop that hold bytes are flushed together, by one callback
per iteration (:class:`_Corks`, scheduled by the first write of the iteration to any of
them), rather than by a ``call_soon`` each: with the load spread over many devices a
server writes one burst to each of thousands of sockets an iteration, and a handle and a
bound method each, alive until the next iteration, cost their making and the collector's
walks over them. A transport's first write of an iteration is held as it is, with no
list (bench/cork_cost.py, 10,000 sockets with one push each an iteration: 14.2 -> 11.9 us
of CPU a push, the ``send()`` included; 100 sockets with 16 writes each: 1.8 -> 1.2).
Each transport's bytes still go out in the order written, as one write; a transport
written to after the callback was scheduled, before it runs, is flushed by it too; and a
write that fails is reported to the loop's exception handler, as a failed callback's
would be, and the others still go. Nothing held, a transport keeps no list and is in
none: a server holds tens of thousands of idle ones.

Every write is held, even a whole burst to a socket holding nothing: writing it straight
through (and holding the iteration's later writes) saved nothing measurable at 10,000
sockets (12.0 us a push) and made two writes of one at 100 sockets with 16 each (1.55 us),
where a sealed socket's ``sent`` answers must go out together."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

__all__ = ["CorkedTransport"]


class _Corks:
    """The corked transports of one event loop holding bytes, flushed by one callback."""

    __slots__ = ("_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # held by _CORKS, keyed by the loop: not strongly
        self._pending: list[CorkedTransport] = []

    def add(self, transport: CorkedTransport) -> None:
        pending = self._pending
        if not pending:
            loop = self._loop()
            assert loop is not None  # a transport of it is being written to
            loop.call_soon(self.flush)
        pending.append(transport)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for transport in pending:
            # transport.flush(), inline: with the load spread thin, this runs once a push
            held, transport._held = transport._held, None
            try:
                if held and not (inner := transport._transport).is_closing():
                    inner.write(b"".join(held) if isinstance(held, list) else held)
            except Exception as exc:  # one socket's fault is not the others': as a callback's
                loop = self._loop()
                if loop is not None:
                    loop.call_exception_handler(
                        {"message": "corked write failed", "exception": exc, "transport": transport}
                    )


_CORKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Corks] = weakref.WeakKeyDictionary()


def _corks(loop: asyncio.AbstractEventLoop) -> _Corks:
    corks = _CORKS.get(loop)
    if corks is None:
        corks = _CORKS[loop] = _Corks(loop)
    return corks


class CorkedTransport:
    """A transport whose writes wait for the end of the event-loop iteration, then go out
    together as one ``write`` on the wrapped transport. ``close`` and ``write_eof`` write
    what is held first; ``abort`` drops it. Everything else is the wrapped transport's."""

    __slots__ = ("_corks", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._corks = _corks(loop)
        self._held: bytes | list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if type(data) is not bytes:  # a bytearray or memoryview may change once we return
            data = bytes(data)
        held = self._held
        if held is None:  # the first write of the iteration: held alone, no list
            self._held = data
            pending = self._corks._pending
            if pending:  # self._corks.add(self), inline: with the load spread thin, a push
                pending.append(self)
            else:
                self._corks.add(self)
        elif isinstance(held, list):
            held.append(data)
        else:
            self._held = [held, data]

    def flush(self) -> None:
        """Write what is held now (nothing once the transport is closing)."""
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(b"".join(held) if isinstance(held, list) else held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()  # asked before every frame: not by __getattr__

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
