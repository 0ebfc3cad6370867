"""``sealpost admin backup`` taken under load and restored into a fresh directory (the
restored server serves every message queued before it and the same log), and the
server's log at the default level after a scripted exchange (no client address, no
username, no account id)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from helpers import Client, Device, ServerProcess, unb64, unique_name

from sealpost.crypto.sign import VerifyKey
from sealpost.transparency import SignedTreeHead, verify_consistency


def _admin(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    result = subprocess.run(
        [sys.executable, "-m", "sealpost.cli", "admin", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def _send(sender: Client, recipient: Device, body: bytes) -> None:
    response = sender.send_sealed(
        [(recipient.account_id, recipient.device_id, body)],
        {recipient.account_id: recipient.delivery_token},
    )
    assert response.status_code == 200, response.text


def _head_with_entries(client: Client) -> SignedTreeHead:
    """The first signed head that holds the registrations (heads are signed on a timer, so
    the newest may still be the empty log's)."""
    deadline = time.monotonic() + 30
    while True:
        head = SignedTreeHead.decode(unb64(client.http.get("/v1/log/head").json()["head"]))
        if head.tree_size > 0:
            return head
        assert time.monotonic() < deadline, "no signed head holds an entry after 30 s"
        time.sleep(0.1)


def test_backup_under_load_restores_every_queued_message_and_the_same_log(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server("--rate-per-address", "0", "--rate-sealed-per-address", "0")
    recipient = Device.generate()
    with Client(server.url, recipient) as bob, Client(server.url, Device.generate()) as alice:
        assert bob.register(unique_name()).status_code == 201
        assert alice.register(unique_name()).status_code == 201
        before = [os.urandom(200) for _ in range(40)]
        for body in before:
            _send(alice, recipient, body)
        pinned = _head_with_entries(alice)
        stop, running = threading.Event(), threading.Event()
        during: list[bytes] = []

        def load() -> None:
            with Client(server.url, Device.generate()) as sender:
                while not stop.is_set():
                    body = os.urandom(200)
                    _send(sender, recipient, body)
                    during.append(body)
                    running.set()

        thread = threading.Thread(target=load)
        thread.start()
        try:
            assert running.wait(30), "the load did not start"
            archive = tmp_path / "backup.tar"
            _admin("--data", str(server.data), "backup", "--out", str(archive))
        finally:
            stop.set()
            thread.join()
    server.stop()
    restored = tmp_path / "restored"
    out = _admin("restore", str(archive), "--into", str(restored)).stdout
    assert "restored a backup" in out
    assert oct((restored / "log_key").stat().st_mode & 0o777) == "0o600"
    again = ServerProcess(restored, tmp_path / "restored-logs").start()
    try:
        with Client(again.url, recipient) as bob:
            served: list[bytes] = []
            while True:  # a page, acknowledged, then the next
                page = bob.request("GET", "/v1/messages").json()
                served += [unb64(m["body"]) for m in page["messages"]]
                for m in page["messages"]:
                    assert bob.request("DELETE", f"/v1/messages/{m['id']}").status_code == 204
                if not page["more"]:
                    break
            assert set(before) <= set(served)  # every message queued before the backup
            assert set(served) <= set(before) | set(during)
            head = SignedTreeHead.decode(unb64(bob.http.get("/v1/log/head").json()["head"]))
            assert head.tree_size >= pinned.tree_size
            key = unb64(bob.http.get("/v1/log/key").json()["public_key"])
            head.verify(VerifyKey.from_public_bytes(key))  # the same log key
            if head.tree_size == pinned.tree_size:
                assert head.root == pinned.root
            else:
                proof = bob.http.get(
                    "/v1/log/consistency",
                    params={"from": pinned.tree_size, "to": head.tree_size},
                ).json()["proof"]
                verify_consistency(
                    pinned.tree_size,
                    head.tree_size,
                    pinned.root,
                    head.root,
                    [unb64(h) for h in proof],
                )
    finally:
        again.stop()


def test_the_default_log_holds_no_address_username_or_account_id(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server()
    names = [unique_name("logged"), unique_name("logged")]
    devices = [Device.generate(), Device.generate()]
    with Client(server.url, devices[0]) as alice, Client(server.url, devices[1]) as bob:
        for client, name in zip((alice, bob), names, strict=True):
            assert client.register(name).status_code == 201
        assert alice.lookup(names[1]).status_code == 200
        assert alice.lookup("nobody_at_all").status_code == 404
        with bob.stream() as stream:
            _send(alice, devices[1], b"x" * 100)
            (message,) = stream.receive_messages(1)
            stream.ack(message["id"])
        assert (
            alice.request("GET", "/v1/log/accounts/" + devices[0].account_id.hex()).status_code
            == 200
        )
        assert bob.request("GET", "/v1/keys/status", now=1).status_code == 401  # clock skew
    server.stop()
    text = "".join(path.read_text(errors="replace") for path in sorted(server.logs.iterdir()))
    assert "listening on" in text  # the log was written, and read
    for forbidden in ("127.0.0.1:", "WebSocket", "[accepted]", *names, "nobody_at_all"):
        assert forbidden not in text.replace(server.url, ""), forbidden
    for device in devices:
        assert device.account_id.hex() not in text
