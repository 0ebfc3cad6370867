"""Chat app benchmark: a profile of 100,000 messages across 50 conversations.

What it measures, on a real profile (registered with a real ``sealpost server`` on
loopback, its history written straight into its encrypted store: 10,000 messages with one
contact, the rest spread over 49 others, texts drawn from a 5,000-word vocabulary):

- **list**: in the app (``ChatApp`` headless, 120x40), from the moment the profile is open
  (the passcode's Argon2id done, reported apart) to the conversation list shown with
  unread counts and previews. Target ≤ 500 ms.
- **open**: opening the 10,000-message conversation (its newest page, the list updated),
  and reading one more page as when scrolling to the top. Target ≤ 100 ms.
- **search**: ``Client.search`` p50/p99 over 200 single-word and 200 two-word phrase
  queries, beside the baseline in the same run: the same words found by a full scan
  (``body LIKE '%word%'``, what a store without the index must do). Target p50 ≤ 20 ms.
- **size**: the database with the index over the same database without it (the FTS
  tables dropped, then VACUUM), as a ratio.

    .venv/bin/python bench/app.py [--quick] [--json bench/results/app.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from textual.widgets import Input

from sealpost.app import ChatApp
from sealpost.app.main import MainScreen
from sealpost.cli.demo import start_server
from sealpost.client import Client
from sealpost.client.store import TEST_PARAMS, Store

TARGET_LIST, TARGET_OPEN, TARGET_SEARCH = 0.5, 0.1, 0.02
VOCABULARY = 5000


def _words(rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "de"]
    out: set[str] = set()
    while len(out) < VOCABULARY:
        out.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(out)


def populate(store: Store, total: int, conversations: int, big: int, seed: int = 7) -> list[str]:
    """Write ``total`` messages: ``big`` with the first contact, the rest spread evenly.
    Returns the vocabulary."""
    rng = random.Random(seed)
    words = _words(rng)
    peers = [rng.randbytes(16) for _ in range(conversations)]
    now = int(time.time() * 1000) - total * 1000
    with store.transaction() as conn:
        for i, peer in enumerate(peers):
            conn.execute(
                "INSERT INTO contacts (account_id, username, account_key, added) "
                "VALUES (?, ?, ?, ?)",
                (peer, f"friend{i:02d}", rng.randbytes(32), now // 1000),
            )
    per_peer = [big] + [(total - big) // (conversations - 1)] * (conversations - 1)
    per_peer[-1] += total - sum(per_peer)
    order = [p for p, n in zip(peers, per_peer, strict=True) for _ in range(n)]
    rng.shuffle(order)
    batch = []
    for n, peer in enumerate(order):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 20)))
        at = now + n * 1000
        batch.append((rng.randbytes(16), peer, rng.random() < 0.5, text, at, at, "delivered"))
        if len(batch) == 5000 or n == len(order) - 1:
            with store.transaction() as conn:
                conn.executemany(
                    "INSERT INTO messages (message_uuid, peer, outgoing, body, sent_at, "
                    "received_at, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    batch,
                )
            batch = []
    return words


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure_app(profile: Path, passcode: str) -> dict[str, float]:
    opened: dict[str, float] = {}

    async def opener(path: Path, code: str) -> Client:
        started = time.perf_counter()
        client = await Client.open(path, code)
        opened["derive"] = time.perf_counter() - started
        opened["at"] = time.perf_counter()
        return client

    app = ChatApp(profile, opener=opener, notify_command=None)
    out: dict[str, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        box = app.screen.query_one("#passcode", Input)
        box.value = passcode
        await pilot.press("enter")
        while not (isinstance(app.screen, MainScreen) and app.screen.ready):
            await asyncio.sleep(0.001)
        out["list_s"] = time.perf_counter() - opened["at"]
        out["open_profile_s"] = opened["derive"]
        main = app.screen
        started = time.perf_counter()
        await main.open("friend00")
        out["open_s"] = time.perf_counter() - started
        from sealpost.app.messages import MessageList

        view = main.query_one(MessageList)
        started = time.perf_counter()
        added = await view.load_older()
        out["older_page_s"] = time.perf_counter() - started
        out["older_page_messages"] = added
        await app.shutdown()
    return out


def measure_search(
    profile: Path, passcode: str, words: list[str], queries: int
) -> dict[str, float]:
    rng = random.Random(11)

    async def run() -> dict[str, float]:
        client = await Client.open(profile, passcode)
        try:
            singles = [rng.choice(words) for _ in range(queries)]
            bodies = [
                r[0]
                for r in client.store.read().execute(
                    "SELECT body FROM messages ORDER BY random() LIMIT ?", (queries,)
                )
            ]
            phrases = []
            for body in bodies:
                parts = body.split()
                i = rng.randrange(len(parts) - 1)
                phrases.append(f'"{parts[i]} {parts[i + 1]}"')
            timings: dict[str, list[float]] = {"word": [], "phrase": [], "scan": []}
            hits = 0
            for kind, items in (("word", singles), ("phrase", phrases)):
                for q in items:
                    started = time.perf_counter()
                    hits += len(client.search(q, limit=50))
                    timings[kind].append(time.perf_counter() - started)
            conn = client.store.read()
            for q in singles[: max(20, queries // 10)]:
                started = time.perf_counter()
                conn.execute(
                    "SELECT id FROM messages WHERE body LIKE ? ORDER BY id DESC LIMIT 50",
                    (f"%{q}%",),
                ).fetchall()
                timings["scan"].append(time.perf_counter() - started)
        finally:
            await client.close()
        out = {f"{k}_p50_s": _pct(v, 0.5) for k, v in timings.items()}
        out |= {f"{k}_p99_s": _pct(v, 0.99) for k, v in timings.items()}
        out["hits"] = hits
        return out

    return asyncio.run(run())


def measure_size(profile: Path, passcode: str, root: Path) -> tuple[int, int]:
    with Store.open(profile, passcode) as store:
        store.read().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with_index = (profile / "profile.db").stat().st_size
    copy = root / "no-index"
    shutil.copytree(profile, copy)
    (copy / "lock").unlink(missing_ok=True)
    with Store.open(copy, passcode) as store:
        conn = store.read()
        conn.executescript(
            "BEGIN; DROP TRIGGER messages_fts_insert; DROP TRIGGER messages_fts_delete; "
            "DROP TRIGGER messages_fts_update; DROP TABLE messages_fts; COMMIT;"
        )
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    without = (copy / "profile.db").stat().st_size
    with Store.open(profile, passcode) as store:
        store.read().execute("VACUUM")
        store.read().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with_index = (profile / "profile.db").stat().st_size
    return with_index, without


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 messages, fewer queries")
    parser.add_argument("--json", type=Path, default=Path("bench/results/app.json"))
    args = parser.parse_args()
    total, big, queries = (20_000, 10_000, 50) if args.quick else (100_000, 10_000, 200)
    root = Path(tempfile.mkdtemp(prefix="sealpost-bench-app-"))
    os.environ["SEALPOST_RATE_PER_ADDRESS"] = "0"
    loop = asyncio.new_event_loop()
    proc, url = loop.run_until_complete(start_server(root / "server"))
    passcode = "bench passcode"
    try:

        async def make() -> Path:
            client = await Client.create(
                root / "me", passcode, server_url=url, username="benchme", params=TEST_PARAMS
            )
            path = client.store.path
            words_holder.extend(populate(client.store, total, 50, big))
            await client.close()
            return path

        words_holder: list[str] = []
        started = time.perf_counter()
        profile = loop.run_until_complete(make())
        built = time.perf_counter() - started
        app = loop.run_until_complete(measure_app(profile, passcode))
        search = measure_search(profile, passcode, words_holder, queries)
        with_index, without = measure_size(profile, passcode, root)
    finally:
        proc.terminate()
        loop.run_until_complete(proc.wait())
        loop.close()
        shutil.rmtree(root, ignore_errors=True)

    def ms(v: float) -> str:
        return f"{v * 1000:.1f} ms"

    def verdict(v: float, target: float) -> str:
        return "PASS" if v <= target else f"FAIL (target {ms(target)})"

    rows = [
        ("list after unlock", ms(app["list_s"]), "", verdict(app["list_s"], TARGET_LIST)),
        (
            "open 10,000-message conversation",
            ms(app["open_s"]),
            "",
            verdict(app["open_s"], TARGET_OPEN),
        ),
        ("one older page (scroll up)", ms(app["older_page_s"]), "", ""),
        (
            "search one word p50",
            ms(search["word_p50_s"]),
            f"{search['scan_p50_s'] / search['word_p50_s']:.0f}x faster than scan",
            verdict(search["word_p50_s"], TARGET_SEARCH),
        ),
        ("search one word p99", ms(search["word_p99_s"]), "", ""),
        (
            "search phrase p50",
            ms(search["phrase_p50_s"]),
            "",
            verdict(search["phrase_p50_s"], TARGET_SEARCH),
        ),
        ("search phrase p99", ms(search["phrase_p99_s"]), "", ""),
        ("baseline: LIKE scan p50", ms(search["scan_p50_s"]), "baseline", ""),
        (
            "store size with index",
            f"{with_index / 2**20:.1f} MiB",
            f"{with_index / without:.2f}x without ({without / 2**20:.1f} MiB)",
            "",
        ),
    ]
    print(f"sealpost app benchmark ({total:,} messages, 50 conversations; built in {built:.0f} s)")
    print(f"{'measure':34} {'result':>12} {'compared':>34}  target")
    for name, value, ratio, target in rows:
        print(f"{name:34} {value:>12} {ratio:>34}  {target}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "messages": total,
                "conversations": 50,
                **app,
                **search,
                "db_bytes_with_index": with_index,
                "db_bytes_without_index": without,
                "index_size_ratio": with_index / without,
                "targets": {
                    "list_s": TARGET_LIST,
                    "open_s": TARGET_OPEN,
                    "search_p50_s": TARGET_SEARCH,
                },
                "python": sys.version.split()[0],
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
