"""The WebSocket transport's cork (server/connections.py): frames written in one event-loop
iteration reach the socket as one write, in order; close writes what is held first; a
transport already closing gets nothing. The direct frame writer (SEND_TEXTS) is checked
against a real server in tests/integration/test_relay_websocket_send.py."""

from __future__ import annotations

import asyncio
from typing import Any

from sealpost._corked import CorkedTransport


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.peer = ("127.0.0.1", 1)

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return self.peer if name == "peername" else None


def _corked(loop: asyncio.AbstractEventLoop) -> tuple[CorkedTransport, _Recorder]:
    raw = _Recorder()
    return CorkedTransport(raw, loop), raw  # type: ignore[arg-type]


def test_writes_of_one_iteration_go_out_as_one_in_order() -> None:
    async def main() -> None:
        corked, raw = _corked(asyncio.get_running_loop())
        for frame in (b"one", b"two", b"three"):
            corked.write(frame)
        assert raw.writes == []  # held until the iteration ends
        await asyncio.sleep(0)
        assert raw.writes == [b"onetwothree"]
        corked.write(b"four")
        await asyncio.sleep(0)
        assert raw.writes == [b"onetwothree", b"four"]
        assert corked.get_extra_info("peername") == raw.peer  # the rest is the transport's

    asyncio.run(main())


def test_close_writes_what_is_held_first_and_a_closing_transport_gets_nothing() -> None:
    async def main() -> None:
        corked, raw = _corked(asyncio.get_running_loop())
        corked.write(b"last frame")
        corked.close()
        assert raw.writes == [b"last frame"] and raw.closed
        corked.write(b"too late")
        await asyncio.sleep(0)
        assert raw.writes == [b"last frame"]

    asyncio.run(main())


def test_text_frames_are_the_bytes_websockets_writes() -> None:
    """Known answers from the library itself: every length class of RFC 6455's header
    (7-bit, 16-bit, 64-bit), multi-byte UTF-8, and several frames in one write."""
    from websockets.frames import Frame, Opcode

    from sealpost.server.connections import text_frames

    texts = ["", "x" * 125, "y" * 126, "é" * 100, "z" * 65535, "w" * 65536, '{"type":"empty"}']
    for text in texts:
        expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
        assert text_frames([text]) == expected, len(text)
    together = b"".join(
        Frame(Opcode.TEXT, t.encode()).serialize(mask=False, extensions=[]) for t in texts
    )
    assert text_frames(texts) == together
    assert text_frames([]) == b""
