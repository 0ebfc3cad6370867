"""Make the fixture of profiles written by an older sealpost (tests/fixtures/profile-5a35988).

tests/integration/test_client_old_profile.py opens these profiles with today's code: the
store migrates them forward, their history reads back, and they keep chatting. The fixture
is a server's data directory and two profiles (alice and bob, passcode ``old-profile``,
Argon2id's test parameters) that exchanged texts, a group and a disappearing-message timer.

Run it with the OLD code first on the path (it refuses to run on a current store)::

    git worktree add /tmp/old-5a35988 5a35988
    PYTHONPATH=/tmp/old-5a35988/src .venv/bin/python scripts/make_profile_fixture.py \\
        tests/fixtures/profile-5a35988
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASSCODE = "old-profile"
#: What the fixture's profiles hold, for the test to check against.
TEXTS = [
    ("alice", "bob", "hello bob, from an old sealpost"),
    ("bob", "alice", "hi alice"),
    ("alice", "bob", "a third message"),
]
GROUP = "oldgroup"
GROUP_TEXT = "hello group"
TIMER = ("alice", "bob", 86400)  # a one-day timer, set after the texts above
PREKEYS = 8  # one-time prekeys of each kind (the client uploads 100)


def _start_server(data: Path, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    logs.mkdir(parents=True, exist_ok=True)
    out = logs / "stdout.log"
    with out.open("wb") as stdout, (logs / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "sealpost.cli", "server", "--data", str(data)),
                *("--host", "127.0.0.1", "--port", "0"),
            ],
            stdout=stdout,
            stderr=stderr,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((logs / "stderr.log").read_text())
        for line in out.read_text().splitlines():
            if "listening on " in line:
                return proc, line.split("listening on ", 1)[1].strip()
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


async def _chat(root: Path, url: str) -> None:
    import sealpost.client.client as client_module
    from sealpost.client import Client
    from sealpost.client.store import TEST_PARAMS

    client_module.PREKEY_BATCH = PREKEYS  # a smaller fixture; the new code refills them

    clients = {
        name: await Client.create(
            root / name, PASSCODE, server_url=url, username=name, params=TEST_PARAMS
        )
        for name in ("alice", "bob")
    }
    try:
        for sender, peer, text in TEXTS:
            await clients[sender].send(peer, text)
            await clients[peer].receive(wait=3)
        await clients["alice"].create_group(GROUP, ["bob"])
        await clients["bob"].receive(wait=3)
        await clients["alice"].send("#" + GROUP, GROUP_TEXT)
        await clients["bob"].receive(wait=3)
        sender, peer, seconds = TIMER
        await clients[sender].set_timer(peer, seconds)
        await clients[peer].receive(wait=3)
        await clients["alice"].receive(wait=1)  # receipts
        for name, client in clients.items():
            other = "bob" if name == "alice" else "alice"
            assert len(client.history(other)) == len(TEXTS), client.history(other)
            assert [m.text for m in client.history("#" + GROUP)] == [GROUP_TEXT]
            assert client.timer(other) == seconds
    finally:
        for client in clients.values():
            await client.close()


def main() -> None:
    import sealpost.client.store as store

    if not hasattr(store, "Store") or Path(store.__file__).name != "store.py":
        raise SystemExit("run this with the old code (a store.py module) on PYTHONPATH")
    target = Path(sys.argv[1])
    if target.exists():
        raise SystemExit(f"{target} exists; remove it first")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url = _start_server(root / "server", root / "logs")
        try:
            asyncio.run(_chat(root, url))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        target.mkdir(parents=True)
        for name in ("server", "alice", "bob"):
            shutil.copytree(
                root / name,
                target / name,
                ignore=shutil.ignore_patterns("lock", "*-wal", "*-shm"),
            )
        commit = os.environ.get("FIXTURE_COMMIT", "5a35988")
        doc = {
            "commit": commit,
            "passcode": PASSCODE,
            "server_url": url,
            "schema_version": store.SCHEMA_VERSION,
        }
        (target / "fixture.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
