"""What the relay's sealed send path costs the event loop per send, without the network.

The path a ``/v1/sealed`` send frame takes in the server, as ``bench/relay.py --devices
100`` drives it: the frame decoded, checked and submitted by the socket's text hook
(``StreamEndpoint._sealed_text``, where the tree has one; else, and for what it leaves,
``stream._frame`` and ``StreamEndpoint._send``: the per-address limit, the tokens,
``MessagesApi.prepare`` with its delivery-token check and quotas, the store),
group-committed by a real
:class:`~sealpost.server.storage.sqlite.SqliteStorage` (a file, with the storage's own
pragmas), and answered (``sent``) by the connection's answerer through the socket's
``SEND_TEXTS`` fast path, as on the real server. 100 accounts of one device each, their
queue tails known; 50 sealed connections with 32 sends in flight each (1600 a round, device
i to device i + 1, each with its recipient's delivery token); nothing is acknowledged
(only the send path is measured: the queues grow by 16 messages a round). Rate limits as
on the benchmark server (per-address, per-account and sealed per-address off; the sealed
byte quota on).

Reported per send: the CPU of the event loop's thread (what bounds the relay), the
process's CPU (with the commit thread's COMMIT) and the wall time; on uvloop, as the
server runs.

``--baseline SRC`` runs the same measurement on another source tree too (e.g. a ``git
worktree add --detach /tmp/base main``'s ``src``), each side in its own process,
alternating, so that both share the machine's load; the table gives the medians.

    .venv/bin/python bench/send_path.py [--baseline /tmp/base/src] [--runs 5]
        [--rounds 30] [--json bench/results/send_path.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sides import measure  # bench/sides.py

DEVICES = 100
SOCKETS = 50
WINDOW = 32
BODY = 200


async def _measure(rounds: int, warmup: int) -> dict[str, float]:
    import hashlib

    from starlette.websockets import WebSocket

    from sealpost.crypto.sign import SigningKey
    from sealpost.server import stream
    from sealpost.server.authn import Authenticator
    from sealpost.server.blobs import DirectoryBlobStore
    from sealpost.server.config import ServerConfig
    from sealpost.server.connections import SEND_TEXTS
    from sealpost.server.context import Context
    from sealpost.server.diskspace import DiskSpace
    from sealpost.server.fanout.local import LocalFanout
    from sealpost.server.frames import SEALED_CLIENT_FRAMES
    from sealpost.server.handlers.messages import MessagesApi
    from sealpost.server.limits import Limits
    from sealpost.server.metrics import Metrics
    from sealpost.server.ratelimit import LocalLimiters
    from sealpost.server.run import GC_THRESHOLDS
    from sealpost.server.storage import AccountRecord, DeviceRecord, PreKeyUpload, SqliteStorage

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        config = ServerConfig(
            data=data, rate_per_address=0, rate_per_account=0, rate_sealed_per_address=0
        )
        storage = SqliteStorage(data / "relay.db")
        await storage.open()
        limiters = LocalLimiters(clock=time.monotonic)
        ctx = Context(
            config=config,
            storage=storage,
            fanout=LocalFanout(),
            blobs=DirectoryBlobStore(data / "blobs", upload_timeout=config.upload_timeout),
            server_key=SigningKey.generate(os.urandom),
            metrics=Metrics(),
            clock=lambda: int(time.time()),
            rng=os.urandom,
            per_account=limiters.limiter("per_account", 0),
            per_address=limiters.limiter("per_address", 0),
            sealed_per_address=limiters.limiter("sealed_per_address", 0),
            limits=Limits.from_config(config, limiters),
            disk=DiskSpace(data, min_free=config.min_free_disk, clock=time.monotonic),
        )
        messages = MessagesApi(ctx, Authenticator(ctx))
        endpoint = stream.StreamEndpoint(ctx, messages)
        try:
            accounts, tokens = [], []
            for i in range(DEVICES):
                account_id, token = os.urandom(16), os.urandom(32)
                accounts.append(account_id)
                tokens.append(token)
                await storage.create_account(
                    AccountRecord(
                        account_id, f"user{i}", b"k" * 32, hashlib.sha256(token).digest(), True, 0
                    ),
                    DeviceRecord(account_id, 1, b"cert", 0),
                    PreKeyUpload(),
                )
            for account_id in accounts:  # connected: their tails are known
                await storage.fetch(account_id, 1, after_seq=0, limit=100)
            frames = []
            for account_id, token in zip(accounts, tokens, strict=True):
                a, t = account_id.hex(), base64.b64encode(token).decode()
                frames.append(
                    (
                        '{"type":"send","req":',
                        f',"messages":[{{"account_id":"{a}","device_id":1,"body":"',
                        f'"}}],"tokens":{{"{a}":"{t}"}}}}',
                    )
                )
            answered = [0]
            failed: list[str] = []
            done: list[asyncio.Future[None] | None] = [None]
            target = [0]

            def fast(texts: Sequence[str]) -> bool:
                for text in texts:
                    if not text.startswith('{"type":"sent"'):
                        failed.append(text)
                answered[0] += len(texts)
                future = done[0]
                if answered[0] >= target[0] and future is not None and not future.done():
                    future.set_result(None)
                return True

            async def never() -> Any:
                raise AssertionError("not read")

            async def discard(message: Any) -> None:
                raise AssertionError("not sent by ASGI")

            conns = []
            for k in range(SOCKETS):
                scope = {
                    "type": "websocket",
                    "path": "/v1/sealed",
                    "headers": [],
                    "client": ("127.0.0.1", 40000 + k),
                    "extensions": {SEND_TEXTS: fast},
                }
                conns.append(stream._Connection(stream._Socket(WebSocket(scope, never, discard))))
            bodies = [base64.b64encode(os.urandom(BODY)).decode() for _ in range(WINDOW * SOCKETS)]
            # The server's collector settings (:func:`sealpost.server.run.serve`).
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            loop = asyncio.get_running_loop()
            # The socket's text hook, where the tree has one: it takes the sends whose checks
            # are answered from memory, as the server's protocol hands it each frame.
            hook = getattr(endpoint, "_sealed_text", None)
            seen = [0.0]
            loop_cpu = proc_cpu = wall = 0.0
            sends = 0
            for r in range(warmup + rounds):
                texts = []
                for w in range(WINDOW):
                    for k in range(SOCKETS):
                        src = (k + w * SOCKETS) % DEVICES
                        head, middle, tail = frames[(src + 1) % DEVICES]
                        text = f"{head}{w}{middle}{bodies[w * SOCKETS + k]}{tail}"
                        texts.append((k, text, text.encode()))
                answered[0] = 0
                target[0] = len(texts)
                done[0] = loop.create_future()
                t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
                for k, text, data in texts:
                    if hook is not None and hook(conns[k], seen, data):
                        continue  # taken as the socket's frames are parsed
                    message = {"type": "websocket.receive", "text": text}
                    frame = stream._frame(message, SEALED_CLIENT_FRAMES, "a send frame")
                    await endpoint._send(conns[k], frame, None)
                await done[0]
                t1, c1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
                if failed:
                    raise RuntimeError(f"a send was refused: {failed[0]}")
                if r >= warmup:
                    wall += t1 - t0
                    loop_cpu += c1 - c0
                    proc_cpu += p1 - p0
                    sends += len(texts)
            return {
                "loop_cpu_us": loop_cpu / sends * 1e6,
                "process_cpu_us": proc_cpu / sends * 1e6,
                "wall_us": wall / sends * 1e6,
            }
        finally:
            await storage.close()


def _child(rounds: int, warmup: int) -> None:
    try:  # the server's loop (uvicorn sets up uvloop when installed)
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        print(json.dumps(runner.run(_measure(rounds, warmup))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, metavar="SRC", help="the source to compare")
    parser.add_argument("--runs", type=int, default=5, help="processes per side")
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds per process")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.rounds, args.warmup)
        return
    sides = measure(
        __file__,
        args.baseline,
        runs=args.runs,
        rounds=args.rounds,
        warmup=args.warmup,
        keys=("loop_cpu_us", "process_cpu_us", "wall_us"),
    )
    medians = sides.medians
    print(
        f"{SOCKETS} sealed sockets x {WINDOW} sends in flight to {DEVICES} devices;"
        f" medians of {args.runs} processes x {args.rounds} rounds of"
        f" {SOCKETS * WINDOW} sends"
    )
    print(f"{'':12} {'loop CPU us/send':>17} {'process CPU us':>15} {'wall us':>8}")
    for name, m in medians.items():
        print(f"{name:12} {m['loop_cpu_us']:17.2f} {m['process_cpu_us']:15.2f} {m['wall_us']:8.2f}")
    if args.baseline is not None:
        ratio = medians["baseline"]["loop_cpu_us"] / medians["this tree"]["loop_cpu_us"]
        print(f"loop CPU per send: baseline / this tree = {ratio:.2f}x")
    if args.json is not None:
        sides.write(args.json)


if __name__ == "__main__":
    main()
