"""What the relay's push path costs per push, from ``send_texts`` (the SEND_TEXTS
extension of :func:`sealpost.server.connections.corked`) through the cork
(:mod:`sealpost._corked`) to the socket: on real loopback sockets under uvloop, after real
WebSocket handshakes through uvicorn's protocol class as the relay builds it, with a
reader in another process draining them (so only the writer's CPU is counted).

Two loads, as ``bench/relay.py`` makes them:

- ``10000 x 1``: 10,000 sockets, one push (a message and ``empty``, one ``send_texts``)
  each per event-loop iteration: the load spread over many devices.
- ``100 x 16``: 100 sockets, 16 writes of one frame each per iteration (pushes and the
  ``sent`` answers of a sealed socket): what the cork joins.

Each variant runs in a child process of its own tree (``PYTHONPATH=<tree>/src``),
alternating over ``--rounds`` (the best round kept): ``baseline`` (``--baseline DIR``, a
checkout of main), ``this`` (this tree), and ``this+direct`` (this tree, a first write
of an iteration to a socket written straight through, later ones of the iteration held
and joined: idea 2 of issue 16). CPU is the writer process's (user + system, so the
``send`` system calls count, with the receiving side's TCP stack the kernel runs in
them), with the collector's thresholds the relay sets (``GC_THRESHOLDS``); ``writes`` is
the system calls the writer made per iteration (``syscw`` of ``/proc/self/io``).

    .venv/bin/python bench/cork_cost.py --baseline DIR [--rounds 2]
        [--json bench/results/cork_cost.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LOADS = {"10000 x 1": (10_000, 1), "100 x 16": (100, 16)}
_REQUEST = (
    b"GET /v1/stream HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def reader(port: int, n: int) -> None:
    """Open ``n`` WebSockets to ``port`` (handshakes in chunks, under the listen backlog),
    then read and discard everything until the server closes them all."""
    socks = []
    for start in range(0, n, 500):
        chunk = [
            socket.create_connection(("127.0.0.1", port)) for _ in range(start, min(n, start + 500))
        ]
        for s in chunk:
            s.sendall(_REQUEST)
        for s in chunk:
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            assert got.startswith(b"HTTP/1.1 101"), got[:40]
            s.setblocking(False)
        socks += chunk
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    open_ = len(socks)
    while open_:
        for key, _ in sel.select():
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(1 << 18)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(s)
                s.close()
                open_ -= 1


def syscw() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise RuntimeError("no syscw")


async def writer(n: int, per: int, iterations: int, direct: bool) -> dict[str, Any]:
    from uvicorn.server import ServerState

    from sealpost._corked import CorkedTransport
    from sealpost.server.connections import SEND_TEXTS
    from sealpost.server.stream import message_text
    from sides import relay_ws_config

    if direct:

        def write(self: Any, data: bytes) -> None:
            held = self._held
            if held is None:
                self._transport.write(data)
                self._held = []  # written this iteration: later writes are held
                self._corks.add(self)
            else:
                held.append(data)

        CorkedTransport.write = write  # type: ignore[method-assign]

    loop = asyncio.get_running_loop()
    fast: list[Any] = []
    ready = loop.create_future()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        fast.append(scope["extensions"][SEND_TEXTS])
        if len(fast) == n:
            ready.set_result(None)
        await receive()

    config = relay_ws_config(app)
    state = ServerState()
    protocol = config.ws_protocol_class
    server = await loop.create_server(
        lambda: protocol(config, state, {}),
        "127.0.0.1",
        0,
        backlog=4096,  # type: ignore[misc]
    )
    port = server.sockets[0].getsockname()[1]
    child = subprocess.Popen([sys.executable, __file__, "--reader", str(port), str(n)])
    await asyncio.wait_for(ready, 120)
    push = message_text(os.urandom(16), os.urandom(200), 1_700_000_000)
    texts = [push, '{"type":"empty"}'] if per == 1 else [push]
    refused = 0
    await asyncio.sleep(0.2)
    calls0, cpu0 = syscw(), time.process_time()
    for _ in range(iterations):
        for send_texts in fast:
            for _ in range(per):
                if not send_texts(texts):
                    refused += 1
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    cpu, calls = time.process_time() - cpu0, syscw() - calls0
    for conn in list(state.connections):
        conn.transport.close()  # type: ignore[attr-defined]
    server.close()
    await asyncio.get_running_loop().run_in_executor(None, child.wait)
    pushes = n * per * iterations
    return {
        "us_per_push": cpu / pushes * 1e6,
        "writes_per_iteration": calls / iterations,
        "refused": refused,
    }


def run_child(tree: Path, load: str, iterations: int, direct: bool) -> dict[str, Any]:
    n, per = LOADS[load]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    args = [sys.executable, __file__, "--child", str(n), str(per), str(iterations)]
    out = subprocess.run(
        args + (["--direct"] if direct else []), env=env, check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of main")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--json", type=Path, default=Path("bench/results/cork_cost.json"))
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    variants = {
        "baseline": (args.baseline, False),
        "this": (here, False),
        "this+direct": (here, True),
    }
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(args.rounds):
        for load in LOADS:
            iterations = args.iterations if LOADS[load][0] > 1000 else args.iterations * 20
            for name, (tree, direct) in variants.items():
                got = run_child(tree, load, iterations, direct)
                key = (load, name)
                if key not in best or got["us_per_push"] < best[key]["us_per_push"]:
                    best[key] = got
    rows = []
    print(f"{'load':<12}{'variant':<14}{'us/push':>10}{'vs baseline':>13}{'writes/iter':>13}")
    for load in LOADS:
        base = best[(load, "baseline")]["us_per_push"]
        for name in variants:
            got = best[(load, name)]
            rows.append({"load": load, "variant": name, **got})
            print(
                f"{load:<12}{name:<14}{got['us_per_push']:>10.2f}"
                f"{got['us_per_push'] / base:>12.2f}x{got['writes_per_iteration']:>13.0f}"
                + (f"  ({got['refused']} refused)" if got["refused"] else "")
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "bench/cork_cost.py", "baseline": str(args.baseline), "rows": rows}
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reader"]:
        reader(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--child"]:
        import gc

        import uvloop

        from sealpost.server.run import GC_THRESHOLDS

        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)  # as the relay runs
        n, per, iterations = map(int, sys.argv[2:5])
        result = uvloop.run(writer(n, per, iterations, "--direct" in sys.argv))
        print(json.dumps(result))
    else:
        main()
