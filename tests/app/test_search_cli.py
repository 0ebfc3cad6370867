"""``sealpost search`` on a real profile: words and phrases, --in, --limit, --json, and
exit status 1 when nothing matched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app_helpers import make_client, passcode_of, run

from integration.helpers import ServerProcess


def _search(profile: Path, passcode: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    env["SEALPOST_PASSCODE"] = passcode
    return subprocess.run(
        [sys.executable, "-m", "sealpost.cli", "--profile", str(profile), "search", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_search_on_the_command_line(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> tuple[Path, str, str, str]:
        alice = await make_client(server, tmp_path)
        bob, carol = await make_client(server, tmp_path), await make_client(server, tmp_path)
        await bob.send(alice.username, "the orange boat leaves at noon")
        await carol.send(alice.username, "an orange cat and a boat")
        got = 0
        for _ in range(40):
            got += len(await alice.receive(wait=0.5))
            if got >= 2 and len(alice.search("orange")) == 2:
                break
        await alice.send(bob.username, "\x1b[31mred orange\x1b[0m")
        profile, name = alice.store.path, alice.username
        for c in (alice, bob, carol):
            await c.close()
        return profile, passcode_of(name), bob.username, carol.username

    profile, passcode, bob, carol = run(scenario())
    every = _search(profile, passcode, "orange", "--json")
    assert every.returncode == 0, every.stderr
    docs = [json.loads(line) for line in every.stdout.splitlines()]
    assert [d["peer"] for d in docs] == [bob, carol, bob]  # newest first
    assert docs[0]["text"] == "\x1b[31mred orange\x1b[0m" and "\x1b" not in every.stdout
    assert "orange" in docs[1]["snippet"]
    phrase = _search(profile, passcode, '"orange boat"', "--json")
    assert [json.loads(line)["text"] for line in phrase.stdout.splitlines()] == [
        "the orange boat leaves at noon"
    ]
    one = _search(profile, passcode, "boat", "--in", carol, "--limit", "5")
    assert one.returncode == 0 and "an orange cat and a boat" in one.stdout
    assert "noon" not in one.stdout
    limited = _search(profile, passcode, "orange", "--json", "--limit", "1")
    assert len(limited.stdout.splitlines()) == 1
    none = _search(profile, passcode, "submarine")
    assert none.returncode == 1 and none.stdout == ""
