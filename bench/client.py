"""Client benchmark: end-to-end messages/s for one pair, and profile unlock time.

What it measures, all against a real ``sealpost server`` on loopback (SQLite, durable):

- **end to end**: a sender process sends N texts to a receiver process that listens
  (``Client.events``). Each message pays the whole way: PQXDH once, then a ratchet step,
  padding, sealed sender (HPKE), the sender's store commit, the relay's durable commit,
  the push, the receiver's unseal, ratchet step and store commit, the ack, and batched
  delivery receipts back. The rate is N over the time from the first send to the last
  message stored by the receiver.
- **raw relay** (the baseline, in the same run): the same N 200-byte envelopes, pre-built,
  sent over ``/v1/sealed`` and received and acked over ``/v1/stream`` with no crypto and no
  store. ``e2e / raw`` says what the client costs on top of the relay.
- **unlock**: ``Client.open`` of a profile with the default Argon2id parameters (t=3,
  m=64 MiB, p=4), median of several; and the cost of one Argon2id derivation alone, which
  is what each offline passcode guess costs an attacker (unlock must not be cheaper).

``SEALPOST_BENCH_PROFILE=sender`` (or ``receiver``) prints that process's cProfile.

Rate limits and the sealed-sender quotas (a stranger's messages to an account without
its delivery token) are switched off on the benchmark server: every client shares
127.0.0.1, and the sender never receives, so it never learns the receiver's token.

``--baseline DIR`` measures, in the same run and against the same server, the end-to-end
rate of the client code of another checkout too (``git worktree add /tmp/before 5a35988``;
its ``src`` on ``PYTHONPATH`` in a child process), alternating ``--rounds`` times, and
reports the ratio of the medians.

Targets (issues 4 and 15): at least 3,000 messages/s end to end, and at least the
baseline's rate (1.0x); unlock within 0.5 s.

    .venv/bin/python bench/client.py [--quick] [--baseline /tmp/before [--rounds 3]]
        [--json bench/results/client.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from sealpost.cli.demo import start_server
from sealpost.client import Client, MessageReceived
from sealpost.client.store import DEFAULT_PARAMS, TEST_PARAMS, _derive

TARGET_E2E = 3000.0
TARGET_UNLOCK = 0.5
PASSCODE = "bench-passcode"


# ---------------------------------------------------------------------- end to end


def _profiled(role: str, run: Any) -> None:
    if os.environ.get("SEALPOST_BENCH_PROFILE") != role:
        run()
        return
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(run)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)


def _receiver(profile: str, peer: str, total: int, ready: Any, done: Any) -> None:
    async def main() -> None:
        client = await Client.open(profile, PASSCODE)
        got = 0
        ready.put(True)
        async for event in client.events():
            if isinstance(event, MessageReceived) and event.message.peer == peer:
                got += 1
                if got == total:
                    done.put(time.time())
                    break
        await client.close()

    _profiled("receiver", lambda: asyncio.run(main()))


def _sender(profile: str, peer: str, total: int, start: Any) -> None:
    async def main() -> None:
        client = await Client.open(profile, PASSCODE)
        await client.send(peer, "warm-up")  # the PQXDH session and sender certificate
        start.put(time.time())
        chunk = 5000
        for first in range(0, total, chunk):
            await asyncio.gather(
                *(
                    client.send(peer, f"benchmark message number {i}")
                    for i in range(first, min(total, first + chunk))
                )
            )
        await asyncio.sleep(1)  # let receipts settle before closing
        await client.close()

    _profiled("sender", lambda: asyncio.run(main()))


_ROUND = iter(range(1_000_000))


async def _profiles(url: str, root: Path) -> tuple[str, str]:
    names = []
    tag = f"{os.getpid()}r{next(_ROUND)}"  # a new pair each round (--rounds)
    for name in (f"alice{tag}", f"bob{tag}"):
        client = await Client.create(
            root / name, PASSCODE, server_url=url, username=name, params=TEST_PARAMS
        )
        await client.close()
        names.append(name)
    return names[0], names[1]


def end_to_end(url: str, root: Path, total: int) -> float:
    alice, bob = asyncio.run(_profiles(url, root))
    ctx = multiprocessing.get_context("spawn")
    ready, done, start = ctx.Queue(), ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=_receiver, args=(str(root / bob), alice, total + 1, ready, done))
    receiver.start()
    ready.get(timeout=60)
    sender = ctx.Process(target=_sender, args=(str(root / alice), bob, total, start))
    sender.start()
    began = start.get(timeout=60)
    ended = done.get(timeout=600)
    sender.join(120)
    receiver.join(120)
    return total / (ended - began)


# ---------------------------------------------------------------------- raw relay


async def raw_relay(url: str, root: Path, total: int) -> float:
    """Pre-built 200-byte envelopes through the relay, no crypto, no store."""
    from sealpost.protocol.signing import sign_websocket_challenge

    name = f"raw{os.getpid()}"
    client = await Client.create(
        root / name, PASSCODE, server_url=url, username=name, params=TEST_PARAMS
    )
    account, token = client.account_id, client._ctx.delivery_token
    signing_key, device = client._ctx.device.signing_key, client.device_id
    await client.close()
    ws_url = url.replace("http://", "ws://")
    body = base64.b64encode(os.urandom(200)).decode()
    frame_tokens = {account.hex(): base64.b64encode(token).decode()}
    async with (
        connect(ws_url + "/v1/stream", compression=None) as stream,
        connect(ws_url + "/v1/sealed", compression=None) as sealed,
    ):
        challenge = json.loads(await stream.recv())["challenge"]
        answer = sign_websocket_challenge(signing_key, account, device, base64.b64decode(challenge))
        await stream.send(json.dumps(answer))
        assert json.loads(await stream.recv()) == {"type": "ready"}
        window = asyncio.Semaphore(64)

        async def answers() -> None:
            for _ in range(total):
                doc = json.loads(await sealed.recv())
                assert doc["type"] == "sent", doc
                window.release()

        async def receive() -> None:
            got = 0
            while got < total:
                doc = json.loads(await stream.recv())
                if doc["type"] == "message":
                    got += 1
                    await stream.send(json.dumps({"type": "ack", "id": doc["id"]}))

        began = time.perf_counter()
        tasks = [asyncio.create_task(answers()), asyncio.create_task(receive())]
        for req in range(total):
            await window.acquire()
            message = {"account_id": account.hex(), "device_id": device, "body": body}
            await sealed.send(
                json.dumps(
                    {"type": "send", "req": req, "messages": [message], "tokens": frame_tokens}
                )
            )
        await asyncio.gather(*tasks)
        return total / (time.perf_counter() - began)


# ---------------------------------------------------------------------- unlock


def unlock_times(root: Path, repetitions: int) -> tuple[float, float]:
    from sealpost.client.store import Store

    path = root / "unlock"
    Store.create(path, PASSCODE, params=DEFAULT_PARAMS).close()
    opens, derives = [], []
    for _ in range(repetitions):
        start = time.perf_counter()
        Store.open(path, PASSCODE).close()
        opens.append(time.perf_counter() - start)
        start = time.perf_counter()
        _derive(PASSCODE, os.urandom(16), DEFAULT_PARAMS)
        derives.append(time.perf_counter() - start)
    return statistics.median(opens), statistics.median(derives)


# ---------------------------------------------------------------------- main


def _baseline_e2e(checkout: Path, url: str, total: int) -> float:
    """The end-to-end rate of the client code in ``checkout`` (this file, run in a child
    process with that checkout's ``src`` first on the path), against the same server."""
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"))
    out = subprocess.run(
        [sys.executable, __file__, "--e2e-only", url, "--messages", str(total)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["e2e"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, one repetition")
    parser.add_argument("--json", type=Path, default=Path("bench/results/client.json"))
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--baseline", type=Path, help="a checkout whose client to compare")
    parser.add_argument("--rounds", type=int, default=1, help="alternating e2e runs each")
    parser.add_argument("--e2e-only", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    total = args.messages or (2000 if args.quick else 10000)
    root = Path(tempfile.mkdtemp(prefix="sealpost-bench-client-"))
    if args.e2e_only:  # the child of --baseline: one measure, as JSON
        try:
            print(json.dumps({"e2e": end_to_end(args.e2e_only, root, total)}))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return 0
    proc = None
    before: list[float] = []
    after: list[float] = []
    try:

        async def boot() -> tuple[Any, str]:
            return await start_server(root / "server")

        # rate limits and sealed quotas off: all clients share one address
        for name in (
            "RATE_PER_ADDRESS",
            "RATE_PER_ACCOUNT",
            "RATE_SEALED_PER_ADDRESS",
            "SEALED_QUOTA_MESSAGES",
            "SEALED_QUOTA_BYTES",
            "SEALED_BYTES_PER_ADDRESS",
        ):
            os.environ["SEALPOST_" + name] = "0"
        loop = asyncio.new_event_loop()
        proc, url = loop.run_until_complete(boot())
        raw = asyncio.run(raw_relay(url, root, total))
        for _ in range(max(1, args.rounds)):
            if args.baseline is not None:
                before.append(_baseline_e2e(args.baseline, url, total))
            after.append(end_to_end(url, root, total))
        e2e = statistics.median(after)
        base = statistics.median(before) if before else None
        unlock, derive = unlock_times(root, 1 if args.quick else 5)
    finally:
        if proc is not None:
            proc.terminate()
            loop.run_until_complete(proc.wait())
            loop.close()
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        ("raw relay, 200 B envelopes", f"{raw:,.0f} msg/s", "baseline", ""),
        (
            "end to end, one pair",
            f"{e2e:,.0f} msg/s",
            f"{e2e / raw:.2f}x raw",
            "PASS" if e2e >= TARGET_E2E else f"FAIL (target {TARGET_E2E:,.0f})",
        ),
        *(
            []
            if base is None
            else [
                (
                    f"  baseline client ({args.baseline})",
                    f"{base:,.0f} msg/s",
                    f"after/before {e2e / base:.2f}x",
                    "PASS" if e2e >= base else "FAIL (target 1.0x)",
                )
            ]
        ),
        (
            "unlock (Argon2id t=3 m=64MiB p=4)",
            f"{unlock * 1000:.0f} ms",
            f"guess costs {derive * 1000:.0f} ms",
            "PASS" if unlock <= TARGET_UNLOCK and derive >= 0.8 * unlock else "FAIL",
        ),
    ]
    print(f"sealpost client benchmark ({total} messages; rate limits off; loopback)")
    print(f"{'measure':36} {'result':>14} {'compared':>22}  target")
    for name, value, ratio, verdict in rows:
        print(f"{name:36} {value:>14} {ratio:>22}  {verdict}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "messages": total,
                "raw_relay_msgs_per_s": raw,
                "e2e_msgs_per_s": e2e,
                "e2e_over_raw": e2e / raw,
                "e2e_runs": after,
                "baseline": None if base is None else str(args.baseline),
                "baseline_e2e_msgs_per_s": base,
                "baseline_e2e_runs": before,
                "e2e_over_baseline": None if base is None else e2e / base,
                "unlock_s": unlock,
                "argon2id_guess_s": derive,
                "targets": {"e2e_msgs_per_s": TARGET_E2E, "unlock_s": TARGET_UNLOCK},
                "python": sys.version.split()[0],
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
