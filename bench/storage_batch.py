"""What the SQLite relay's group commit costs the event loop per message.

The relay's write path as ``bench/relay.py --devices 100`` drives it, without the network:
100 accounts of one device each, every device's queue tail known (as for a connected
device), and rounds of 1600 sends in flight at once (``enqueue_nowait``, one 200-byte
envelope each, device i to device i + 1), submitted together with the acks of the previous
round's messages (``ack_each_nowait``, as the streams' ack committer queues them, one call
per device, interleaved with the sends as the stream's acks arrive between them), then all
awaited. The database is a real file with
the storage's own pragmas (WAL, ``synchronous=FULL``, ``secure_delete=ON``).

Reported per message (one send and its ack): the CPU of the event loop's thread (where the
batch's statements run, and what bounds the relay: its loop is at 98% of a core), the
process's CPU (with the commit thread's COMMIT), and the wall time.

``--baseline SRC`` also runs the same measurement on the storage in another source tree
(e.g. ``git archive <commit> src | tar -x -C /tmp/base``), each side in its own process,
alternating, so that both share the machine's load; the table gives the medians.

    .venv/bin/python bench/storage_batch.py [--baseline /tmp/base/src] [--runs 5]
        [--rounds 40] [--json bench/results/storage_batch.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from sides import measure  # bench/sides.py

DEVICES = 100
IN_FLIGHT = 1600
BODY = 200


async def _measure(rounds: int, warmup: int) -> dict[str, float]:
    from sealpost.server.storage import (
        AccountRecord,
        DeviceRecord,
        Envelope,
        PreKeyUpload,
        SqliteStorage,
    )
    from sealpost.server.storage.base import DeviceAcks

    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteStorage(Path(tmp) / "relay.db")
        await storage.open()
        try:
            accounts = [os.urandom(16) for _ in range(DEVICES)]
            for i, account_id in enumerate(accounts):
                await storage.create_account(
                    AccountRecord(account_id, f"user{i}", os.urandom(32), b"h" * 32, True, 0),
                    DeviceRecord(account_id, 1, b"cert", 0),
                    PreKeyUpload(),
                )
            for account_id in accounts:  # connected: their tails are known
                await storage.fetch(account_id, 1, after_seq=0, limit=100)
            body = os.urandom(BODY)
            unacked: list[list[bytes]] = [[] for _ in range(DEVICES)]
            per_device = IN_FLIGHT // DEVICES
            loop_cpu = proc_cpu = wall = 0.0
            commits = storage.commits
            for r in range(warmup + rounds):
                acks, unacked = unacked, [[] for _ in range(DEVICES)]
                t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
                futures: list[asyncio.Future[object]] = []
                for k in range(IN_FLIGHT):
                    src = k % DEVICES
                    dst = (src + 1) % DEVICES
                    message_id = os.urandom(16)
                    unacked[dst].append(message_id)
                    futures.append(
                        storage.enqueue_nowait(
                            [Envelope(message_id, accounts[dst], 1, body)],
                            exempt={},
                            received_at=1,
                            expires_at=2**40,
                            max_depth=10_000,
                        )
                    )
                    if k % per_device == 0 and acks[k // per_device]:
                        device = k // per_device
                        futures.append(
                            storage.ack_each_nowait(
                                [DeviceAcks(accounts[device], 1, acks[device], None)]
                            )
                        )
                await asyncio.gather(*futures)
                t1, c1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
                if r == warmup - 1:
                    commits = storage.commits
                if r >= warmup:
                    wall += t1 - t0
                    loop_cpu += c1 - c0
                    proc_cpu += p1 - p0
            n = rounds * IN_FLIGHT
            return {
                "loop_cpu_us": loop_cpu / n * 1e6,
                "process_cpu_us": proc_cpu / n * 1e6,
                "wall_us": wall / n * 1e6,
                "ops_per_commit": (n + rounds * DEVICES) / max(1, storage.commits - commits),
            }
        finally:
            await storage.close()


def _child(rounds: int, warmup: int) -> None:
    print(json.dumps(asyncio.run(_measure(rounds, warmup))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, metavar="SRC", help="the storage to compare")
    parser.add_argument("--runs", type=int, default=5, help="processes per side")
    parser.add_argument("--rounds", type=int, default=40, help="measured rounds per process")
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
        keys=("loop_cpu_us", "process_cpu_us", "wall_us", "ops_per_commit"),
    )
    medians = sides.medians
    print(
        f"{IN_FLIGHT} sends in flight to {DEVICES} devices, with the acks of the round before;"
        f" medians of {args.runs} processes x {args.rounds} rounds"
    )
    print(
        f"{'':12} {'loop CPU us/msg':>16} {'process CPU us':>15} {'wall us':>8} {'ops/commit':>11}"
    )
    for name, m in medians.items():
        print(
            f"{name:12} {m['loop_cpu_us']:16.2f} {m['process_cpu_us']:15.2f}"
            f" {m['wall_us']:8.2f} {m['ops_per_commit']:11.1f}"
        )
    if args.baseline is not None:
        ratio = medians["baseline"]["loop_cpu_us"] / medians["this tree"]["loop_cpu_us"]
        print(f"loop CPU per message: baseline / this tree = {ratio:.2f}x")
    if args.json is not None:
        sides.write(args.json)


if __name__ == "__main__":
    main()
