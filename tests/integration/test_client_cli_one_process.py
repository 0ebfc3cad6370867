"""Two ``sealpost`` processes on one profile (issue 13 item 7): ``listen`` in one
terminal, ``send`` in another, never encrypt under the same message key: the send is
handed to the listening process (``send.sock``), so the recipient gets everything, the
listener's delivery receipts and the sends. Without a listener, concurrent sends take
turns on the profile lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import ServerProcess
from test_client_cli import init, sealpost


def listen(profile: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    env["SEALPOST_PASSCODE"] = "passcode-123"
    return subprocess.Popen(
        [sys.executable, "-m", "sealpost.cli", "--profile", str(profile), "listen", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def history(profile: Path, peer: str) -> list[dict[str, object]]:
    shown = sealpost("history", peer, "--json", profile=profile)
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines()]


def test_listen_and_send_in_two_processes_never_reuse_a_message_key(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    assert sealpost("send", bob, "ping", profile=alice_dir).returncode == 0
    listener = listen(bob_dir)
    try:
        wait_until(lambda: (bob_dir / "send.sock").is_socket())
        # while bob's listener receives "ping" and sends alice its receipt, two more
        # processes send on bob's profile: both are handed to the listener
        with ThreadPoolExecutor(2) as pool:
            sends = list(
                pool.map(
                    lambda text: sealpost("send", alice, text, profile=bob_dir),
                    ["pong 1", "pong 2"],
                )
            )
        for sent in sends:
            assert sent.returncode == 0, sent.stderr
            assert len(sent.stdout.strip()) == 32  # the message id, as a direct send prints
        wrong = sealpost("send", alice, "not me", profile=bob_dir, passcode="wrong-one")
        assert wrong.returncode == 3 and "wrong passcode" in wrong.stderr
        got = sealpost("receive", "--wait", "5", "--json", profile=alice_dir)
        assert got.returncode == 0, got.stderr
        texts = sorted(json.loads(line)["text"] for line in got.stdout.splitlines())
        assert texts == ["pong 1", "pong 2"]  # neither dropped as a reused key
        # and the listener's receipt for "ping" (encrypted in its own process) arrived too
        for _ in range(10):
            status = [m["status"] for m in history(alice_dir, bob) if m["text"] == "ping"]
            if status == ["delivered"]:
                break
            sealpost("receive", "--wait", "1", profile=alice_dir)
        assert status == ["delivered"]
    finally:
        listener.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = listener.communicate(timeout=30)
    assert "ping" in out, err
    assert not (bob_dir / "send.sock").exists()  # removed when the listener stopped
    # a listener that was killed leaves its socket behind: a send opens the profile itself
    killed = listen(bob_dir)
    wait_until(lambda: (bob_dir / "send.sock").is_socket())
    killed.kill()
    killed.communicate(timeout=30)
    assert (bob_dir / "send.sock").is_socket()
    assert sealpost("send", alice, "direct", profile=bob_dir).returncode == 0
    got = sealpost("receive", "--wait", "5", "--json", profile=alice_dir)
    assert [json.loads(line)["text"] for line in got.stdout.splitlines()] == ["direct"]


def test_concurrent_sends_without_a_listener_take_turns(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, alice_dir = init(server, tmp_path)
    _, bob_dir = init(server, tmp_path)
    assert sealpost("send", alice, "hello", profile=bob_dir).returncode == 0
    with ThreadPoolExecutor(3) as pool:
        sends = list(
            pool.map(lambda text: sealpost("send", alice, text, profile=bob_dir), ["a", "b", "c"])
        )
    assert [s.returncode for s in sends] == [0, 0, 0], [s.stderr for s in sends]
    got = sealpost("receive", "--wait", "5", "--json", profile=alice_dir)
    texts = sorted(json.loads(line)["text"] for line in got.stdout.splitlines())
    assert texts == ["a", "b", "c", "hello"]
