"""What a user sees when a command cannot do what was asked: one clear sentence with the
right exit code, never an internal error's name (issue 14 item 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import ServerProcess
from test_client_cli import init, sealpost

from readonly import read_only


def _one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for internal in ("Error:", "Traceback", "unexpected error", "bad_response"):
        assert internal not in lines[0], lines[0]
    assert lines[0].startswith("sealpost: ")
    return lines[0]


def test_a_text_over_the_limit_is_refused_in_human_units(
    server: ServerProcess, tmp_path: Path
) -> None:
    _, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    for size, shown in ((1_000_000, "976.6 KiB"), (65_536, "64 KiB"), (64_513, "64,513 bytes")):
        refused = sealpost("send", bob, "-", profile=alice_dir, stdin="x" * size)
        assert refused.returncode == 2
        line = _one_sentence(refused)
        assert "at most 63 KiB" in line and f"this one is {shown}" in line and "--file" in line
    # the limit is what can be sent: the longest text, with a file, to a group
    made = sealpost("group", "create", "big", bob, profile=alice_dir)
    assert made.returncode == 0, made.stderr
    payload = tmp_path / ("a-file-with-a-rather-long-name-" + "n" * 150 + ".txt")
    payload.write_text("x")
    for to in (bob, "#big"):
        sent = sealpost(
            "send", to, "-", "--file", str(payload), profile=alice_dir, stdin="é" * 32_256
        )
        assert sent.returncode == 0, sent.stderr
    got = sealpost("receive", "--wait", "10", profile=bob_dir)
    assert got.returncode == 0 and got.stdout.count("éééé") >= 2


def test_groups_the_account_is_not_in(server: ServerProcess, tmp_path: Path) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    nosuch = sealpost("send", "#nosuchgroup", "hi", profile=alice_dir)
    assert nosuch.returncode == 5
    assert "no group named #nosuchgroup" in _one_sentence(nosuch)
    assert sealpost("group", "create", "crew", bob, profile=alice_dir).returncode == 0
    assert sealpost("receive", "--wait", "5", profile=bob_dir).returncode == 0
    assert sealpost("group", "remove", "crew", bob, profile=alice_dir).returncode == 0
    assert sealpost("receive", "--wait", "5", profile=bob_dir).returncode == 0
    for command in (("send", "#crew", "hi"), ("send", "crew", "hi"), ("timer", "#crew", "1h")):
        removed = sealpost(*command, profile=bob_dir)
        assert removed.returncode == 5
        assert _one_sentence(removed) == "sealpost: you are no longer a member of #crew"
    assert alice  # still a member: her send works
    assert sealpost("send", "#crew", "still here", profile=alice_dir).returncode == 0


def test_bad_names_codes_and_urls_are_usage_errors(server: ServerProcess, tmp_path: Path) -> None:
    _, alice_dir = init(server, tmp_path)
    bob, _ = init(server, tmp_path)
    empty = sealpost("group", "create", "", bob, profile=alice_dir)
    assert empty.returncode == 2 and "group name is 1 to 64 bytes" in _one_sentence(empty)
    garbage = sealpost("link", "accept", "garbage", profile=alice_dir)
    assert garbage.returncode == 2 and "not a link code" in _one_sentence(garbage)
    host_port = server.url.removeprefix("http://")
    no_scheme = sealpost(
        "init", "--server", host_port, "--username", "someone", profile=tmp_path / "new"
    )
    assert no_scheme.returncode == 2
    assert f"did you mean http://{host_port}?" in _one_sentence(no_scheme)
    assert not (tmp_path / "new").exists()
    audit = sealpost("audit", "--server", host_port, profile=tmp_path / "new")
    assert audit.returncode == 2 and "http://" in _one_sentence(audit)


def test_history_piped_into_head_stops_quietly(server: ServerProcess, tmp_path: Path) -> None:
    _, alice_dir = init(server, tmp_path)
    bob, _ = init(server, tmp_path)
    for _ in range(4):  # more than a pipe holds, so the write fails while history runs
        sent = sealpost("send", bob, "-", profile=alice_dir, stdin="y" * 60_000)
        assert sent.returncode == 0, sent.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    env["SEALPOST_PASSCODE"] = "passcode-123"
    history = subprocess.Popen(
        [sys.executable, "-m", "sealpost.cli", "--profile", str(alice_dir), "history", bob],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert history.stdout is not None and history.stderr is not None
    first = history.stdout.read(100)  # a reader that wants the start only, then goes
    history.stdout.close()
    stderr = history.stderr.read().decode()
    history.stderr.close()
    assert history.wait(timeout=60) == 141
    assert first.startswith(b"[") and stderr == ""


def test_read_only_commands_work_on_a_read_only_profile(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    assert sealpost("send", bob, "kept", profile=alice_dir).returncode == 0
    assert sealpost("group", "create", "ro", bob, profile=alice_dir).returncode == 0
    before = {p.name: p.read_bytes() for p in alice_dir.iterdir()}
    with read_only(alice_dir):
        for command in (
            ("whoami",),
            ("history", bob),
            ("contacts",),
            ("group", "list"),
            ("alarms",),
        ):
            result = sealpost(*command, profile=alice_dir)
            assert result.returncode == 0, (command, result.stderr)
        assert alice in sealpost("whoami", profile=alice_dir).stdout
        assert "kept" in sealpost("history", bob, profile=alice_dir).stdout
        refused = sealpost("send", bob, "a write", profile=alice_dir)
        assert refused.returncode == 1 and "read-only" in _one_sentence(refused)
    assert {p.name: p.read_bytes() for p in alice_dir.iterdir()} == before
    assert bob_dir.exists()
