"""Files received from the command line: where they are saved, that only the saved file
is ever deleted with its message, and that a save can fail and be tried again
(issue 14 items 13 and 15)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from helpers import ServerProcess
from test_client_cli import init, sealpost

from readonly import read_only


def _messages(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"id"')]


def test_expiry_deletes_only_the_saved_file(server: ServerProcess, tmp_path: Path) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    (elsewhere / "in").mkdir(parents=True)
    assert sealpost("timer", bob, "4s", profile=alice_dir).returncode == 0
    assert sealpost("receive", "--wait", "5", profile=bob_dir).returncode == 0
    payload = tmp_path / "notes.txt"
    payload.write_text("from alice")
    for caption in ("one", "two"):
        sent = sealpost("send", bob, caption, "--file", str(payload), profile=alice_dir)
        assert sent.returncode == 0, sent.stderr
    # saved with a relative directory, from one working directory
    got = sealpost(
        "receive", "--wait", "10", "--json", "--save-dir", "in", profile=bob_dir, cwd=here
    )
    assert got.returncode == 0, got.stderr
    saved = [Path(str(m["attachment"]["saved_to"])) for m in _messages(got.stdout)]  # type: ignore[index]
    assert saved == [here / "in" / "notes.txt", here / "in" / "notes (1).txt"]
    assert all(p.is_absolute() and p.read_text() == "from alice" for p in saved)
    # the user's own files: one of the same relative name elsewhere, one edited in place
    unrelated = elsewhere / "in" / "notes.txt"
    unrelated.write_text("the user's own notes")
    saved[1].write_text("edited by the user since")
    time.sleep(4.5)
    history = sealpost("history", alice, "--json", profile=bob_dir, cwd=elsewhere)
    assert history.returncode == 0, history.stderr
    assert _messages(history.stdout) == []  # both messages expired
    assert not saved[0].exists()  # the saved file went with its message
    assert unrelated.read_text() == "the user's own notes"  # not the same file: kept
    assert saved[1].read_text() == "edited by the user since"  # changed since: kept


def test_delete_for_everyone_deletes_only_the_saved_file(
    server: ServerProcess, tmp_path: Path
) -> None:
    _, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    (elsewhere / "in").mkdir(parents=True)
    payload = tmp_path / "report.txt"
    payload.write_text("v1")
    sent = sealpost("send", bob, "--file", str(payload), profile=alice_dir)
    assert sent.returncode == 0, sent.stderr
    got = sealpost("receive", "--wait", "10", "--save-dir", "in", profile=bob_dir, cwd=here)
    assert got.returncode == 0 and (here / "in" / "report.txt").exists()
    (elsewhere / "in" / "report.txt").write_text("unrelated")
    assert sealpost("delete", bob, sent.stdout.strip(), profile=alice_dir).returncode == 0
    gone = sealpost("receive", "--wait", "10", profile=bob_dir, cwd=elsewhere)
    assert gone.returncode == 0 and "deleted a message" in gone.stderr
    assert not (here / "in" / "report.txt").exists()
    assert (elsewhere / "in" / "report.txt").read_text() == "unrelated"


def test_a_failed_save_keeps_the_message_and_save_fetches_it_later(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice, alice_dir = init(server, tmp_path)
    bob, bob_dir = init(server, tmp_path)
    payload = tmp_path / "photo.bin"
    payload.write_bytes(os.urandom(50_000))
    first = sealpost("send", bob, "a photo", "--file", str(payload), profile=alice_dir)
    second = sealpost("send", bob, "after it", profile=alice_dir)
    assert first.returncode == 0 and second.returncode == 0
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        got = sealpost("receive", "--wait", "10", "--save-dir", str(locked), profile=bob_dir)
    assert got.returncode == 1
    message_id = first.stdout.strip()
    assert f"sealpost save {message_id}" in got.stderr and "Traceback" not in got.stderr
    assert "a photo" in got.stdout and "after it" in got.stdout  # nothing else was skipped
    assert list(locked.iterdir()) == []
    # the message and its attachment are still there: save it now
    history = sealpost("history", alice, "--json", profile=bob_dir)
    (kept,) = [m for m in _messages(history.stdout) if m["id"] == message_id]
    assert kept["attachment"]["saved_to"] is None  # type: ignore[index]
    saved = sealpost("save", message_id, "--dir", "inbox", profile=bob_dir, cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert Path(saved.stdout.strip()) == tmp_path / "inbox" / "photo.bin"
    assert (tmp_path / "inbox" / "photo.bin").read_bytes() == payload.read_bytes()
    again = sealpost("save", message_id, "--dir", str(tmp_path / "inbox"), profile=bob_dir)
    assert again.returncode == 0 and Path(again.stdout.strip()) == tmp_path / "inbox" / "photo.bin"
    history = sealpost("history", alice, "--json", profile=bob_dir)
    (kept,) = [m for m in _messages(history.stdout) if m["id"] == message_id]
    assert kept["attachment"]["saved_to"] == str(tmp_path / "inbox" / "photo.bin")  # type: ignore[index]
    bad = sealpost("save", "nothex", profile=bob_dir)
    assert bad.returncode == 2
    no_file = sealpost("save", second.stdout.strip(), profile=bob_dir)
    assert no_file.returncode == 1 and "no attachment" in no_file.stderr
