"""Running a server for real people (issue 18), against real server processes: who may
register (open, invite, closed; invite codes used up, expired, revoked, guessed, raced),
``sealpost admin`` beside the running server (stats, accounts remove, purge), and the
refusals when it is pointed at no server data."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from helpers import Client, Device, ServerProcess, unb64, unique_name, wait_for
from websockets.exceptions import ConnectionClosed

from sealpost.crypto.sign import VerifyKey
from sealpost.server.handlers.attachments import DIGEST_HEADER
from sealpost.transparency import (
    DeletionEntry,
    MapProof,
    SignedTreeHead,
    account_map_key,
    account_map_value,
    leaf_hash,
    verify_inclusion,
    verify_map,
)


def admin(data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    result = subprocess.run(
        [sys.executable, "-m", "sealpost.cli", "admin", "--data", str(data), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def new_code(data: Path, *args: str) -> str:
    return admin(data, "invite", "create", *args).stdout.strip()


def register(url: str, *, invite: str | None = None) -> httpx.Response:
    with Client(url, Device.generate()) as client:
        return client.register(unique_name(), invite=invite)


def test_open_is_the_default_and_closed_registers_no_one(
    make_server: Callable[..., ServerProcess],
) -> None:
    assert register(make_server(name="open").url).status_code == 201
    closed = make_server("--registration", "closed", name="closed")
    response = register(closed.url, invite="whatever")
    assert response.status_code == 403 and response.json()["error"] == "registration_closed"
    assert "0" in admin(closed.data, "stats").stdout.splitlines()[0]  # accounts: 0


def test_invite_codes_used_up_expired_revoked(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--registration", "invite")
    data = server.data
    response = register(server.url)
    assert response.status_code == 403 and response.json()["error"] == "invite_required"
    single = new_code(data)
    assert register(server.url, invite=single).status_code == 201
    used = register(server.url, invite=single)
    assert used.status_code == 403 and used.json()["error"] == "invite_invalid"
    assert single not in used.text
    twice = new_code(data, "--uses", "2")
    assert [register(server.url, invite=twice).status_code for _ in range(3)] == [201, 201, 403]
    expiring = new_code(data, "--expires", "1s")
    time.sleep(1.1)
    assert register(server.url, invite=expiring).status_code == 403
    revoked = new_code(data, "--uses", "5")
    admin(data, "invite", "revoke", revoked[:8])
    assert register(server.url, invite=revoked).status_code == 403
    listed = admin(data, "invite", "list").stdout
    for code, state in ((single, "used up"), (expiring, "expired"), (revoked, "revoked")):
        assert f"{code[:8]}  {state}" in listed
        assert code not in listed
    # no code is kept or logged in clear
    server.stop()
    everything = b"".join(
        p.read_bytes() for root in (data, server.logs) for p in root.rglob("*") if p.is_file()
    )
    for code in (single, twice, expiring, revoked):
        assert code.encode() not in everything and code[9:].encode() not in everything


def test_wrong_invite_codes_are_rate_limited(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--registration", "invite", "--rate-invite-failures-per-address", "3")
    code = new_code(server.data)
    guess = code[:9] + ("a" * 26 if code[9:] != "a" * 26 else "b" * 26)
    statuses = [register(server.url, invite=guess).status_code for _ in range(4)]
    assert statuses == [403, 403, 403, 429]
    assert register(server.url, invite="nonsense").status_code == 429
    # the right code is refused too while the address is blocked: guessing costs time
    assert register(server.url, invite=code).status_code == 429


def test_a_single_use_code_raced_by_many_registers_exactly_one(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server("--registration", "invite")
    code = new_code(server.data)
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        device = Device.generate()
        with Client(server.url, device) as client:
            barrier.wait()
            statuses.append(client.register(unique_name(), invite=code).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [403] * 7
    assert "accounts: 1" in admin(server.data, "stats").stdout


def _sealed_to(sender: Client, recipient: Device, count: int) -> None:
    for _ in range(count):
        response = sender.send_sealed(
            [(recipient.account_id, recipient.device_id, os.urandom(300))],
            {recipient.account_id: recipient.delivery_token},
        )
        assert response.status_code == 200, response.text


def test_admin_stats_count_a_scripted_workload(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server()
    devices = [Device.generate() for _ in range(3)]
    clients = [Client(server.url, d) for d in devices]
    try:
        for client in clients:
            assert client.register(unique_name()).status_code == 201
        _sealed_to(clients[0], devices[1], 4)
        _sealed_to(clients[0], devices[2], 2)
        blob = os.urandom(5000)
        upload = clients[0].request(
            "POST",
            "/v1/attachments",
            content=blob,
            headers={DIGEST_HEADER: hashlib.sha256(blob).hexdigest()},
        )
        assert upload.status_code == 201, upload.text
        stats = admin(server.data, "stats", "--json").stdout
        doc = json.loads(stats)
        assert doc["accounts"] == 3 and doc["devices"] == 3
        assert doc["queued_messages"] == 6 and doc["queued_bytes"] == 6 * 300
        assert doc["attachments"] == 1 and doc["attachment_bytes"] == 5000
        assert doc["blob_files"] == 1 and doc["blob_bytes"] == 5000
        assert doc["log_entries"] == 3 and doc["removed_accounts"] == 0
        assert abs(doc["oldest_queued"] - time.time()) < 60
        for device in devices:  # nothing that identifies anyone
            assert device.account_id.hex() not in stats
    finally:
        for client in clients:
            client.close()


def test_accounts_remove_leaves_only_the_signed_deletion(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server()
    victim, friend = Device.generate(), Device.generate()
    name = unique_name("victim")
    with Client(server.url, victim) as gone, Client(server.url, friend) as other:
        assert gone.register(name).status_code == 201
        assert other.register(unique_name()).status_code == 201
        log_key = VerifyKey.from_public_bytes(
            unb64(other.http.get("/v1/log/key").json()["public_key"])
        )
        _sealed_to(other, victim, 3)
        with gone.stream() as stream:
            refused = admin(server.data, "accounts", "remove", name, check=False)
            assert refused.returncode == 2 and "--yes" in refused.stderr  # not a terminal
            out = admin(server.data, "accounts", "remove", name, "--yes").stdout
            assert "3 queued messages" in out
            with pytest.raises(ConnectionClosed) as closed:  # the server noticed within 1 s
                while True:
                    stream.recv(timeout=10)  # the queued messages, then the close
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        # the directory: a 404 that proves the deletion
        answer = other.lookup(name)
        assert answer.status_code == 404
        proof = answer.json()["transparency"]
        head = SignedTreeHead.decode(unb64(proof["head"]))
        head.verify(log_key)
        entry_raw = unb64(proof["entry"])
        deletion = DeletionEntry.decode(entry_raw)
        deletion.verify(log_key)
        assert (deletion.account_id, deletion.username) == (victim.account_id, name)
        verify_inclusion(
            leaf_hash(entry_raw),
            proof["index"],
            head.tree_size,
            [unb64(h) for h in proof["proof"]],
            head.root,
        )
        verify_map(
            account_map_key(name),
            account_map_value(proof["index"], leaf_hash(entry_raw)),
            MapProof.decode(unb64(proof["map_proof"])),
            head.map_root,
        )
        # its devices are gone: its requests are refused, sends to it too
        assert gone.request("GET", "/v1/keys/status").status_code == 401
        # the name is held (30 days by default)
        again = Client(server.url, Device.generate())
        taken = again.register(name)
        again.close()
        assert taken.status_code == 409 and taken.json()["error"] == "username_taken"
    wait_for(
        lambda: "audit: an operator removed an account" in _stderr(server),
        what="the audit line",
    )
    assert name not in _stderr(server)
    server.stop()
    db = sqlite3.connect(server.data / "sealpost.db")
    try:
        for table in (
            "accounts",
            "devices",
            "signed_prekeys",
            "one_time_prekeys",
            "kem_prekeys",
            "queue",
            "revocations",
        ):
            rows = db.execute(
                f"SELECT COUNT(*) FROM {table} WHERE account_id = ?",
                (victim.account_id,),
            ).fetchone()
            assert rows == (0,), table
        kinds = [
            bytes(e)[1]
            for (e,) in db.execute(
                "SELECT entry FROM log_entries WHERE account_id = ? ORDER BY idx",
                (victim.account_id,),
            )
        ]
        assert kinds == [0x30, 0x34]  # its registration, then its deletion
    finally:
        db.close()


def _stderr(server: ServerProcess) -> str:
    return "".join(p.read_text() for p in sorted(server.logs.glob("stderr.*.log")))


def test_admin_purge_and_refusals_where_there_is_no_server(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server("--message-ttl", "1")
    recipient = Device.generate()
    with Client(server.url, recipient) as client:
        assert client.register(unique_name()).status_code == 201
        with Client(server.url, Device.generate()) as sender:
            assert sender.register(unique_name()).status_code == 201
            _sealed_to(sender, recipient, 2)
    time.sleep(1.1)
    out = admin(server.data, "purge").stdout
    assert "purged 2 expired messages" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("stats",), ("purge",), ("invite", "list"), ("accounts", "remove", "x", "--yes")):
        refused = admin(empty, *args, check=False)
        assert refused.returncode == 1 and "no sealpost database" in refused.stderr, args
    assert list(empty.iterdir()) == []  # it created nothing
    missing = admin(server.data, "accounts", "remove", "nobody_here", "--yes", check=False)
    assert missing.returncode == 1 and "no account is named" in missing.stderr


def test_admin_on_postgresql_beside_the_running_server(
    make_server: Callable[..., ServerProcess],
) -> None:
    """The same commands with ``--database``: invites, stats, a removal the running
    process notices (its device's stream closed, the audit line written), the deletion
    proven to a lookup."""
    from services import fresh_database

    with fresh_database() as dsn:
        server = make_server("--database", dsn, "--registration", "invite")
        code = new_code(server.data, "--database", dsn)
        victim = Device.generate()
        name = unique_name("pgvictim")
        with Client(server.url, victim) as client:
            assert client.register(name, invite=code).status_code == 201
            assert register(server.url, invite=code).status_code == 403  # single use
            doc = json.loads(admin(server.data, "--database", dsn, "stats", "--json").stdout)
            assert (doc["accounts"], doc["invites_usable"], doc["log_entries"]) == (1, 0, 1)
            with client.stream() as stream:
                admin(server.data, "--database", dsn, "accounts", "remove", name, "--yes")
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        stream.recv(timeout=10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
            answer = client.lookup(name)
            assert answer.status_code == 404
            deletion = DeletionEntry.decode(unb64(answer.json()["transparency"]["entry"]))
            assert deletion.account_id == victim.account_id
        wait_for(
            lambda: "audit: an operator removed an account" in _stderr(server),
            what="the audit line",
        )
        doc = json.loads(admin(server.data, "--database", dsn, "stats", "--json").stdout)
        assert (doc["accounts"], doc["devices"], doc["removed_accounts"]) == (0, 0, 1)
        server.stop()


def test_admin_with_another_log_key_removes_nothing_on_postgresql(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """``accounts remove`` signs a deletion entry with the log key of its --data: pointed at
    another directory (with another log key) beside the deployment's database, it is
    refused in one line naming the log key, and the account stays, its log unchanged."""
    from services import fresh_database

    with fresh_database() as dsn:
        server = make_server("--database", dsn)
        name = unique_name("kept")
        with Client(server.url, Device.generate()) as client:
            assert client.register(name).status_code == 201
        before = json.loads(admin(server.data, "--database", dsn, "stats", "--json").stdout)
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        (other / "log_key").write_bytes(os.urandom(32))
        (other / "log_key").chmod(0o600)
        refused = admin(other, "--database", dsn, "accounts", "remove", name, "--yes", check=False)
        assert refused.returncode == 1, refused.stderr
        [line] = refused.stderr.splitlines()
        assert "the log key in DATA/log_key is" in line and "the database's" in line, line
        with Client(server.url) as client:
            assert client.lookup(name).status_code == 200
        after = json.loads(admin(server.data, "--database", dsn, "stats", "--json").stdout)
        assert (after["accounts"], after["log_entries"]) == (1, before["log_entries"]) == (1, 1)
        server.stop()
