"""What parsing a client's frame costs the relay: ``LeanWebSocketProtocol.data_received``
with its fast path (``ws_protocol.FAST_PARSE``) against websockets' parser (the fast path
off, the baseline), in the same run, from the bytes read to the application: an ack frame
taken by the text hook (as ``/v1/stream`` takes acks), a 600-byte send frame put in the
inbox for ``receive`` (as ``/v1/sealed`` takes sends), and a read of 16 acks. Each figure
is the best of ``--repeat`` timings (the two paths alternating), in microseconds per
frame; both paths are checked first to hand on the same payloads.

    .venv/bin/python bench/ws_parse.py [--json bench/results/ws_parse.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import timeit
from functools import partial
from pathlib import Path
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from sealpost.server import ws_protocol
from sealpost.server.ws_protocol import Inbox, LeanWebSocketProtocol


class _Transport(asyncio.Transport):
    def write(self, data: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8765)}.get(
            name, default
        )


def client_frame(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True)


def connected(taken: list[bytes | None]) -> LeanWebSocketProtocol:
    """A protocol past its handshake (an OPEN connection), its text hook taking ``a``
    frames (acks) into ``taken``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    async def run() -> LeanWebSocketProtocol:
        config = Config(app=app, ws_max_size=384 * 1024, ws_ping_interval=None, log_level="error")
        config.load()
        protocol = LeanWebSocketProtocol(config, ServerState(), {})
        protocol.connection_made(_Transport())
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        protocol.data_received(
            b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key.encode() + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await protocol.queue.get()  # websocket.connect
        await protocol.send({"type": "websocket.accept"})
        for task in list(protocol.tasks):
            task.cancel()
        return protocol

    protocol = asyncio.run(run())

    def hook(data: bytes | None) -> bool:
        if data is not None and data[:9] == b'{"type":"' and data[9:10] == b"a":
            taken.append(data)
            return True
        return False

    protocol.on_text(hook)
    return protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("bench/results/ws_parse.json"))
    args = parser.parse_args()
    ack = client_frame('{"type":"ack","id":"' + os.urandom(16).hex() + '"}')
    send = client_frame('{"type":"send","x":"' + "s" * 578 + '"}')
    assert len(send) == 600 + 8, len(send)
    reads = {"ack frame (hook)": (ack, 1), "600-byte send (inbox)": (send, 1)}
    reads["read of 16 acks (hook)"] = (ack * 16, 16)
    rows = []
    print(f"{'frame':<24}{'websockets us':>15}{'fast path us':>14}{'ratio':>8}")
    for name, (data, frames) in reads.items():
        protocols = []
        for fast in (False, True):  # websockets' parser, then the fast path
            ws_protocol.FAST_PARSE = fast
            taken: list[bytes | None] = []
            protocol = connected(taken)
            protocol.data_received(data)
            protocols.append((fast, protocol, taken))
        handed = [t + list(p.queue._items) for _, p, t in protocols]  # type: ignore[attr-defined]
        assert handed[0] == handed[1] and handed[0], name
        best = [float("inf"), float("inf")]
        for _ in range(args.repeat):  # interleaved, so both see the same noise
            for i, (fast, protocol, taken) in enumerate(protocols):
                ws_protocol.FAST_PARSE = fast
                taken.clear()
                protocol.queue = Inbox()  # type: ignore[assignment]
                protocol.read_paused = False
                t = timeit.timeit(partial(protocol.data_received, data), number=args.number)
                best[i] = min(best[i], t / args.number / frames * 1e6)
        ws_protocol.FAST_PARSE = True
        base, ours = best
        rows.append({"frame": name, "websockets_us": base, "fast_path_us": ours})
        print(f"{name:<24}{base:>15.2f}{ours:>14.2f}{ours / base:>7.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"benchmark": "bench/ws_parse.py", "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
