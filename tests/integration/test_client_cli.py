"""The ``sealpost`` command line as scripts use it: two profiles on a real server, JSON
output, safety numbers, verification, passcodes, and one-line errors with exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ServerProcess, unique_name


def sealpost(
    *args: str,
    profile: Path | None = None,
    passcode: str | None = "passcode-123",
    stdin: str = "",
    extra_env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    if passcode is not None:
        env["SEALPOST_PASSCODE"] = passcode
    env |= extra_env or {}
    cmd = [sys.executable, "-m", "sealpost.cli"]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    return subprocess.run(
        [*cmd, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, cwd=cwd
    )


def init(server: ServerProcess, root: Path) -> tuple[str, Path]:
    name = unique_name("cli")
    profile = root / name
    result = sealpost("init", "--server", server.url, "--username", name, profile=profile)
    assert result.returncode == 0, result.stderr
    return name, profile


def test_two_profiles_chat_from_the_command_line(server: ServerProcess, tmp_path: Path) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    sent = sealpost("send", bob, "hello from the shell", profile=alice_dir)
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    assert len(message_id) == 32
    piped = sealpost("send", bob, "-", profile=alice_dir, stdin="second line\n")
    assert piped.returncode == 0, piped.stderr

    received = sealpost("receive", "--wait", "10", "--json", profile=bob_dir)
    assert received.returncode == 0, received.stderr
    lines = [json.loads(line) for line in received.stdout.splitlines()]
    assert [(m["from"], m["text"]) for m in lines] == [
        (alice, "hello from the shell"),
        (alice, "second line"),
    ]
    assert lines[0]["id"] == message_id and isinstance(lines[0]["sent_at"], int)
    again = sealpost("receive", "--json", profile=bob_dir)
    assert again.returncode == 0 and again.stdout == ""

    history = sealpost("history", alice, "--json", profile=bob_dir)
    assert [json.loads(line)["text"] for line in history.stdout.splitlines()] == [
        "hello from the shell",
        "second line",
    ]
    contacts = sealpost("contacts", "--json", profile=bob_dir)
    [contact] = [json.loads(line) for line in contacts.stdout.splitlines()]
    assert contact["username"] == alice and contact["verified"] is False
    who = json.loads(sealpost("whoami", "--json", profile=alice_dir).stdout)
    assert who["username"] == alice and who["server"] == server.url

    a_number = sealpost("safety-number", bob, profile=alice_dir)
    b_number = sealpost("safety-number", alice, "--no-qr", profile=bob_dir)
    assert a_number.returncode == 0 and b_number.returncode == 0
    digits_a = "".join(c for c in a_number.stdout.splitlines()[1:4] for c in c if c.isdigit())
    digits_b = "".join(c for c in b_number.stdout.splitlines()[1:4] for c in c if c.isdigit())
    assert len(digits_a) == 60 and digits_a == digits_b
    assert "█" in a_number.stdout or "▀" in a_number.stdout  # the QR code
    refused = sealpost("verify", bob, profile=alice_dir)  # not a terminal, no --yes
    assert refused.returncode == 2
    verified = sealpost("verify", bob, "--yes", profile=alice_dir)
    assert verified.returncode == 0, verified.stderr
    contacts = sealpost("contacts", "--json", profile=alice_dir)
    assert json.loads(contacts.stdout.splitlines()[0])["verified"] is True


def test_errors_are_one_line_with_their_exit_codes(server: ServerProcess, tmp_path: Path) -> None:
    alice, alice_dir = init(server, tmp_path)
    wrong = sealpost("whoami", profile=alice_dir, passcode="not-the-passcode")
    assert wrong.returncode == 3 and wrong.stderr.strip() == "sealpost: wrong passcode"
    unknown = sealpost("send", "no-such-user-" + unique_name(), "hi", profile=alice_dir)
    assert unknown.returncode == 5 and len(unknown.stderr.strip().splitlines()) == 1
    assert "Traceback" not in unknown.stderr
    missing = sealpost("whoami", profile=tmp_path / "nothing")
    assert missing.returncode == 1 and "sealpost init" in missing.stderr
    taken = sealpost("init", "--server", server.url, "--username", alice, profile=tmp_path / "x")
    assert taken.returncode == 4 and "is taken" in taken.stderr
    assert not (tmp_path / "x").exists()  # a refused registration leaves no profile
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = sealpost("init", "--server", dead, "--username", "someone", profile=tmp_path / "y")
    assert down.returncode == 4 and down.stderr.startswith("sealpost: server unavailable")
    debug = sealpost("--debug", "whoami", profile=alice_dir, passcode="nope-nope")
    assert debug.returncode == 3 and "Traceback" in debug.stderr
    empty = sealpost("send", alice, "", profile=alice_dir)
    assert empty.returncode == 2


def test_passcode_change(server: ServerProcess, tmp_path: Path) -> None:
    _, profile = init(server, tmp_path)
    changed = sealpost(
        "passcode",
        "change",
        profile=profile,
        extra_env={"SEALPOST_NEW_PASSCODE": "a-new-passcode"},
    )
    assert changed.returncode == 0, changed.stderr
    assert sealpost("whoami", profile=profile).returncode == 3
    assert sealpost("whoami", profile=profile, passcode="a-new-passcode").returncode == 0
    short = sealpost(
        "passcode", "change", profile=profile, passcode="a-new-passcode",
        extra_env={"SEALPOST_NEW_PASSCODE": "abc"},
    )  # fmt: skip
    assert short.returncode == 2


def test_demo_runs_and_cleans_up() -> None:
    result = sealpost("demo", passcode=None)
    assert result.returncode == 0, result.stderr
    assert "they match" in result.stdout
    assert "bob received from alice: 'Hi Bob! This is end-to-end encrypted.'" in result.stdout
    assert "Cleaned up" in result.stdout


@pytest.mark.parametrize("command", [["receive"], ["history", "x"], ["contacts"]])
def test_commands_need_a_profile(tmp_path: Path, command: list[str]) -> None:
    result = sealpost(*command, profile=tmp_path / "none")
    assert result.returncode == 1 and "no profile" in result.stderr


def test_peer_text_cannot_forge_a_line_or_reach_the_terminal(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    forged = "hi\n[12:00] bank: your code is 1234"
    hostile = "\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b31m\u202eevil\u2028[12:01] x: y"
    for text in (forged, hostile):
        assert sealpost("send", bob, text, profile=alice_dir).returncode == 0
    shown = sealpost("receive", "--wait", "10", profile=bob_dir)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line for line in lines if line.startswith("[")] == [
        line for line in lines if line.startswith("[") and f"] {alice}: " in line
    ]
    assert len([line for line in lines if line.startswith("[")]) == 2
    assert "    │ [12:00] bank: your code is 1234" in lines
    for char in ("\x1b", "\x07", "\x9b", "\u202e", "\u2028"):
        assert char not in shown.stdout + shown.stderr
    assert "\\x1b]52;c;ZXZpbA==\\x07" in shown.stdout
    history = sealpost("history", alice, profile=bob_dir)
    assert "\x1b" not in history.stdout and "    │ [12:00] bank" in history.stdout
    exact = sealpost("history", alice, "--json", profile=bob_dir)
    assert [json.loads(line)["text"] for line in exact.stdout.splitlines()] == [forged, hostile]
    assert "\x1b" not in exact.stdout and "\x9b" not in exact.stdout


def test_send_with_a_file_and_a_caption_in_either_order_and_flags_after_the_command(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    payload = tmp_path / "notes.txt"
    payload.write_text("some notes")
    first = sealpost("send", bob, "--file", str(payload), "caption one", profile=alice_dir)
    assert first.returncode == 0, first.stderr
    second = sealpost("send", bob, "caption two", "--file", str(payload), profile=alice_dir)
    assert second.returncode == 0, second.stderr
    got = sealpost("receive", "--wait", "10", "--json", "--profile", str(bob_dir))
    assert got.returncode == 0, got.stderr
    messages = [json.loads(line) for line in got.stdout.splitlines()]
    assert [(m["text"], m["attachment"]["filename"]) for m in messages] == [
        ("caption one", "notes.txt"),
        ("caption two", "notes.txt"),
    ]
    who = sealpost("whoami", "--json", "--profile", str(alice_dir))
    assert who.returncode == 0 and json.loads(who.stdout)["username"] == alice
    before = sealpost("--json", "--profile", str(alice_dir), "whoami")
    assert before.returncode == 0 and json.loads(before.stdout)["username"] == alice
    no_json = sealpost("send", bob, "x", "--json", profile=alice_dir)
    assert no_json.returncode == 2 and "no --json" in no_json.stderr
