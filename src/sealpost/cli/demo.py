"""``sealpost demo``: a temporary server, two profiles, an exchange, then nothing left.

Everything is real: the server is the same program ``sealpost server`` runs (a subprocess on
a free loopback port, its data in a temporary directory), the two profiles are encrypted
stores with their own passcodes, and every message goes through PQXDH, the Double Ratchet
and sealed sender exactly as between two machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from sealpost.client.client import Client
from sealpost.client.records import MessageReceived

__all__ = ["run_demo", "start_server"]


async def start_server(data: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``sealpost server`` on a free port; returns the process and its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sealpost.cli",
        "server",
        "--data",
        str(data),
        "--port",
        "0",
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the demo server did not start")
                if "listening on " in line:
                    return proc, line.strip().rsplit(" ", 1)[-1]
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo() -> int:
    root = Path(tempfile.mkdtemp(prefix="sealpost-demo-"))
    proc = None
    clients: list[Client] = []
    try:
        _say("Starting a temporary sealpost server...")
        proc, url = await start_server(root / "server")
        _say(f"  server at {url} (data in {root / 'server'})")
        alice = await Client.create(
            root / "alice", secrets.token_urlsafe(12), server_url=url, username="alice"
        )
        clients.append(alice)
        bob = await Client.create(
            root / "bob", secrets.token_urlsafe(12), server_url=url, username="bob"
        )
        clients.append(bob)
        _say("Created two profiles, each an encrypted store unlocked by its own passcode:")
        _say("  alice and bob (account keys never leave their devices)")
        _say()
        sent = await alice.send("bob", "Hi Bob! This is end-to-end encrypted.")
        _say(f"alice → bob: {sent.text!r}   (sealed: the server does not learn it is from alice)")
        for event in await bob.receive(wait=10):
            if isinstance(event, MessageReceived):
                _say(f"bob received from {event.message.peer}: {event.message.text!r}")
        _say()
        a_number = alice.safety_number("bob")
        b_number = bob.safety_number("alice")
        _say("Safety numbers, as each side computes them:")
        _say(f"  alice sees: {' '.join(a_number[i : i + 5] for i in range(0, 60, 5))}")
        _say(f"  bob sees:   {' '.join(b_number[i : i + 5] for i in range(0, 60, 5))}")
        if a_number != b_number:
            _say("  MISMATCH: someone is in between!")
            return 1
        _say("  they match: no one is in between. Both mark each other verified.")
        alice.verify("bob")
        bob.verify("alice")
        _say()
        await bob.send("alice", "Hi Alice, numbers match. Talk soon.")
        _say("bob → alice: 'Hi Alice, numbers match. Talk soon.'")
        for event in await alice.receive(wait=10):
            if isinstance(event, MessageReceived):
                _say(f"alice received from {event.message.peer}: {event.message.text!r}")
        await bob.receive(wait=0)
        history = alice.history("bob")
        _say()
        _say("alice's history (stored only in her encrypted profile):")
        for message in history:
            who = "me" if message.outgoing else message.peer
            _say(f"  {who}: {message.text}  [{message.status}]")
        _say()
        _say("Try it yourself: sealpost init --server URL --username NAME (see README.md)")
        return 0
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        if proc is not None and proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
        shutil.rmtree(root, ignore_errors=True)
        _say("Cleaned up: the temporary server and both profiles are gone.")
