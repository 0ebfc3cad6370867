"""The lighter WebSocket protocol's two stand-ins (:mod:`sealpost.server.ws_protocol`)
behave as the asyncio queue and event they replace, and the server uses it with the
uvicorn installed (an upgrade that renamed what it relies on would show here)."""

from __future__ import annotations

import asyncio

from sealpost.server.ws_protocol import Inbox, LeanWebSocketProtocol, Writable, websocket_protocol


def test_the_inbox_hands_out_frames_in_order_and_waits_for_the_next() -> None:
    async def run() -> list[object]:
        inbox = Inbox()
        inbox.put_nowait(1)
        inbox.put_nowait(2)
        assert inbox.qsize() == 2 and not inbox.empty()
        got = [await inbox.get(), await inbox.get()]
        assert inbox.empty()
        waiting = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing there: it waits
        inbox.put_nowait(3)
        got.append(await asyncio.wait_for(waiting, 1))
        cancelled = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        cancelled.cancel()  # a reader cancelled while waiting leaves no stale waiter
        await asyncio.gather(cancelled, return_exceptions=True)
        inbox.put_nowait(4)
        got.append(await inbox.get())
        return got

    assert asyncio.run(run()) == [1, 2, 3, 4]


def test_writable_holds_writers_while_the_transport_is_full() -> None:
    async def run() -> None:
        writable = Writable()
        assert writable.is_set()
        await asyncio.wait_for(writable.wait(), 1)  # set: no wait
        writable.clear()
        writers = [asyncio.create_task(writable.wait()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in writers)
        writable.set()
        await asyncio.wait_for(asyncio.gather(*writers), 1)

    asyncio.run(run())


def test_the_server_runs_the_lean_protocol_with_this_uvicorn() -> None:
    assert websocket_protocol() is LeanWebSocketProtocol
