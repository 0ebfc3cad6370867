"""The client's WebSocket cork (client/corked.py): frames written in one event-loop
iteration reach the socket as one write, in order; closing or half-closing writes what is
held first, aborting drops it; and over a real socket a burst of frames sent just before
closing all arrive, in order, and the close is clean."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from sealpost.client.corked import CorkedTransport
from sealpost.client.transport import Transport


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False
        self.peer = ("127.0.0.1", 1)

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def write_eof(self) -> None:
        self.calls.append(("eof", b""))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def get_extra_info(self, name: str) -> Any:
        return self.peer if name == "peername" else None


def _corked(loop: asyncio.AbstractEventLoop) -> tuple[CorkedTransport, _Recorder]:
    raw = _Recorder()
    return CorkedTransport(raw, loop), raw  # type: ignore[arg-type]


def test_writes_of_one_iteration_go_out_as_one_in_order() -> None:
    async def main() -> None:
        corked, raw = _corked(asyncio.get_running_loop())
        for frame in (b"one", b"two", bytearray(b"three")):
            corked.write(frame)
        assert raw.calls == []  # held until the iteration ends
        await asyncio.sleep(0)
        assert raw.calls == [("write", b"onetwothree")]
        corked.write(b"four")
        await asyncio.sleep(0)
        assert raw.calls[-1] == ("write", b"four")
        assert corked.get_extra_info("peername") == raw.peer  # the rest is the transport's

    asyncio.run(main())


def test_eof_and_close_write_what_is_held_first_and_abort_drops_it() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        corked, raw = _corked(loop)
        corked.write(b"close frame")
        corked.write_eof()
        assert raw.calls == [("write", b"close frame"), ("eof", b"")]
        corked.write(b"last")
        corked.close()
        assert raw.calls[-2:] == [("write", b"last"), ("close", b"")]
        corked.write(b"too late")  # the transport is closing: nothing more goes
        await asyncio.sleep(0)
        assert raw.calls[-1] == ("close", b"")

        corked, raw = _corked(loop)
        corked.write(b"dropped")
        corked.abort()
        await asyncio.sleep(0)
        assert raw.calls == [("abort", b"")]

    asyncio.run(main())


def test_a_burst_sent_just_before_closing_arrives_whole_over_a_real_socket() -> None:
    async def main() -> None:
        got: list[str] = []
        closed = asyncio.get_running_loop().create_future()

        async def handler(ws: ServerConnection) -> None:
            async for frame in ws:
                got.append(str(frame))
            closed.set_result(ws.close_code)

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            transport = Transport(f"http://127.0.0.1:{port}")
            ws = await transport._connect("/")
            for i in range(200):
                await ws.send(f"frame {i}")
            await ws.close()
            assert await asyncio.wait_for(closed, 10) == 1000
            await transport.close()
        assert got == [f"frame {i}" for i in range(200)]

    asyncio.run(main())
