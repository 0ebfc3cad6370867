"""Key-transparency log benchmark: appends, proof generation and verification at scale.

For logs of 10^4, 10^5 and 10^6 entries (``--quick``: 10^4 and 10^5), in a SQLite file in
a temporary folder (WAL, ``synchronous=FULL``, as the server runs its database), through
:class:`sealpost.transparency.SqliteNodeStore`:

``append``
    Entries appended as a server's sequencer would: ``--batch`` entries (default 1,000) per
    transaction, each entry encoded (:class:`LogEntry`), leaf-hashed and appended with one
    :func:`append`, then ``COMMIT`` (an fsync of the WAL). Rate = entries / time, over the
    whole build and over its last tenth (the log at its full size). Building the entries'
    fields is not timed; storing the entries themselves is the server's business, not
    timed either (only the node store is). For contrast, 300 more entries one per
    transaction (``1/commit``): what a server that does not batch would get. Queries are
    then made at size N (any past size is served the same way).
``inclusion`` / ``consistency``
    Proof generation on a fresh connection (SQLite's page cache empty, the OS's warm):
    ``--queries`` random leaf indices against the full tree; random pairs
    ``0 < size1 < size2 <= N``. Median (and p99) per proof.
``verify``
    The client's :func:`verify_inclusion` / :func:`verify_consistency` of those proofs,
    median per proof.
``server path``
    The relay's own append path: accounts registered through
    :class:`sealpost.server.storage.SqliteStorage` (each registration appends its log entry
    and nodes in the same transaction), 256 at a time as concurrent requests would be
    (they share group commits), and 300 one after another (one fsync each). Rate =
    registrations (= log entries) per second, prekeys omitted.
``proof size``
    The largest proof seen (hashes x 32 bytes, as carried), and the bound for that size:
    ceil(log2 N) hashes for inclusion, one more for consistency.

``map``
    The account map (:mod:`sealpost.transparency.smt`) at 10^6 accounts (``--quick``:
    10^4), in its own SQLite file through :class:`SqliteMapStore`: built in one pass
    (:func:`build`, one transaction: what the server does when it rebuilds the map from
    its log), then ``--queries`` proofs on a fresh connection for random present keys and
    as many absent ones (median), their verification (:func:`verify_map`), the largest
    and median proof (encoded bytes, as carried), and 300 single updates (:func:`insert`,
    one transaction each: the server's path for each log entry). Targets: proof <= 2 KiB,
    generation <= 1 ms, verification <= 0.5 ms. ``--map-only`` runs this part alone.

Method: ``time.perf_counter_ns`` around each call, the garbage collector off while timing;
medians, not means (a proof is a handful of B-tree lookups: outliers are the OS).

Targets at 10^6 (PASS/MISS; in a ``--quick`` run they are judged at 10^5 and say so):
proof generation <= 1 ms, verification <= 0.3 ms, proof <= 1 KiB, append >= 5,000
entries/s. The script always exits 0; the targets are for reading, not for CI.

    .venv/bin/python bench/transparency.py [--quick] [--map-only] [--json PATH] [--batch N]
                                           [--queries N]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sealpost.transparency import (
    LogEntry,
    MapProof,
    SqliteMapStore,
    SqliteNodeStore,
    append,
    consistency_proof,
    inclusion_proof,
    root,
    verify_consistency,
    verify_inclusion,
    verify_map,
)
from sealpost.transparency.smt import build as build_map
from sealpost.transparency.smt import insert as map_insert
from sealpost.transparency.smt import map_root, prove

SIZES_FULL = (10**4, 10**5, 10**6)
SIZES_QUICK = (10**4, 10**5)
TARGET_SIZE = 10**6
TARGET_GEN_MS = 1.0
TARGET_VERIFY_MS = 0.3
TARGET_PROOF_BYTES = 1024
TARGET_APPEND = 5000.0
NOW_MS = 1_790_000_000_000
SINGLES = 300  # one-entry transactions timed after the build, for contrast
MAP_FULL = 10**6
MAP_QUICK = 10**4
TARGET_MAP_PROOF_BYTES = 2048
TARGET_MAP_GEN_MS = 1.0
TARGET_MAP_VERIFY_MS = 0.5


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT, as a server
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _entries(rng: random.Random, first: int, count: int) -> list[LogEntry]:
    return [
        LogEntry(
            account_id=rng.randbytes(16),
            username=f"user{first + i}",
            account_key=rng.randbytes(32),
            devices=hashlib.sha256(rng.randbytes(8)).digest(),
            sequence=1,
            timestamp=NOW_MS + first + i,
        )
        for i in range(count)
    ]


def build(path: Path, n: int, batch: int, seed: int) -> dict[str, Any]:
    """Append ``n`` entries in batches of ``batch``, one transaction each."""
    rng = random.Random(seed)
    conn = _connect(path)
    store = SqliteNodeStore(conn)
    store.create_table()
    size, elapsed, tail_elapsed, tail_from = 0, 0.0, 0.0, n - n // 10
    commit_times: list[float] = []
    gc.disable()
    try:
        while size < n:
            entries = _entries(rng, size, min(batch, n - size))
            start = time.perf_counter()
            conn.execute("BEGIN")
            size = append(store, size, [entry.leaf_hash() for entry in entries])
            before_commit = time.perf_counter()
            conn.execute("COMMIT")
            end = time.perf_counter()
            commit_times.append(end - before_commit)
            elapsed += end - start
            if size > tail_from:
                tail_elapsed += end - start
    finally:
        gc.enable()
    head = root(store, n)
    # For contrast: one entry per transaction (a server that commits each change alone).
    singles = _entries(rng, n, SINGLES)
    gc.disable()
    try:
        start = time.perf_counter()
        for entry in singles:
            conn.execute("BEGIN")
            size = append(store, size, [entry.leaf_hash()])
            conn.execute("COMMIT")
        single_elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tail_count = n - tail_from
    return {
        "entries": n,
        "batch": batch,
        "append_per_s": n / elapsed,
        "append_tail_per_s": tail_count / tail_elapsed,
        "append_single_commit_per_s": SINGLES / single_elapsed,
        "commit_ms_median": 1e3 * statistics.median(commit_times),
        "db_bytes": path.stat().st_size,
        "root": head.hex(),
    }


def _timed(calls: list[Callable[[], object]]) -> tuple[list[float], list[object]]:
    """Each call's time in ms, and its result."""
    times, results = [], []
    gc.collect()
    gc.disable()
    try:
        for call in calls:
            start = time.perf_counter_ns()
            result = call()
            times.append((time.perf_counter_ns() - start) / 1e6)
            results.append(result)
    finally:
        gc.enable()
    return times, results


def _stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": ordered[-1],
    }


def queries(path: Path, n: int, count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    conn = _connect(path)
    store = SqliteNodeStore(conn)
    head = root(store, n)
    bound = (n - 1).bit_length()  # ceil(log2 n): the longest audit path in a tree of n

    # inclusion
    indices = [rng.randrange(n) for _ in range(count)]
    leaves = store.get_many([(0, i) for i in indices])
    conn.close()  # the proofs start from a cold SQLite cache
    conn = _connect(path)
    store = SqliteNodeStore(conn)
    gen_times, proofs = _timed([partial(inclusion_proof, store, i, n) for i in indices])
    inclusion = [p for p in proofs if isinstance(p, list)]
    ver_times, _ = _timed(
        [
            partial(verify_inclusion, leaf, i, n, p, head)
            for leaf, i, p in zip(leaves, indices, inclusion, strict=True)
        ]
    )
    inc = {
        "generate": _stats(gen_times),
        "verify": _stats(ver_times),
        "max_proof_bytes": 32 * max(len(p) for p in inclusion),
        "bound_proof_bytes": 32 * bound,
    }

    # consistency
    pairs = []
    for _ in range(count):
        size1 = rng.randrange(1, n)
        pairs.append((size1, rng.randrange(size1 + 1, n + 1)))
    roots = {s: root(store, s) for pair in pairs for s in pair}
    conn.close()
    conn = _connect(path)
    store = SqliteNodeStore(conn)
    gen_times, proofs = _timed([partial(consistency_proof, store, a, b) for a, b in pairs])
    consistency = [p for p in proofs if isinstance(p, list)]
    ver_times, _ = _timed(
        [
            partial(verify_consistency, a, b, roots[a], roots[b], p)
            for (a, b), p in zip(pairs, consistency, strict=True)
        ]
    )
    conn.close()
    cons = {
        "generate": _stats(gen_times),
        "verify": _stats(ver_times),
        "max_proof_bytes": 32 * max(len(p) for p in consistency),
        "bound_proof_bytes": 32 * (bound + 1),
    }
    return {"queries": count, "inclusion": inc, "consistency": cons}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    inc, cons = result["inclusion"], result["consistency"]
    gen = max(inc["generate"]["median_ms"], cons["generate"]["median_ms"])
    ver = max(inc["verify"]["median_ms"], cons["verify"]["median_ms"])
    size = max(inc["bound_proof_bytes"], cons["bound_proof_bytes"])
    append_rate = min(result["append_per_s"], result["append_tail_per_s"])
    rows = [
        ("proof generation <= 1 ms (median, worse of the two)", gen, TARGET_GEN_MS, "ms", False),
        ("verification <= 0.3 ms (median, worse of the two)", ver, TARGET_VERIFY_MS, "ms", False),
        ("proof <= 1 KiB (bound for the size)", size, TARGET_PROOF_BYTES, "B", False),
        (
            "append >= 5,000 entries/s (batched; whole build or last tenth)",
            append_rate,
            TARGET_APPEND,
            "/s",
            True,
        ),
    ]
    return [
        {
            "target": text,
            "value": value,
            "limit": limit,
            "unit": unit,
            "pass": value >= limit if at_least else value <= limit,
        }
        for text, value, limit, unit, at_least in rows
    ]


def render(results: list[dict[str, Any]], judged: dict[str, Any], mode: str) -> str:
    lines = [
        f"sealpost bench/transparency.py ({mode} run): SQLite node store, WAL, "
        f"synchronous=FULL, batches of {results[0]['batch']} entries per commit; "
        f"{results[0]['queries']} random queries per size (medians)",
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs",
        "",
    ]
    head = (
        f"{'entries':>9}{'append/s':>10}{'tail/s':>9}{'1/commit':>9}{'commit':>9}{'db/entry':>9}"
        f"{'incl gen':>10}{'cons gen':>10}{'incl ver':>10}{'cons ver':>10}"
        f"{'incl B':>8}{'cons B':>8}"
    )
    lines += [head, "-" * len(head)]
    for r in results:
        inc, cons = r["inclusion"], r["consistency"]
        lines.append(
            f"{r['entries']:>9,}{r['append_per_s']:>10,.0f}{r['append_tail_per_s']:>9,.0f}"
            f"{r['append_single_commit_per_s']:>9,.0f}"
            f"{r['commit_ms_median']:>7.2f}ms{r['db_bytes'] / r['entries']:>8.0f}B"
            f"{inc['generate']['median_ms']:>8.3f}ms{cons['generate']['median_ms']:>8.3f}ms"
            f"{inc['verify']['median_ms']:>8.3f}ms{cons['verify']['median_ms']:>8.3f}ms"
            f"{inc['max_proof_bytes']:>8}{cons['max_proof_bytes']:>8}"
        )
    lines += [
        "",
        "append/s over the whole build, tail/s over its last tenth, 1/commit with one entry "
        "per transaction; commit = median COMMIT (WAL fsync) of a batch;",
        "gen = proof generation on a cold SQLite cache; ver = client check; "
        "B = largest proof seen (hashes x 32)",
        "",
        f"targets (at {judged['entries']:,} entries"
        + ("" if judged["entries"] == TARGET_SIZE else "; 10^6 not run in this mode")
        + "):",
    ]
    for t in judged["targets"]:
        value = f"{t['value']:,.3f} {t['unit']}" if t["unit"] == "ms" else f"{t['value']:,.0f}"
        if t["unit"] != "ms":
            value += f" {t['unit']}".replace(" /s", "/s")
        lines.append(f"  {'PASS' if t['pass'] else 'MISS':<4}  {t['target']:<60} measured {value}")
    return "\n".join(lines)


def server_path(folder: Path, count: int, concurrency: int = 256) -> dict[str, Any]:
    """Registrations per second through the server's storage, each appending its entry."""
    import asyncio

    from sealpost.server.storage import AccountRecord, DeviceRecord, PreKeyUpload, SqliteStorage

    async def register(storage: SqliteStorage, i: int) -> None:
        account_id = os.urandom(16)
        await storage.create_account(
            AccountRecord(account_id, f"user{i}", os.urandom(32), os.urandom(32), True, 0),
            DeviceRecord(account_id, 1, os.urandom(190), 0),
            PreKeyUpload(),
        )

    async def run() -> dict[str, Any]:
        storage = SqliteStorage(folder / "server.sqlite")
        await storage.open()
        try:
            start = time.perf_counter()
            for first in range(0, count, concurrency):
                last = min(count, first + concurrency)
                await asyncio.gather(*(register(storage, i) for i in range(first, last)))
            concurrent = count / (time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(count, count + 300):
                await register(storage, i)
            sequential = 300 / (time.perf_counter() - start)
            assert await storage.log_size() == count + 300
        finally:
            await storage.close()
        return {
            "registrations": count,
            "concurrency": concurrency,
            "concurrent_per_s": round(concurrent),
            "sequential_per_s": round(sequential),
        }

    return asyncio.run(run())


def map_bench(path: Path, n: int, count: int, seed: int) -> dict[str, Any]:
    """The account map at ``n`` keys: build, proofs, verification, single updates."""
    rng = random.Random(seed)
    pairs = [(rng.randbytes(32), rng.randbytes(32)) for _ in range(n)]
    conn = _connect(path)
    store = SqliteMapStore(conn)
    store.create_tables()
    start = time.perf_counter()
    conn.execute("BEGIN")
    head = build_map(store, pairs)
    conn.execute("COMMIT")
    build_s = time.perf_counter() - start
    conn.close()
    present = [pairs[rng.randrange(n)] for _ in range(count)]
    absent: list[tuple[bytes, bytes | None]] = [(rng.randbytes(32), None) for _ in range(count)]
    conn = _connect(path)  # cold SQLite cache
    store = SqliteMapStore(conn)
    cases = present + absent
    gen_times, results = _timed([partial(prove, store, key) for key, _ in cases])
    proofs: list[MapProof] = []
    for (_, expected), result in zip(cases, results, strict=True):
        found, proof = result  # type: ignore[misc]
        assert found == expected
        proofs.append(proof)
    encoded = [p.encode() for p in proofs]
    ver_times, _ = _timed(
        [
            partial(verify_map, key, value, MapProof.decode(raw), head)
            for (key, value), raw in zip(cases, encoded, strict=True)
        ]
    )
    start = time.perf_counter()
    for _ in range(SINGLES):
        conn.execute("BEGIN")
        head = map_insert(store, [(rng.randbytes(32), rng.randbytes(32))])
        conn.execute("COMMIT")
    update_s = (time.perf_counter() - start) / SINGLES
    assert head == map_root(store)
    conn.close()
    sizes = sorted(len(raw) for raw in encoded)
    result = {
        "accounts": n,
        "build_s": round(build_s, 2),
        "generate": _stats(gen_times),
        "verify": _stats(ver_times),
        "max_proof_bytes": sizes[-1],
        "median_proof_bytes": sizes[len(sizes) // 2],
        "update_ms": round(update_s * 1e3, 3),
        "db_bytes": path.stat().st_size,
    }
    rows = [
        ("map proof <= 2 KiB (largest seen)", sizes[-1], TARGET_MAP_PROOF_BYTES, "B"),
        ("map proof generation <= 1 ms (median)", result["generate"]["median_ms"], 1.0, "ms"),
        ("map proof verification <= 0.5 ms (median)", result["verify"]["median_ms"], 0.5, "ms"),
    ]
    result["targets"] = [
        {"target": t, "value": v, "limit": limit, "unit": u, "pass": v <= limit}
        for t, v, limit, u in rows
    ]
    return result


def render_map(m: dict[str, Any]) -> str:
    lines = [
        f"account map at {m['accounts']:,} accounts (SqliteMapStore): built in "
        f"{m['build_s']:.1f} s, {m['db_bytes'] / m['accounts']:.0f} B/account; proof "
        f"median {m['median_proof_bytes']} B, largest {m['max_proof_bytes']} B; generation "
        f"{m['generate']['median_ms']:.3f} ms (p99 {m['generate']['p99_ms']:.3f}), "
        f"verification {m['verify']['median_ms']:.3f} ms; one update "
        f"(own transaction) {m['update_ms']:.3f} ms"
    ]
    for t in m["targets"]:
        lines.append(
            f"  {'PASS' if t['pass'] else 'MISS':<4}  {t['target']:<60} "
            f"measured {t['value']:,.3f} {t['unit']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^5 entries only")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--batch", type=int, default=1000, help="entries per commit")
    parser.add_argument("--queries", type=int, default=2000, help="random proofs per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--map-only", action="store_true", help="the account map part alone")
    args = parser.parse_args()
    started = time.perf_counter()
    mode = "quick" if args.quick else "full"
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sealpost-kt-bench-") as tmp:
        n_map = MAP_QUICK if args.quick else MAP_FULL
        kt_map = map_bench(Path(tmp) / "map.sqlite", n_map, args.queries, args.seed + 2)
        print(f"  map of {n_map:,} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        if args.map_only:
            print(render_map(kt_map))
            if args.json:
                args.json.write_text(json.dumps({"mode": mode, "map": kt_map}, indent=2) + "\n")
            return
        for n in SIZES_QUICK if args.quick else SIZES_FULL:
            path = Path(tmp) / f"log-{n}.sqlite"
            result = build(path, n, args.batch, args.seed)
            result.update(queries(path, n, args.queries, args.seed + 1))
            result["targets"] = targets(result)
            results.append(result)
            print(f"  {n:,} entries done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        server = server_path(Path(tmp), 2000 if args.quick else 10_000)
    judged = results[-1]
    print(render(results, judged, mode))
    print(
        f"server path (SqliteStorage registrations, each with its log entry): "
        f"{server['concurrent_per_s']:,}/s at {server['concurrency']} concurrent, "
        f"{server['sequential_per_s']:,}/s one at a time"
    )
    print(render_map(kt_map))
    elapsed = time.perf_counter() - started
    print(f"elapsed {elapsed:.1f} s")
    if args.json:
        document = {
            "benchmark": "bench/transparency.py",
            "mode": mode,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 2),
            "method": {
                "store": "SqliteNodeStore, file in a temporary folder, WAL, synchronous=FULL",
                "batch": args.batch,
                "queries": args.queries,
                "timer": "time.perf_counter_ns per call, GC off while timing",
                "statistic": "median (p99 and max also given)",
                "cache": "proofs generated on a fresh connection (cold SQLite cache)",
            },
            "machine": {
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
            },
            "results": results,
            "server_path": server,
            "map": kt_map,
            "judged_at": judged["entries"],
            "targets": judged["targets"],
            "all_targets_pass": all(t["pass"] for t in judged["targets"]),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
