"""When the server refuses this device, the user is told what happened, not only
``unauthorized`` (issue 14 item 18): the server lost its data, its log key changed (an
alarm), or the device was removed (in test_client_cli_groups). A real server, restarted
on the same address with its data taken away."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from helpers import ServerProcess
from test_client_cli import init, sealpost


def _port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def test_a_server_that_lost_its_database_does_not_know_the_account(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server("--port", _port())
    alice, alice_dir = init(server, tmp_path)
    bob, _ = init(server, tmp_path)
    assert sealpost("send", bob, "before", profile=alice_dir).returncode == 0
    server.stop()
    for db in server.data.glob("sealpost.db*"):
        db.unlink()  # the database is gone; the keys stay (a restore that lost data)
    server.start()
    refused = sealpost("receive", profile=alice_dir)
    assert refused.returncode == 4, refused.stderr
    line = refused.stderr.strip()
    assert f"the server does not know the account '{alice}' any more" in line
    assert "unauthorized" not in line and len(line.splitlines()) == 1
    # a send looks bob up first: the log behind that answer is older than the one this
    # profile saw, which the key-transparency checks catch before the refusal (exit 7)
    sent = sealpost("send", bob, "after", profile=alice_dir)
    assert sent.returncode == 7 and "stale_lookup" in sent.stderr, sent.stderr


def test_a_server_whose_log_key_changed_raises_an_alarm(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server("--port", _port())
    _, alice_dir = init(server, tmp_path)
    bob, _ = init(server, tmp_path)
    assert sealpost("send", bob, "before", profile=alice_dir).returncode == 0
    server.stop()
    shutil.rmtree(server.data)  # a new data directory: new server and log keys
    server.start()
    refused = sealpost("receive", profile=alice_dir)
    assert refused.returncode == 7, refused.stderr
    assert "the server's log key changed" in refused.stderr
    assert "sealpost alarms" in refused.stderr and "unauthorized" not in refused.stderr
    alarms = sealpost("alarms", "--json", profile=alice_dir)
    [alarm] = [json.loads(line) for line in alarms.stdout.splitlines()]
    assert alarm["kind"] == "log_key_changed" and alarm["subject"] == "log"
    # and every later command says so until it is dismissed
    later = sealpost("whoami", profile=alice_dir)
    assert later.returncode == 0 and f"ALARM {alarm['id']} (log)" in later.stderr
