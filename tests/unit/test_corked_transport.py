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


def test_many_sockets_written_in_one_iteration_are_flushed_by_one_callback_one_write_each() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pairs = [_corked(loop) for _ in range(50)]
        scheduled = []
        call_soon = loop.call_soon
        loop.call_soon = lambda cb, *args, **kw: scheduled.append(cb) or call_soon(cb, *args, **kw)  # type: ignore[method-assign]
        for round_ in range(3):  # interleaved: each socket's own order must hold
            for i, (corked, _) in enumerate(pairs):
                corked.write(f"{i}:{round_};".encode())
        loop.call_soon = call_soon  # type: ignore[method-assign]
        assert len(scheduled) == 1  # one flush for all, not one a socket
        await asyncio.sleep(0)
        for i, (_, raw) in enumerate(pairs):
            assert raw.writes == [f"{i}:0;{i}:1;{i}:2;".encode()]

    asyncio.run(main())


def test_a_socket_written_after_the_flush_was_scheduled_is_flushed_in_that_iteration() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        (early, early_raw), (late, late_raw) = _corked(loop), _corked(loop)
        loop.call_soon(late.write, b"late")  # runs in the next iteration, before the flush
        early.write(b"early")  # schedules the flush
        await asyncio.sleep(0)  # this task resumes after the flush
        assert early_raw.writes == [b"early"] and late_raw.writes == [b"late"]
        late.write(b"again")  # a new iteration: a new flush
        await asyncio.sleep(0)
        assert late_raw.writes == [b"late", b"again"] and early_raw.writes == [b"early"]

    asyncio.run(main())


def test_close_among_held_sockets_writes_its_own_first_and_abort_drops_only_its_own() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        (closed, closed_raw), (aborted, aborted_raw), (kept, kept_raw) = (
            _corked(loop) for _ in range(3)
        )
        aborted_raw.abort = lambda: setattr(aborted_raw, "closed", True)  # type: ignore[attr-defined]
        for corked in (closed, aborted, kept):
            corked.write(b"held ")
            corked.write(b"frame")
        closed.close()
        assert closed_raw.writes == [b"held frame"] and closed_raw.closed
        aborted.abort()
        await asyncio.sleep(0)
        assert closed_raw.writes == [b"held frame"]  # not again at the flush
        assert aborted_raw.writes == []
        assert kept_raw.writes == [b"held frame"]

    asyncio.run(main())


def test_a_failed_write_is_reported_and_the_other_sockets_still_go() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        (broken, broken_raw), (fine, fine_raw) = _corked(loop), _corked(loop)

        def refuse(data: bytes) -> None:
            raise RuntimeError("Cannot call write() after write_eof()")

        broken_raw.write = refuse  # type: ignore[method-assign]
        broken.write(b"lost")
        fine.write(b"sent")
        await asyncio.sleep(0)
        assert fine_raw.writes == [b"sent"]
        assert [type(c["exception"]) for c in reported] == [RuntimeError]
        broken_raw.write = fine_raw.write  # type: ignore[method-assign]
        broken.write(b"next")  # the failed socket is not stuck: its next write is flushed
        await asyncio.sleep(0)
        assert fine_raw.writes == [b"sent", b"next"]

    asyncio.run(main())


def test_a_held_bytearray_is_copied_so_a_later_change_does_not_go_out() -> None:
    async def main() -> None:
        corked, raw = _corked(asyncio.get_running_loop())
        buffer = bytearray(b"frame")
        corked.write(buffer)  # type: ignore[arg-type]
        buffer[:] = b"XXXXX"
        await asyncio.sleep(0)
        assert raw.writes == [b"frame"]

    asyncio.run(main())
