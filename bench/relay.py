"""Relay benchmark: messages/s relayed, delivery latency and server memory.

Starts ``sealpost server`` (SQLite, ``synchronous=FULL``, group commit: durability is not
traded for speed), registers N accounts of one device each, connects every device's
``/v1/stream`` and sends pre-encrypted 200-byte envelopes over ``/v1/sealed`` sockets with
delivery tokens, device i to device i+1. For N = 10, 100 and 1000 connected devices:

- **relayed msgs/s**: T messages pipelined (64 in flight per sealed socket); a message
  counts when its recipient has had it pushed and has sent the ack; the rate is T over
  the time from the first send to the last ack. Every message is checked to arrive exactly
  once.
- **idle latency**: one message at a time, from writing the send frame to the push
  arriving at the recipient; p50 and p99.
- **server RSS**: VmRSS (and the peak, VmHWM) with N devices connected, after the load.

The load generator (this process, asyncio) runs beside the server on the same 2 cores.
Rate limits are off: every client shares 127.0.0.1.

Targets (issue 3): ≥ 10,000 msg/s at N = 100 (measured here for comparison: Synapse about
32 msg/s, Prosody 5,700 to 7,600 msg/s with in-memory routing); idle p50 ≤ 0.7 ms and
p99 ≤ 3 ms; RSS ≤ 150 MiB with 1000 devices connected.

    .venv/bin/python bench/relay.py [--quick] [--json bench/results/relay.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from helpers import Device

from sealpost.cli.demo import start_server
from sealpost.server.auth import sign_request, sign_websocket_challenge

TARGET_RATE = 10_000.0
TARGET_P50_MS = 0.7
TARGET_P99_MS = 3.0
TARGET_RSS_MIB = 150.0
WINDOW = 64
BODY = 200


def rss(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    to_mib = lambda v: int(v.split()[0]) / 1024  # noqa: E731
    return to_mib(fields["VmRSS"]), to_mib(fields["VmHWM"])


async def register(url: str, count: int) -> list[Device]:
    devices = [Device.generate(one_time=1, kem_one_time=0) for _ in range(count)]
    tag = os.urandom(3).hex()
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        gate = asyncio.Semaphore(32)

        async def one(i: int, device: Device) -> None:
            body = json.dumps(device.registration(f"b{tag}-{i}")).encode()
            headers = sign_request(
                device.keys.signing_key,
                device.account_id,
                1,
                "POST",
                "/v1/accounts",
                body,
                now=int(time.time()),
                nonce=os.urandom(16),
            )
            headers["Content-Type"] = "application/json"
            async with gate:
                response = await http.post("/v1/accounts", content=body, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(f"registration failed: {response.text}")

        await asyncio.gather(*(one(i, d) for i, d in enumerate(devices)))
    return devices


class Receiver:
    """One device's stream: acks everything, records arrivals by message number."""

    def __init__(self, ws: ClientConnection, arrivals: dict[int, float], seen: list[int]) -> None:
        self.ws = ws
        self.arrivals = arrivals
        self.seen = seen
        self.waiters: dict[int, asyncio.Future[float]] = {}

    async def run(self) -> None:
        async for frame in self.ws:
            doc = json.loads(frame)
            if doc["type"] != "message":
                continue
            now = time.perf_counter()
            (number,) = struct.unpack_from(">Q", base64.b64decode(doc["body"]))
            self.seen.append(number)
            self.arrivals[number] = now
            waiter = self.waiters.pop(number, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
            await self.ws.send(json.dumps({"type": "ack", "id": doc["id"]}))


async def open_stream(ws_url: str, device: Device) -> ClientConnection:
    ws = await connect(ws_url + "/v1/stream", compression=None, max_size=2**20)
    challenge = json.loads(await ws.recv())["challenge"]
    answer = sign_websocket_challenge(
        device.keys.signing_key, device.account_id, 1, base64.b64decode(challenge)
    )
    await ws.send(json.dumps(answer))
    if json.loads(await ws.recv()) != {"type": "ready"}:
        raise RuntimeError("stream not ready")
    return ws


def envelope(number: int) -> str:
    return base64.b64encode(struct.pack(">Q", number) + os.urandom(BODY - 8)).decode()


def send_frame(req: int, device: Device, number: int) -> str:
    return json.dumps(
        {
            "type": "send",
            "req": req,
            "messages": [
                {"account_id": device.account_id.hex(), "device_id": 1, "body": envelope(number)}
            ],
            "tokens": {device.account_id.hex(): base64.b64encode(device.delivery_token).decode()},
        }
    )


async def run_n(url: str, pid: int, n: int, total: int, samples: int) -> dict[str, Any]:
    devices = await register(url, n)
    ws_url = url.replace("http://", "ws://")
    arrivals: dict[int, float] = {}
    seen: list[int] = []
    streams = await asyncio.gather(*(open_stream(ws_url, d) for d in devices))
    receivers = [Receiver(ws, arrivals, seen) for ws in streams]
    tasks = [asyncio.create_task(r.run()) for r in receivers]
    sockets = [
        await connect(ws_url + "/v1/sealed", compression=None, max_size=2**20)
        for _ in range(min(n, 100))
    ]
    await asyncio.sleep(0.5)
    rss_connected, _ = rss(pid)

    # -- throughput
    async def sender(k: int, ws: ClientConnection, numbers: range) -> None:
        window = asyncio.Semaphore(WINDOW)

        async def answers(count: int) -> None:
            for _ in range(count):
                doc = json.loads(await ws.recv())
                if doc["type"] != "sent":
                    raise RuntimeError(f"send refused: {doc}")
                window.release()

        reader = asyncio.create_task(answers(len(numbers)))
        for req, number in enumerate(numbers):
            await window.acquire()
            target = devices[(number % n + 1) % n]
            await ws.send(send_frame(req, target, number))
        await reader

    per = total // len(sockets)
    total = per * len(sockets)
    began = time.perf_counter()
    await asyncio.gather(
        *(sender(k, ws, range(k * per, (k + 1) * per)) for k, ws in enumerate(sockets))
    )
    while len(seen) < total and time.perf_counter() - began < 300:
        await asyncio.sleep(0.001)
    elapsed = max(arrivals.values()) - began if arrivals else float("inf")
    if sorted(seen) != list(range(total)):
        raise RuntimeError(f"lost or duplicated messages: {len(seen)} of {total}")
    rate = total / elapsed
    _, rss_peak = rss(pid)

    # -- idle latency, one at a time
    ws = sockets[0]
    latencies = []
    for i in range(samples):
        number = total + i
        target = (number % n + 1) % n
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        receivers[target].waiters[number] = waiter
        start = time.perf_counter()
        await ws.send(send_frame(i, devices[target], number))
        arrived = await asyncio.wait_for(waiter, 10)
        latencies.append((arrived - start) * 1000)
        doc = json.loads(await ws.recv())
        if doc["type"] != "sent":
            raise RuntimeError(f"send refused: {doc}")
    rss_after, rss_peak = rss(pid)
    for w in [*sockets, *streams]:
        await w.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()
    return {
        "devices": n,
        "messages": total,
        "relayed_msgs_per_s": rate,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "latency_samples": len(latencies),
        "rss_connected_mib": rss_connected,
        "rss_after_mib": rss_after,
        "rss_peak_mib": rss_peak,
    }


async def main_async(quick: bool) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="sealpost-bench-relay-"))
    os.environ["SEALPOST_RATE_PER_ADDRESS"] = "0"
    os.environ["SEALPOST_RATE_PER_ACCOUNT"] = "0"
    os.environ["SEALPOST_RATE_SEALED_PER_ADDRESS"] = "0"
    results = []
    plan = [(10, 4000, 200), (100, 10000, 200)] if quick else [
        (10, 20000, 1000),
        (100, 40000, 1000),
        (1000, 40000, 1000),
    ]  # fmt: skip
    try:
        for n, total, samples in plan:
            proc, url = await start_server(root / f"server-{n}")
            try:
                results.append(await run_n(url, proc.pid, n, total, samples))
            finally:
                proc.terminate()
                await proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description="sealpost relay benchmark")
    parser.add_argument("--quick", action="store_true", help="N = 10 and 100, fewer messages")
    parser.add_argument("--json", type=Path, default=Path("bench/results/relay.json"))
    args = parser.parse_args()
    try:
        import uvloop

        results = uvloop.run(main_async(args.quick))
    except ImportError:  # pragma: no cover - uvloop comes with the server's uvicorn[standard]
        results = asyncio.run(main_async(args.quick))
    print("sealpost relay benchmark (loopback; load generator beside the server; limits off)")
    print(
        f"{'N':>5} {'msgs/s':>9} {'vs 10k':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8} verdict"
    )
    for r in results:
        verdicts = []
        if r["devices"] == 100:
            verdicts.append(
                "rate " + ("PASS" if r["relayed_msgs_per_s"] >= TARGET_RATE else "FAIL")
            )
        verdicts.append("p50 " + ("PASS" if r["latency_p50_ms"] <= TARGET_P50_MS else "FAIL"))
        verdicts.append("p99 " + ("PASS" if r["latency_p99_ms"] <= TARGET_P99_MS else "FAIL"))
        if r["devices"] == 1000:
            verdicts.append(
                "RSS " + ("PASS" if r["rss_connected_mib"] <= TARGET_RSS_MIB else "FAIL")
            )
        print(
            f"{r['devices']:>5} {r['relayed_msgs_per_s']:>9,.0f} "
            f"{r['relayed_msgs_per_s'] / TARGET_RATE:>6.2f}x {r['latency_p50_ms']:>7.2f} "
            f"{r['latency_p99_ms']:>7.2f} {r['rss_connected_mib']:>8.1f} {', '.join(verdicts)}"
        )
    print("comparison measured here: Prosody 5,700-7,600 msg/s, Synapse ~32 msg/s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "results": results,
                "targets": {
                    "msgs_per_s_at_100": TARGET_RATE,
                    "p50_ms": TARGET_P50_MS,
                    "p99_ms": TARGET_P99_MS,
                    "rss_mib_at_1000": TARGET_RSS_MIB,
                },
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
