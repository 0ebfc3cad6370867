"""The command line for groups, files, timers, deletion, linking and devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import ServerProcess
from test_client_cli import init, sealpost


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_group_file_timer_and_delete_from_the_shell(server: ServerProcess, tmp_path: Path) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    carol, carol_dir = init(server, tmp_path)
    made = sealpost("group", "create", "crew", bob, carol, profile=alice_dir)
    assert made.returncode == 0, made.stderr
    assert "#crew" in made.stdout
    listed = sealpost("group", "list", "--json", profile=alice_dir)
    (group,) = _json_lines(listed.stdout)
    assert group["name"] == "crew" and group["admins"] == [alice]
    assert sorted(group["members"]) == sorted([alice, bob, carol])  # type: ignore[arg-type]
    for profile in (bob_dir, carol_dir):
        assert sealpost("receive", "--wait", "5", profile=profile).returncode == 0

    payload = tmp_path / "notes.bin"
    payload.write_bytes(os.urandom(300_000))
    sent = sealpost("send", "crew", "see attached", "--file", str(payload), profile=alice_dir)
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    got = sealpost(
        "receive", "--wait", "10", "--json", "--save-dir", str(tmp_path / "bob-in"), profile=bob_dir
    )
    assert got.returncode == 0, got.stderr
    (message,) = [m for m in _json_lines(got.stdout) if m.get("text") == "see attached"]
    assert message["group"] and message["author"] == alice and message["peer"] == "crew"
    attachment = message["attachment"]
    assert isinstance(attachment, dict) and attachment["filename"] == "notes.bin"
    assert Path(str(attachment["saved_to"])).read_bytes() == payload.read_bytes()

    # bob may not delete alice's message; alice may, for everyone
    refused = sealpost("delete", "crew", message_id, profile=bob_dir)
    assert refused.returncode == 1 and "sent" in refused.stderr
    assert sealpost("delete", "crew", message_id, profile=alice_dir).returncode == 0
    gone = sealpost("receive", "--wait", "5", "--json", profile=bob_dir)
    assert {"event": "message_deleted"}.items() <= _json_lines(gone.stdout)[0].items()
    history = sealpost("history", "crew", "--json", profile=bob_dir)
    assert message_id not in history.stdout
    assert not Path(str(attachment["saved_to"])).exists()  # its file went with it

    timer = sealpost("timer", "crew", "2s", profile=bob_dir)
    assert timer.returncode == 0, timer.stderr
    assert sealpost("timer", "crew", "soon", profile=bob_dir).returncode == 2
    sealpost("receive", "--wait", "5", profile=alice_dir)
    assert sealpost("send", "#crew", "short-lived", profile=alice_dir).returncode == 0
    time.sleep(2.2)
    history = sealpost("history", "crew", "--json", profile=alice_dir)
    assert "short-lived" not in history.stdout

    left = sealpost("group", "leave", "crew", profile=carol_dir)
    assert left.returncode == 0, left.stderr
    listed = sealpost("group", "list", "--json", profile=carol_dir)
    assert _json_lines(listed.stdout)[0]["member"] is False


def test_link_and_devices_from_the_shell(server: ServerProcess, tmp_path: Path) -> None:
    alice, alice_dir = init(server, tmp_path)
    new_dir = tmp_path / "alice-laptop"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    env["SEALPOST_PASSCODE"] = "passcode-456"
    new = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealpost.cli",
            "--profile",
            str(new_dir),
            "link",
            "new",
            "--server",
            server.url,
            "--name",
            "laptop",
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert new.stdout is not None
        code = confirmation = ""
        for line in new.stdout:
            if "sealpost link accept" in line:
                code = line.split()[-1]
            if "confirm this code" in line:
                confirmation = line.split(":", 1)[1].strip()
                break
        assert code.startswith("sealpost-link:") and len(confirmation) == 7
        wrong = sealpost("link", "accept", code, "--confirm-code", "000 000", profile=alice_dir)
        assert wrong.returncode == 1 and "not confirmed" in wrong.stderr
        accepted = sealpost(
            "link", "accept", code, "--confirm-code", confirmation, profile=alice_dir
        )
        assert accepted.returncode == 0, accepted.stderr
        out, err = new.communicate(timeout=30)
        assert new.returncode == 0, err
        assert f"linked as device 2 of {alice}" in out
    finally:
        if new.poll() is None:
            new.kill()
    devices = sealpost("devices", "--json", profile=alice_dir)
    assert [(d["device_id"], d["current"]) for d in _json_lines(devices.stdout)] == [
        (1, True),
        (2, False),
    ]
    notice = sealpost("receive", "--wait", "5", "--json", profile=alice_dir)
    assert {"event": "device_linked", "device_id": 2, "name": "laptop"} in _json_lines(
        notice.stdout
    )
    removed = sealpost("devices", "remove", "2", profile=alice_dir)
    assert removed.returncode == 0, removed.stderr
    refused = sealpost("receive", profile=new_dir, passcode="passcode-456")
    assert refused.returncode == 4
    assert "this device (device 2) was removed from its account" in refused.stderr
    sent = sealpost(
        "send", alice, "from the removed device", profile=new_dir, passcode="passcode-456"
    )
    assert sent.returncode == 4 and "was removed from its account" in sent.stderr
    assert "unauthorized" not in refused.stderr + sent.stderr
