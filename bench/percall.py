"""The fixed cost of one push and of one ack on one ``/v1/stream`` socket, with the load
spread over 10,000 connected devices (issue 16): each device gets one message an event-loop
iteration, so each message pays every per-call and per-socket cost alone, on objects cold
in the CPU's caches (10,000 sockets' protocol, transport, cork, connection and
subscription objects, visited once each an iteration).

In one process per tree (``PYTHONPATH=<tree>/src``), on uvloop with the relay's collector
thresholds: 10,000 of the relay's WebSocket protocol objects
(``corked(websocket_protocol())``), handshaken through uvicorn on in-memory transports
(their ``write`` keeps a count and drops the bytes: no system call is measured), each
with the stream's own ``_Connection``, ``_Socket``, text hook and fanout subscription, on
a stand-in storage holding the queues' tails in the storage's own
:class:`~sealpost.server.storage.tail.QueueTails`. Then, for ``--rounds`` rounds:

- ``push``: one message queued to every device (the tails' ``added``), one
  ``LocalFanout.publish`` of all of them (each device's wake, its tail read, its frames
  built and written through the cork), and the end-of-iteration flush: CPU per push.
- ``ack``: every device's client acks its message: one masked ``ack`` frame each, into
  its protocol's ``data_received`` (the fast parser, the text hook, the acks committer),
  and the committer's end-of-iteration queueing (to a stand-in ``ack_each_nowait``
  answering at once): CPU per ack.

The devices are visited in a fresh random order each round, as a group commit's wake set
would. ``--baseline SRC`` (a tree's ``src``, e.g. /tmp/base22/src: main at a7f0a11) runs
alternating with this tree (bench/sides.py); medians of ``--runs`` processes.

    .venv/bin/python bench/percall.py --baseline /tmp/base22/src [--runs 3]
        [--json bench/results/percall.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEVICES = 10_000
KEYS = ("push_us", "ack_us")
_REQUEST = (
    b"GET /v1/stream HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class _Transport(asyncio.Transport):
    """A socket's transport that takes every write and counts its bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8765)}.get(
            name, default
        )


def _ack_frame(message_id: bytes) -> bytes:
    from websockets.utils import apply_mask

    payload = ('{"type":"ack","id":"' + message_id.hex() + '"}').encode()
    mask = os.urandom(4)
    return bytes((0x81, 0x80 | len(payload))) + mask + apply_mask(payload, mask)


async def _measure(rounds: int, warmup: int) -> dict[str, float]:
    from starlette.websockets import WebSocket
    from uvicorn.server import ServerState

    from sealpost.server import stream, stream_conn
    from sealpost.server.acks import AckCommitter
    from sealpost.server.fanout.local import LocalFanout
    from sealpost.server.storage.base import QueuedMessage
    from sealpost.server.storage.tail import QueueTails
    from sealpost.server.ws_protocol import ON_TEXT
    from sides import relay_ws_config

    loop = asyncio.get_running_loop()
    tails = QueueTails(max_bytes=1 << 30, max_messages=1000)

    class Storage:
        def fetch_known(
            self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
        ) -> Any:
            return tails.fetch((account_id, device_id), after_seq, limit)

        def ack_each_nowait(self, acks: Any) -> asyncio.Future[Any]:
            future = loop.create_future()
            for device in acks:
                tails.removed((device.account_id, device.device_id), device.message_ids)
            future.set_result([None] * len(acks))
            return future

    class Metrics:
        def inc(self, *args: Any) -> None:
            pass

        def counter(self, *args: Any) -> None:
            pass

    class Ctx:
        storage = Storage()
        metrics = Metrics()
        fanout = LocalFanout()

    ctx = Ctx()
    endpoint: Any = object.__new__(stream.StreamEndpoint)
    endpoint._ctx = ctx
    endpoint._pushed = 0
    endpoint._acks = AckCommitter(ctx.storage, ctx.metrics)  # type: ignore[arg-type]
    conns: list[Any] = []
    done = loop.create_future()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        address = (os.urandom(16), 1)
        sock = stream_conn.Socket(ws)
        conn = stream_conn.Connection(sock, 1, address, endpoint._acks)
        scope["extensions"][ON_TEXT](conn.on_text)
        tails.known(address, 0, [])
        ctx.fanout.subscribe(address, partial(endpoint._wake, conn, address))  # as _serve
        conns.append(conn)
        if len(conns) == DEVICES:
            done.set_result(None)
        await ws.receive()  # as the handler reads: held here, all its acks taken by the hook

    config = relay_ws_config(app)
    state = ServerState()
    protocols = []
    for _ in range(DEVICES):
        protocol = config.ws_protocol_class(config, state, {})  # type: ignore[call-arg]
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(_REQUEST)
        protocols.append(protocol)
        if len(protocols) % 500 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(done, 120)
    for _ in range(5):
        await asyncio.sleep(0)
    by_conn = {id(conn.sock.ws.scope): conn for conn in conns}
    pairs = [(by_conn[id(p.scope)], p) for p in protocols]
    body = os.urandom(200)
    seq = 0
    push = ack = 0.0
    count = 0
    for r in range(warmup + rounds):
        random.shuffle(pairs)
        frames = []
        items = []
        for conn, _ in pairs:
            seq += 1
            message_id = os.urandom(16)
            items.append((conn.address, QueuedMessage(message_id, seq, body, 1_700_000_000)))
            frames.append(_ack_frame(message_id))
        tails.added(items)
        addresses = [conn.address for conn, _ in pairs]
        await asyncio.sleep(0)
        t0 = time.process_time()
        await ctx.fanout.publish(addresses)
        await asyncio.sleep(0)  # the cork's flush
        t1 = time.process_time()
        for (_, protocol), frame in zip(pairs, frames, strict=True):
            protocol.data_received(frame)
        await asyncio.sleep(0)  # the committer's flush
        t2 = time.process_time()
        await asyncio.sleep(0)
        if r >= warmup:
            push += t1 - t0
            ack += t2 - t1
            count += len(pairs)
    assert len(tails) == DEVICES
    left = sum(len(tails.fetch(conn.address, 0, 1000) or ()) for conn in conns)
    assert left == 0, f"{left} messages not acked"
    pushed = sum(p.transport._transport.written for p in protocols)
    assert pushed > count * 300, pushed  # every push written: a message and "empty" each
    logging.disable(logging.CRITICAL)  # the handlers cancelled as the loop ends
    return {"push_us": push / count * 1e6, "ack_us": ack / count * 1e6}


def main() -> None:
    from sides import measure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a tree's src, e.g. /tmp/base22/src")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("bench/results/percall.json"))
    args = parser.parse_args()
    sides = measure(
        __file__,
        args.baseline,
        runs=args.runs,
        rounds=args.rounds,
        warmup=args.warmup,
        keys=KEYS,
    )
    base = sides.medians.get("baseline")
    print(f"{DEVICES:,} devices, one message each an iteration; CPU us per message (median)")
    print(f"{'tree':<12}{'push':>10}{'ack':>10}{'total':>10}{'vs baseline':>13}")
    for name, m in sides.medians.items():
        total = m["push_us"] + m["ack_us"]
        ratio = "" if base is None else f"{total / (base['push_us'] + base['ack_us']):.2f}x"
        print(f"{name:<12}{m['push_us']:>10.2f}{m['ack_us']:>10.2f}{total:>10.2f}{ratio:>13}")
    sides.write(args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        import gc

        import uvloop

        from sealpost.server.run import GC_THRESHOLDS

        rounds = int(sys.argv[sys.argv.index("--rounds") + 1])
        warmup = int(sys.argv[sys.argv.index("--warmup") + 1])
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        print(json.dumps(uvloop.run(_measure(rounds, warmup))))
    else:
        main()
