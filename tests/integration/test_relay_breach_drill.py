"""Breach drill: after a scripted exchange between three accounts, a thief copies everything
the server holds (database, WAL, blobs, logs) and finds no plaintext, no private key, and
nothing tying a sealed message to its sender. Both drills run on both backends: with
PostgreSQL the thief's copy is also a ``pg_dump`` of the database (plain and custom
formats) beside the data directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    Client,
    Device,
    ServerProcess,
    collect_files,
    encodings,
    open_first_message,
    seal_first_message,
    server_public_key,
    unb64,
    wait_for,
)

from sealpost.crypto.aead import aead_decrypt, aead_encrypt
from sealpost.protocol.signing import DIGEST_HEADER


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """ "" for SQLite, else the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield ""
        return
    from services import fresh_database

    with fresh_database() as dsn:
        yield dsn


def _queue_rows(loot: Path, database: str) -> list[tuple[bytes, int, bytes]]:
    """(destination account, device, every other column's bytes) of each queued row."""
    if database:
        import asyncio

        import asyncpg

        async def read() -> list[tuple[bytes, int, bytes]]:
            conn = await asyncpg.connect(database)
            try:
                columns = [
                    r[0]
                    for r in await conn.fetch(
                        "SELECT column_name FROM information_schema.columns"
                        " WHERE table_name = 'queue' ORDER BY ordinal_position"
                    )
                ]
                expected = ["account_id", "device_id", "seq", "message_id", "body"]
                assert columns == [*expected, "received_at", "expires_at", "body_ref", "size"]
                rows = await conn.fetch("SELECT * FROM queue")
            finally:
                await conn.close()
            return [(bytes(r[0]), r[1], _joined(list(r)[1:])) for r in rows]

        return asyncio.run(read())
    db = sqlite3.connect(loot / "data" / "sealpost.db")
    try:
        columns = [r[1] for r in db.execute("PRAGMA table_info(queue)")]
        assert columns == [
            "seq",
            "account_id",
            "device_id",
            "message_id",
            "body",
            "received_at",
            "expires_at",
            "body_ref",
            "size",
        ]
        rows = db.execute("SELECT * FROM queue").fetchall()
    finally:
        db.close()
    return [(bytes(r[1]), r[2], _joined(r[2:])) for r in rows]


def _joined(values: list[object] | tuple[object, ...]) -> bytes:
    return b"".join(bytes(v) if isinstance(v, bytes) else str(v).encode() for v in values)


def test_a_copy_of_the_server_reveals_nothing(
    make_server: Callable[..., ServerProcess], tmp_path: Path, database: str
) -> None:
    extra = ("--database", database) if database else ()
    server = make_server("--log-level", "debug", *extra)
    marker = b"the plaintext marker " + os.urandom(12).hex().encode()
    file_marker = b"attachment marker " + os.urandom(12).hex().encode()
    devices = {name: Device.generate() for name in ("alice", "bob", "carol")}
    clients = {name: Client(server.url, d) for name, d in devices.items()}
    try:
        for name, client in clients.items():
            assert client.register(name).status_code == 201
        alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
        server_key = server_public_key(bob)

        # alice -> bob: an attachment encrypted client-side, its key inside a sealed message
        file_key, file_nonce = os.urandom(32), os.urandom(12)
        blob = aead_encrypt(file_key, file_nonce, file_marker * 100, b"")
        upload = alice.request(
            "POST",
            "/v1/attachments",
            content=blob,
            headers={DIGEST_HEADER: hashlib.sha256(blob).hexdigest()},
        )
        assert upload.status_code == 201
        pointer = json.dumps(
            {
                "text": marker.decode(),
                "id": upload.json()["id"],
                "key": file_key.hex(),
                "nonce": file_nonce.hex(),
            }
        ).encode()
        to_bob = seal_first_message(alice, devices["bob"], pointer)
        assert alice.send_sealed([(devices["bob"].account_id, 1, to_bob)]).status_code == 200
        # carol -> bob and bob -> carol, sealed; carol's copy stays queued (never acked)
        from_carol = seal_first_message(carol, devices["bob"], marker + b" from carol")
        assert carol.send_sealed([(devices["bob"].account_id, 1, from_carol)]).status_code == 200
        to_carol = seal_first_message(bob, devices["carol"], marker + b" to carol")
        tokens = {devices["carol"].account_id: devices["carol"].delivery_token}
        assert (
            bob.send_sealed([(devices["carol"].account_id, 1, to_carol)], tokens).status_code == 200
        )

        with bob.stream() as stream:
            frames = stream.receive_messages(2)
            senders = []
            for frame in frames:
                sender, text = open_first_message(devices["bob"], unb64(frame["body"]), server_key)
                senders.append(sender)
                if sender == devices["alice"].account_id:
                    note = json.loads(text)
                    assert note["text"] == marker.decode()
                    fetched = bob.http.get(f"/v1/attachments/{note['id']}").content
                    plain = aead_decrypt(
                        bytes.fromhex(note["key"]), bytes.fromhex(note["nonce"]), fetched, b""
                    )
                    assert plain == file_marker * 100
                    stream.ack(frame["id"])
            assert sorted(senders) == sorted(
                [devices["alice"].account_id, devices["carol"].account_id]
            )
        wait_for(
            lambda: len(bob.request("GET", "/v1/messages").json()["messages"]) == 1,
            what="alice's message to be acknowledged",
        )
    finally:
        for client in clients.values():
            client.close()

    # The thief's copy, taken while the server runs (database, WAL, blobs) plus its logs.
    loot = tmp_path / "loot"
    shutil.copytree(server.data, loot / "data")
    shutil.copytree(server.logs, loot / "logs")
    if database:  # and a dump of the database, in its plain (hex) and custom formats
        _dump(database, loot)
    everything = collect_files(loot)
    logs = collect_files(loot / "logs")
    assert len(everything) > (50_000 if database else 100_000)  # the blob and the database
    if database:  # the dump really holds the queue: carol's envelope, as bytea hex
        assert to_carol.hex().encode() in (loot / "dump.plain").read_bytes()

    for secret in [marker, file_marker]:
        for form in encodings(secret):
            assert form not in everything
    for device in devices.values():
        for secret in device.secrets():
            for form in encodings(secret):
                assert form not in everything
        for form in encodings(device.delivery_token):
            assert form not in everything  # stored only as SHA-256

    # Senders of sealed messages: the queue rows hold the destination and the ciphertext
    # only, and the logs name no account at all.
    for name in ("alice", "carol", "bob"):
        for form in encodings(devices[name].account_id):
            assert form not in logs
    rows = _queue_rows(loot, database)
    assert rows
    assert {(r[0], r[1]) for r in rows} <= {
        (devices["bob"].account_id, 1),
        (devices["carol"].account_id, 1),
    }
    # no row carries any account id except as its own destination column
    for _, _, rest in rows:
        for device in devices.values():
            for form in encodings(device.account_id):
                assert form not in rest
    # and alice, who only sent sealed messages, appears nowhere in the queue at all
    assert all(r[0] != devices["alice"].account_id for r in rows)


def _dump(database: str, loot: Path) -> None:
    """The thief's dump of the PostgreSQL database, in its plain (hex) and custom formats."""
    for fmt in ("plain", "custom"):
        dump = subprocess.run(
            ["pg_dump", "--format", fmt, database], capture_output=True, timeout=60
        )
        assert dump.returncode == 0, dump.stderr
        (loot / f"dump.{fmt}").write_bytes(dump.stdout)


def test_a_copy_of_the_server_reveals_nothing_of_groups_or_files(
    make_server: Callable[..., ServerProcess], tmp_path: Path, database: str
) -> None:
    """The drill again with the real client: a group across a linked device, a file sent
    in it and a timer; the thief's copy holds no text, group name, file content or key."""
    import asyncio

    from test_client_e2e import make_client
    from test_client_groups import drain, link

    from sealpost.protocol.senderkeys import ReceivingSenderChain

    extra = ("--database", database) if database else ()
    server = make_server("--log-level", "debug", *extra)
    marker = "group marker " + os.urandom(12).hex()
    group_name = "secret-plans-" + os.urandom(6).hex()
    file_marker = b"file marker " + os.urandom(12).hex().encode()
    source = tmp_path / "report.txt"
    source.write_bytes(file_marker * 5000)
    secrets: list[bytes] = []
    names: list[str] = []

    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        carol = await make_client(server, tmp_path)
        alice2 = await link(alice, tmp_path, "laptop")
        try:
            await alice.create_group(group_name, [bob.username, carol.username])
            await drain(alice2, bob, carol)
            await alice.send(group_name, marker, file=source)
            await alice.set_timer(group_name, 3600)
            got = await drain(bob, carol, alice2)
            texts = [e.message.text for g in got[:2] for e in g if hasattr(e, "message")]
            assert texts == [marker, marker]
            saved = await bob.save_attachment(bob.history(group_name)[-1].id, tmp_path / "in")
            assert saved.read_bytes() == file_marker * 5000
            names.extend(c.username for c in (alice, bob, carol))
            for client in (alice, alice2, bob, carol):
                secrets.append(client._ctx.account.to_bytes()[18:])
                secrets.append(client._ctx.device.to_bytes()[2:66])
                for (state,) in client.store.read().execute("SELECT state FROM sender_keys"):
                    chain = ReceivingSenderChain.from_bytes(bytes(state))
                    secrets.append(chain.chain_key)
                    assert chain.envelope_key is not None
                    secrets.append(chain.envelope_key)
        finally:
            for client in (alice, alice2, bob, carol):
                await client.close()

    asyncio.run(scenario())
    loot = tmp_path / "loot"
    shutil.copytree(server.data, loot / "data")
    shutil.copytree(server.logs, loot / "logs")
    if database:
        _dump(database, loot)
    server.stop()
    everything = collect_files(loot)
    if database:  # the dump is the real database: the accounts' names are in it
        assert all(name.encode() in (loot / "dump.plain").read_bytes() for name in names)
    assert len(everything) > len(file_marker) * 5000  # the blob is in the copy
    for plain in (marker.encode(), group_name.encode(), file_marker, b"report.txt"):
        for form in encodings(plain):
            assert form not in everything
    assert len(secrets) >= 8
    for secret in secrets:
        for form in encodings(secret):
            assert form not in everything
