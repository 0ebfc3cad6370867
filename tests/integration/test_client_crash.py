"""Killing clients (SIGKILL) at random moments while they send and receive loses nothing,
delivers nothing twice and never reuses a message key: a reused key would make the
receiver drop the second message as a duplicate, and the count would come up short."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

from helpers import ServerProcess, unique_name

from sealpost.client import Client
from sealpost.client.store import TEST_PARAMS

WORKER = Path(__file__).with_name("client_worker.py")
PASSCODE = "crash-test-passcode"
TOTAL = 60


def start(mode: str, profile: Path, peer: str) -> subprocess.Popen[bytes]:
    with (profile.parent / f"{mode}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, str(WORKER), mode, str(profile), peer, str(TOTAL)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def test_sigkill_during_send_and_receive_loses_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice_name, bob_name = unique_name("crash"), unique_name("crash")

    async def create() -> None:
        for name in (alice_name, bob_name):
            client = await Client.create(
                tmp_path / name, PASSCODE, server_url=server.url, username=name,
                params=TEST_PARAMS,
            )  # fmt: skip
            await client.close()

    asyncio.run(create())
    rng = random.Random(1234)
    procs = {
        "send": start("send", tmp_path / alice_name, bob_name),
        "receive": start("receive", tmp_path / bob_name, alice_name),
    }
    kills = {"send": 0, "receive": 0}
    deadline = time.monotonic() + 120
    while procs and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.05, 0.4))
        for mode, proc in list(procs.items()):
            code = proc.poll()
            if code == 0:
                del procs[mode]
            elif code is not None:
                raise AssertionError((tmp_path / f"{mode}.log").read_text())
            elif kills[mode] < 6 and rng.random() < 0.5:
                proc.kill()
                proc.wait()
                kills[mode] += 1
                procs[mode] = start(mode, tmp_path / (alice_name if mode == "send" else bob_name),
                                    bob_name if mode == "send" else alice_name)  # fmt: skip
    for proc in procs.values():
        proc.kill()
        proc.wait()
    assert not procs, "the workers did not finish in time"
    assert kills["send"] > 0 and kills["receive"] > 0

    async def check() -> tuple[list[str], list[str]]:
        alice = await Client.open(tmp_path / alice_name, PASSCODE)
        bob = await Client.open(tmp_path / bob_name, PASSCODE)
        try:
            sent = [m.text for m in alice.history(bob_name, 10_000) if m.outgoing]
            got = [m.text for m in bob.history(alice_name, 10_000)]
            return sent, got
        finally:
            await alice.close()
            await bob.close()

    sent, got = asyncio.run(check())
    expected = [f"m{i:04d}" for i in range(TOTAL)]
    assert sent == expected
    assert got == expected  # every message once, in order, none lost to a reused key
