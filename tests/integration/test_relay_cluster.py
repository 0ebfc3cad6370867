"""Several real ``sealpost server`` processes on one PostgreSQL database and one Redis
(each test a database of its own): a message crosses processes, a group's members sit on
all three (a sealed send, and the shared-body send groups make, resent through another
process and stored once), a send resent through another process after its own was killed
is stored once, a device reconnecting elsewhere displaces its old connection (4409), offline
messages wait for whichever process the device comes back to, one-time prekeys go out
once across processes, the log is one log, a Redis that dies delays but loses nothing
(``/healthz`` says degraded meanwhile) and a displacement it did not carry is made by the
poll within its interval, and a process without Redis refuses to share the database, and
stops if another takes it while its lock connection is down; a leader killed is replaced
within seconds and heads are signed again; dropped database connections answer 503 and
the process recovers by itself; ``database`` and
``redis`` work from the environment and from a TOML file as from flags; Redis is told
device addresses, epochs and link channel ids only, never a message, a name or a client
address; ``sealpost audit`` through a round-robin front sees one consistent log, and a
file uploaded through one process is downloaded through the others; a process that
restarts leaves the uploads in flight on the others alone; a device links with the new
device's socket, the key fetch and the PUT each on another process."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from helpers import (
    TIMEOUT,
    Client,
    Device,
    ServerProcess,
    b64,
    envelopes_json,
    server_public_key,
    unb64,
    unique_name,
    wait_for,
)
from redis import Redis as SyncRedis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from sealpost.transparency.log import SignedTreeHead
from sealpost.transparency.merkle import leaf_hash, verify_inclusion
from services import REDIS, OwnRedis, fresh_database, require_redis

#: Long enough that a delivery within it was woken through Redis, not found by the poll.
NO_POLL = "60"
OPEN = ("--rate-per-address", "0", "--rate-sealed-per-address", "0")


_opened: list[Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as dsn:
        yield dsn


@pytest.fixture
def start(tmp_path: Path, database: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start a server process on the test's database, sharing one data directory (keys,
    blobs) as processes behind one load balancer do."""
    started: list[ServerProcess] = []

    def make(*args: str, redis: str | None = REDIS, poll: str = NO_POLL) -> ServerProcess:
        extra = ("--redis", redis, "--poll-interval", poll) if redis else ()
        proc = ServerProcess(
            tmp_path / "data",
            tmp_path / f"logs{len(started)}",
            "--database",
            database,
            *extra,
            *OPEN,
            *args,
        )
        started.append(proc.start())
        return proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def trio(start: Callable[..., ServerProcess]) -> list[ServerProcess]:
    require_redis()
    return [start() for _ in range(3)]


def _register(server: ServerProcess, device: Device | None = None) -> Client:
    client = Client(server.url, device or Device.generate())
    _opened.append(client)
    response = client.register(unique_name("c"))
    assert response.status_code == 201, response.text
    return client


def _send(via: ServerProcess, recipients: list[Client], body: bytes) -> None:
    sender = Client(via.url)
    try:
        envelopes = []
        for client in recipients:
            assert client.device is not None
            envelopes.append((client.device.account_id, 1, body))
        response = sender.send_sealed(envelopes)
        assert response.status_code == 200, response.text
    finally:
        sender.close()


def _on(server: ServerProcess, client: Client) -> Client:
    """The same device, talking to another process."""
    other = Client(server.url, client.device)
    _opened.append(other)
    return other


def test_messages_cross_processes_at_once_a_group_on_all_three(
    trio: list[ServerProcess],
) -> None:
    a, b, c = trio
    members = [_register(a), _register(b), _register(c)]
    streams = [_on(server, m).stream() for server, m in zip(trio, members, strict=True)]
    try:
        for stream in streams:
            assert stream.recv() == {"type": "empty"}
        started = time.monotonic()
        _send(a, members[1:2], b"a to b")
        [frame] = streams[1].receive_messages(1)
        assert unb64(frame["body"]) == b"a to b"
        assert time.monotonic() - started < 5  # woken through Redis, not by the slow poll
        _send(b, members, b"to the group")  # one send, devices on three processes
        for stream in streams:
            [frame] = stream.receive_messages(1, timeout=5)
            assert unb64(frame["body"]) == b"to the group"
    finally:
        for stream in streams:
            stream.close()


def _multi(via: ServerProcess, members: list[Client], body: bytes, send_id: bytes) -> Any:
    """A group's send as the client makes it: one group-sealed body for every member's
    device (``PUT /v1/messages/multi``, stored once and shared), with a send id."""
    doc = {
        "body": base64.b64encode(body).decode(),
        "recipients": [[m.device.account_id.hex(), 1] for m in members if m.device],
        "tokens": {
            m.device.account_id.hex(): base64.b64encode(m.device.delivery_token).decode()
            for m in members
            if m.device
        },
        "send_id": base64.b64encode(send_id).decode(),
    }
    with Client(via.url) as sender:
        return sender.request("PUT", "/v1/messages/multi", json_body=doc, signed=False)


def test_a_group_send_through_one_process_reaches_members_on_all_three_once(
    trio: list[ServerProcess],
) -> None:
    """The shared-body path real groups take (one body stored for every member): sent
    through A to members streaming on A, B and C, woken through Redis; the same send
    again through C (its answer lost, say) stores nothing twice."""
    from sealpost.protocol.group_sealed import seal_group

    members = [_register(server) for server in trio]
    streams = [_on(server, m).stream() for server, m in zip(trio, members, strict=True)]
    try:
        for stream in streams:
            assert stream.recv() == {"type": "empty"}
        body = seal_group(b"to the group", os.urandom(32), os.urandom)
        send_id = os.urandom(16)
        started = time.monotonic()
        response = _multi(trio[0], members, body, send_id)
        assert response.status_code == 200 and response.json() == {"stored": 3}, response.text
        frames = [stream.receive_messages(1, timeout=5)[0] for stream in streams]
        assert time.monotonic() - started < 5  # woken through Redis, not by the slow poll
        assert [unb64(f["body"]) for f in frames] == [body] * 3
        again = _multi(trio[2], members, body, send_id)
        assert again.status_code == 200 and again.json() == {"stored": 3}, again.text
        for stream, frame in zip(streams, frames, strict=True):
            stream.ack(frame["id"])
            with pytest.raises(TimeoutError):  # the resend was not queued a second time
                stream.receive_messages(1, timeout=1.5)
    finally:
        for stream in streams:
            stream.close()
    for server, member in zip(trio, members, strict=True):
        queued = _on(server, member).request("GET", "/v1/messages")
        assert queued.status_code == 200 and queued.json()["messages"] == []


def test_a_send_resent_through_another_process_after_a_kill_is_stored_once(
    trio: list[ServerProcess],
) -> None:
    """A sender whose process was killed under it (SIGKILL: its answer may be lost)
    resends through another process with the same send id: the message is queued once,
    under the id derived from the send id, whichever process stored it."""
    from sealpost.protocol.send_id import queued_message_id

    a, b, c = trio
    bob = _register(a)
    assert bob.device is not None
    item = {
        "account_id": bob.device.account_id.hex(),
        "device_id": 1,
        "body": base64.b64encode(b"sent once").decode(),
        "send_id": base64.b64encode(send_id := os.urandom(16)).decode(),
    }
    token = f"{bob.device.account_id.hex()}:" + base64.b64encode(bob.device.delivery_token).decode()

    def put(via: ServerProcess) -> Any:
        with Client(via.url) as sender:
            return sender.request(
                "PUT",
                "/v1/messages",
                json_body={"messages": [item]},
                signed=False,
                headers={"X-Sealpost-Delivery-Token": token},
            )

    assert put(c).status_code == 200
    c.kill9()
    for via in (b, a):
        response = put(via)
        assert response.status_code == 200 and response.json() == {"stored": 1}, response.text
    queued = bob.request("GET", "/v1/messages")
    assert queued.status_code == 200
    expected = queued_message_id(send_id, bob.device.account_id, 1).hex()
    assert [m["id"] for m in queued.json()["messages"]] == [expected]
    with _on(b, bob).stream() as stream:
        [frame] = stream.receive_messages(1)
        assert frame["id"] == expected and unb64(frame["body"]) == b"sent once"
        stream.ack(frame["id"])
        assert stream.recv() == {"type": "empty"}


def test_reconnecting_to_another_process_displaces_the_old_connection(
    trio: list[ServerProcess],
) -> None:
    a, _, c = trio
    bob = _register(a)
    with _on(a, bob).stream() as old:
        assert old.recv() == {"type": "empty"}
        with _on(c, bob).stream() as new:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    old.recv(timeout=5)
            assert old.ws.close_code == 4409
            assert time.monotonic() - started < 1  # the bound (measured: ~25 ms)
            _send(a, [bob], b"only to the new one")
            [frame] = new.receive_messages(1)
            assert unb64(frame["body"]) == b"only to the new one"
            new.ack(frame["id"])
            wait_for(lambda: bob.request("GET", "/v1/messages").json()["messages"] == [])


def test_offline_messages_wait_for_whichever_process_the_device_comes_back_to(
    trio: list[ServerProcess],
) -> None:
    a, b, c = trio
    bob = _register(b)
    bodies = [os.urandom(24) for _ in range(5)]
    for i, body in enumerate(bodies):
        _send(trio[i % 3], [bob], body)
    with _on(c, bob).stream() as stream:
        frames = stream.receive_messages(5)
        assert [unb64(f["body"]) for f in frames] == bodies  # in the order stored
        stream.ack(frames[0]["id"])
        wait_for(
            lambda: len(bob.request("GET", "/v1/messages").json()["messages"]) == 4,
            what="the ack to commit",
        )
    with _on(a, bob).stream() as stream:
        frames = stream.receive_messages(4)
        assert [unb64(f["body"]) for f in frames] == bodies[1:]


def test_one_time_prekeys_go_out_once_across_processes(trio: list[ServerProcess]) -> None:
    bob = _register(trio[0], Device.generate(one_time=40, kem_one_time=40))
    assert bob.device is not None
    path = f"/v1/keys/{bob.device.account_id.hex()}/1"
    results: list[bytes] = []
    lock = threading.Lock()

    def fetch(server: ServerProcess) -> None:
        with Client(server.url) as client:
            for _ in range(10):
                response = client.request("GET", path, signed=False)
                assert response.status_code == 200
                doc = response.json()
                if doc["one_time_prekey"]:
                    with lock:
                        results.append(unb64(doc["bundle"]))

    threads = [threading.Thread(target=fetch, args=(trio[i % 3],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    from sealpost.protocol import PreKeyBundle

    ids = [PreKeyBundle.decode(raw).one_time_prekey.key_id for raw in results]  # type: ignore[union-attr]
    # none twice; and 30 in all (bundles_per_target an hour, one limit for the three
    # processes: with Redis the rate limits are shared), not 30 from each
    assert len(ids) == 30 and len(set(ids)) == 30


def test_the_log_is_one_log_whichever_process_is_asked(trio: list[ServerProcess]) -> None:
    keys = set()
    for server in trio:
        with Client(server.url) as client:
            keys.add(client.request("GET", "/v1/log/key", signed=False).json()["public_key"])
    assert len(keys) == 1
    (log_key,) = keys
    from sealpost.crypto.sign import VerifyKey

    verify_key = VerifyKey.from_public_bytes(unb64(log_key))
    names = []
    for i in range(6):
        name = unique_name("log")
        client = Client(trio[i % 3].url, Device.generate())
        assert client.register(name).status_code == 201
        client.close()
        names.append(name)
        # looked up at once on another process: a head covering the entry, and its proof
        with Client(trio[(i + 1) % 3].url) as other:
            doc = other.lookup(name).json()["transparency"]
        head = SignedTreeHead.decode(unb64(doc["head"]))
        head.verify(verify_key)
        proof = [unb64(h) for h in doc["proof"]]
        verify_inclusion(
            leaf_hash(unb64(doc["entry"])), doc["index"], head.tree_size, proof, head.root
        )
        assert doc["index"] == i  # one log: entries numbered in one sequence
    wait_for(lambda: _heads_agree(trio, 6), what="every process to serve the same head")


def _heads_agree(trio: list[ServerProcess], size: int) -> bool:
    seen = set()
    for server in trio:
        with Client(server.url) as client:
            raw = client.request("GET", "/v1/log/head", signed=False).json()["head"]
        if SignedTreeHead.decode(unb64(raw)).tree_size < size:
            return False
        seen.add(raw)
    return len(seen) == 1


def _refused(data: Path, *args: str) -> str:
    """A server process that must refuse to start: what it said, which is one line on
    stderr (no traceback), nothing on stdout, and a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    run = [sys.executable, "-m", "sealpost.cli", "server", "--data", str(data)]
    done = subprocess.run(
        [*run, "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""  # never listened
    [line] = done.stderr.splitlines()  # no traceback, no uvicorn "Application startup failed"
    assert line.startswith("sealpost: cannot start the server: "), line
    return line


def test_a_process_without_redis_refuses_a_shared_database(
    start: Callable[..., ServerProcess], tmp_path: Path, database: str
) -> None:
    first = start(redis=None)
    said = _refused(first.data, "--database", database)  # the same keys: only Redis lacks
    assert "another sealpost server uses this database" in said and "--redis" in said
    with Client(first.url) as probe:  # the first one serves on
        assert probe.request("GET", "/healthz", signed=False).status_code == 200


def test_a_process_with_another_data_directory_is_refused_saying_which_key_differs(
    start: Callable[..., ServerProcess], tmp_path: Path, database: str
) -> None:
    """A process whose --data is not the deployment's (not mounted, another machine's)
    would serve other keys, and leading sign tree heads with a log key no client pinned:
    it is refused, the message naming each key that differs and what to do; with the keys
    copied as it says, it starts and serves the deployment's keys."""
    require_redis()
    first = start()
    shared = ("--database", database, "--redis", REDIS)
    said = _refused(tmp_path / "elsewhere", *shared)
    assert "KeyMismatch" in said and "mount the shared data directory" in said
    assert "server key in DATA/server_key" in said and "log key in DATA/log_key" in said
    partial = tmp_path / "partial"
    partial.mkdir(mode=0o700)
    shutil.copy2(first.data / "server_key", partial / "server_key")
    said = _refused(partial, *shared)  # its own log key, created at this start
    assert "log key in DATA/log_key" in said and "server key" not in said
    shutil.copy2(first.data / "log_key", partial / "log_key")
    copied = ServerProcess(partial, tmp_path / "logs-copied", *shared, *OPEN)
    try:
        copied.start()
        keys = []
        for server in (first, copied):
            with Client(server.url) as client:
                log_key = client.request("GET", "/v1/log/key", signed=False).json()
                keys.append((server_public_key(client), log_key["public_key"]))
        assert keys[0] == keys[1]
    finally:
        copied.stop()


def test_a_process_alone_that_loses_its_database_to_another_stops(
    start: Callable[..., ServerProcess], database: str
) -> None:
    """A process without Redis whose lock connection is terminated, and whose lock
    another process without Redis takes before it can take it again (here the test's
    connection, waiting on the lock, is granted it the moment PostgreSQL releases it),
    stops: exit status 1, the reason in its log and on stderr. Serving on, it would push
    from tails the other's sends never reach, and strand its connected devices."""
    from sealpost.server.storage.pg_schema import LOCK_PROCESSES

    server = start(redis=None)
    _register(server)

    async def take_over() -> asyncpg.Connection:
        conn = await asyncpg.connect(database)
        holder = await conn.fetchval(  # advisory locks are cluster-wide: this database's
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objid = $1 AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            LOCK_PROCESSES,
        )
        assert holder is not None
        await conn.execute("SELECT pg_terminate_backend($1)", holder)
        await conn.execute(f"SET lock_timeout = '{TIMEOUT}s'")
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_PROCESSES)
        return conn

    async def release(conn: asyncpg.Connection) -> None:
        await conn.close()

    loop = asyncio.new_event_loop()
    try:
        other = loop.run_until_complete(take_over())
        try:
            assert server.proc is not None
            code = server.proc.wait(TIMEOUT)
        finally:
            loop.run_until_complete(release(other))
    finally:
        loop.close()
    assert code == 1
    stderr = _stderr(server)
    assert "stopping: lost the database to another process" in stderr
    assert "the server stopped: lost the database to another process" in stderr


def test_migrate_runs_the_migrations_alone(database: str) -> None:
    run = [sys.executable, "-m", "sealpost.cli", "server", "migrate", "--database", database]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    first = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    from sealpost.server.storage.pg_schema import MIGRATIONS

    every = ", ".join(str(version) for version, _ in MIGRATIONS)
    assert first.stdout == f"applied migrations: {every}\n"  # all of them, not the first two
    again = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_a_dead_redis_delays_delivery_but_loses_nothing(
    start: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    redis = OwnRedis(tmp_path)
    redis.start()
    try:
        a = start(redis=redis.url, poll="1")
        b = start(redis=redis.url, poll="1")
        bob = _register(a)
        with _on(b, bob).stream() as stream:
            assert stream.recv() == {"type": "empty"}
            _send(a, [bob], b"before")
            assert [unb64(f["body"]) for f in stream.receive_messages(1)] == [b"before"]
            redis.kill()
            during = [os.urandom(16) for _ in range(5)]
            for body in during:
                _send(a, [bob], body)  # still stored and acknowledged
            frames = stream.receive_messages(5, timeout=10)  # found by the poll
            assert [unb64(f["body"]) for f in frames] == during
            with Client(b.url) as probe:  # degraded, not down: delivery goes on
                health = probe.request("GET", "/healthz", signed=False)
            assert health.status_code == 200
            assert health.json() == {"status": "degraded", "database": True, "fanout": False}
            redis.start()
            with Client(b.url) as probe:
                wait_for(
                    lambda: probe.request("GET", "/healthz", signed=False).json()["fanout"],
                    what="redis to answer again",
                )
            time.sleep(1.5)  # the listener subscribes again (it retries every 0.5 s)
            started = time.monotonic()
            _send(a, [bob], b"after")
            assert [unb64(f["body"]) for f in stream.receive_messages(1)] == [b"after"]
            assert time.monotonic() - started < TIMEOUT
    finally:
        redis.kill()


def test_killing_a_process_under_load_loses_and_reorders_nothing(
    trio: list[ServerProcess],
) -> None:
    """Sends through A and C; recipients on C, which is killed with SIGKILL mid-run; they
    reconnect to B. Every send that was answered 200 arrives, once per message id, in the
    order it was stored (per sender: sends are sequential)."""
    a, b, c = trio
    recipients = [_register(a) for _ in range(3)]
    got: dict[int, list[tuple[str, bytes]]] = {i: [] for i in range(len(recipients))}
    stop = threading.Event()
    errors: list[BaseException] = []

    def receive(i: int) -> None:
        server = c
        try:
            while not stop.is_set():
                try:
                    with _on(server, recipients[i]).stream() as stream:
                        while not stop.is_set():
                            try:
                                frame = stream.recv(timeout=0.2)
                            except TimeoutError:
                                continue
                            if frame["type"] == "message":
                                got[i].append((frame["id"], unb64(frame["body"])))
                                stream.ack(frame["id"])
                except (ConnectionClosed, OSError):
                    server = b  # the client's fallback address
                    time.sleep(0.1)
        except BaseException as exc:
            errors.append(exc)

    acknowledged: dict[int, list[bytes]] = {i: [] for i in range(len(recipients))}

    def send(via: ServerProcess, tag: bytes, count: int, kill_at: int | None) -> None:
        with Client(via.url) as sender:
            for n in range(count):
                if kill_at is not None and n == kill_at:
                    c.kill9()
                for i, client in enumerate(recipients):
                    assert client.device is not None
                    body = tag + b"%d-%04d" % (i, n)
                    try:
                        response = sender.send_sealed([(client.device.account_id, 1, body)])
                    except Exception:
                        return
                    if response.status_code == 200:
                        acknowledged[i].append(body)

    readers = [threading.Thread(target=receive, args=(i,)) for i in range(len(recipients))]
    for reader in readers:
        reader.start()
    time.sleep(0.5)
    senders = [
        threading.Thread(target=send, args=(a, b"A", 60, 25)),
        threading.Thread(target=send, args=(c, b"C", 60, None)),
    ]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()

    def complete() -> bool:
        return all(
            {body for _, body in got[i]} >= set(acknowledged[i]) for i in range(len(recipients))
        )

    try:
        wait_for(complete, timeout=30, what="every acknowledged message to arrive")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert not errors, errors
    for i in range(len(recipients)):
        first: dict[str, bytes] = {}
        for message_id, body in got[i]:
            assert first.setdefault(message_id, body) == body  # a resend is the same message
        bodies = list(first.values())
        assert len(bodies) == len(set(bodies))  # each message once (by id)
        for tag in (b"A", b"C"):
            mine = [body for body in bodies if body.startswith(tag)]
            assert mine == sorted(mine)  # in the order each sender stored them
        assert set(acknowledged[i]) <= set(bodies)
    for i in range(len(recipients)):  # A never failed: all its sends were stored
        assert len([b for b in acknowledged[i] if b.startswith(b"A")]) == 60


def test_without_redis_a_displaced_connection_is_closed_by_the_poll_within_its_interval(
    start: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Redis is down, so process A never hears that the device connected to B, and the old
    connection neither acks nor sends (whose epoch would close it): A's poll reads the
    device's newer epoch from the database and closes it with 4409 within the poll interval,
    having pushed it nothing meanwhile; the new connection gets what is sent next."""
    redis = OwnRedis(tmp_path)
    redis.start()
    try:
        a = start(redis=redis.url, poll="1")
        b = start(redis=redis.url, poll="1")
        bob = _register(a)
        with _on(a, bob).stream() as old:
            assert old.recv() == {"type": "empty"}
            redis.kill()
            with _on(b, bob).stream() as new:
                assert new.recv() == {"type": "empty"}  # B has claimed the device
                started = time.monotonic()
                frames = []
                with pytest.raises(ConnectionClosed):
                    while True:
                        frames.append(old.recv(timeout=1 + 1))
                assert old.ws.close_code == 4409
                assert time.monotonic() - started < 1 + 1  # poll_interval, and a second
                assert frames == []
                _send(a, [bob], b"only to the new one")
                [frame] = new.receive_messages(1)  # found by B's poll
                assert unb64(frame["body"]) == b"only to the new one"
    finally:
        redis.kill()


def test_without_redis_a_displaced_connection_is_fenced_off_by_its_epoch(
    start: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Redis is down, so process A never hears that the device connected to B: the old
    connection's ack carries a stale epoch, is refused (4409) and deletes nothing. (A's
    poll would close it too, within its interval: slow here, so that the ack comes
    first.)"""
    redis = OwnRedis(tmp_path)
    redis.start()
    try:
        a = start(redis=redis.url, poll=NO_POLL)
        b = start(redis=redis.url, poll=NO_POLL)
        bob = _register(a)
        with _on(a, bob).stream() as old:
            assert old.recv() == {"type": "empty"}
            _send(a, [bob], b"pushed to both")
            [frame] = old.receive_messages(1)
            redis.kill()
            with _on(b, bob).stream() as new:
                [again] = new.receive_messages(1)
                assert again["id"] == frame["id"]
                old.ack(frame["id"])
                with pytest.raises(ConnectionClosed):
                    while True:
                        old.recv(timeout=5)
                assert old.ws.close_code == 4409
                queued = bob.request("GET", "/v1/messages").json()["messages"]
                assert [m["id"] for m in queued] == [frame["id"]]  # the stale ack deleted nothing
                new.ack(frame["id"])
                wait_for(lambda: bob.request("GET", "/v1/messages").json()["messages"] == [])
    finally:
        redis.kill()


def test_without_redis_a_displaced_connections_send_is_fenced_off_by_its_epoch(
    start: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Redis is down, so process A never hears that device 1 connected to B. A send on the
    old connection on A made after B's claim (a copy to the account's device 2) carries a
    stale epoch: it is not stored, gets no answer, and the connection is closed with 4409.
    What shows the fence: A cannot be told over Redis, its poll is too slow to close the
    old connection first, and the old connection sends no ack (whose epoch would close it
    too); a send on it before the claim, with Redis already down, was stored and
    answered."""
    redis = OwnRedis(tmp_path)
    redis.start()
    try:
        a = start(redis=redis.url, poll=NO_POLL)
        b = start(redis=redis.url, poll=NO_POLL)
        bob = _register(a)
        assert bob.device is not None
        account = bob.device.account_id
        second = Client(a.url, Device.generate(bob.device.account, device_id=2))
        _opened.append(second)
        assert second.add_device().status_code == 201

        def send(stream: Any, req: int, body: bytes) -> None:
            frame = {"type": "send", "req": req, **envelopes_json([(account, 2, body)])}
            stream.ws.send(json.dumps(frame))

        with _on(a, bob).stream() as old:
            assert old.recv() == {"type": "empty"}
            redis.kill()
            send(old, 1, b"before the claim")
            assert old.recv() == {"type": "sent", "req": 1, "stored": 1}
            with _on(b, bob).stream() as new:
                assert new.recv() == {"type": "empty"}  # after the claim (then the push)
                send(old, 2, b"after the claim")
                frames = []
                with pytest.raises(ConnectionClosed):
                    while True:
                        frames.append(old.recv(timeout=5))
                assert old.ws.close_code == 4409
                assert frames == []  # no "sent" (nor anything else) for the refused send
                send(new, 3, b"on the new connection")
                assert new.recv() == {"type": "sent", "req": 3, "stored": 1}
        queued = second.request("GET", "/v1/messages").json()["messages"]
        assert [unb64(m["body"]) for m in queued] == [b"before the claim", b"on the new connection"]
    finally:
        redis.kill()


LIMIT = 20  # requests a minute per address, for the rate-limit test


def _allowed_until_refused(servers: list[ServerProcess], at_most: int) -> list[int]:
    """Requests answered (not 429) by each server, asked in turn, until every one has
    refused once (or ``at_most`` requests in all)."""
    allowed = [0] * len(servers)
    refused: set[int] = set()
    clients = [Client(s.url) for s in servers]
    try:
        for n in range(at_most):
            i = n % len(servers)
            if i in refused:
                if len(refused) == len(servers):
                    break
                continue
            status = clients[i].request("GET", "/v1/certificate/server", signed=False).status_code
            if status == 429:
                refused.add(i)
            else:
                assert status == 200
                allowed[i] += 1
    finally:
        for client in clients:
            client.close()
    return allowed


def test_rate_limits_are_shared_and_a_dead_redis_leaves_each_process_its_own(
    start: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """One client address spread over two processes meets one per-address limit; with
    Redis killed each process limits it alone (fail open, each still bounded); with Redis
    back, one limit again. Redis holds no address, only HMACs."""
    redis = OwnRedis(tmp_path)
    redis.start()
    try:
        limit = ("--rate-per-address", str(LIMIT))
        servers = [start(*limit, redis=redis.url), start(*limit, redis=redis.url)]
        shared = _allowed_until_refused(servers, 4 * LIMIT)
        assert LIMIT - 2 <= sum(shared) <= LIMIT + 1  # one bucket (+1: it refills meanwhile)
        assert min(shared) >= LIMIT // 2 - 2  # each process counted the other's
        with SyncRedis.from_url(redis.url, decode_responses=True) as r:
            keys = list(r.scan_iter("sealpost:rl:*"))
        assert keys and all(k.startswith("sealpost:rl:per_address:") for k in keys)
        assert not any("127.0.0.1" in k for k in keys)

        redis.kill()
        alone = _allowed_until_refused(servers, 4 * LIMIT)
        assert all(LIMIT - 1 <= n <= LIMIT + 1 for n in alone), alone  # each its own limit

        redis.start()  # empty: the shared bucket starts full
        time.sleep(1.5)  # past the limiter's retry interval
        again = _allowed_until_refused(servers, 4 * LIMIT)
        assert LIMIT - 2 <= sum(again) <= LIMIT + 1, again
    finally:
        redis.kill()


def _leads(server: ServerProcess) -> bool:
    with Client(server.url) as client:
        text = client.request("GET", "/metrics", signed=False).text
    return "\nsealpost_leader 1\n" in "\n" + text + "\n"


def test_expired_messages_are_purged_by_the_leader_only(
    start: Callable[..., ServerProcess],
) -> None:
    """Two processes purging every second: each round of expired messages is purged, and
    always by the one process that leads (the advisory-lock leader that signs the heads)."""
    require_redis()
    servers = [start("--message-ttl", "1", "--purge-interval", "1") for _ in range(2)]
    wait_for(lambda: sum(map(_leads, servers)) == 1, what="one leader")
    (leader,) = [s for s in servers if _leads(s)]
    bob = _register(servers[0])
    for round_ in range(1, 4):
        for i in range(round_):
            _send(servers[i % 2], [bob], b"expires")
        wait_for(
            lambda: bob.request("GET", "/v1/messages").json()["messages"] == [],
            what="the expired messages to be purged",
        )
    wait_for(lambda: _purged(leader) == 1 + 2 + 3, what="the leader to log its purges")
    for server in servers:
        if server is not leader:
            assert _purged(server) == 0


def _purged(server: ServerProcess) -> int:
    return sum(int(n) for n in re.findall(r"purged (\d+) expired messages", _stderr(server)))


def _stderr(server: ServerProcess) -> str:
    return "".join(p.read_text() for p in sorted(server.logs.glob("stderr.*.log")))


def test_a_killed_leader_is_replaced_within_seconds_and_heads_are_signed_again(
    start: Callable[..., ServerProcess],
) -> None:
    """The process that signs tree heads is killed with SIGKILL: the other takes the
    advisory lock within a few seconds, and a name registered after the kill is looked up
    with a head that covers it, signed by the same log key, consistent with the older one."""
    require_redis()
    servers = [start() for _ in range(2)]
    wait_for(lambda: sum(map(_leads, servers)) == 1, what="one leader")
    (leader,) = [s for s in servers if _leads(s)]
    (other,) = [s for s in servers if s is not leader]
    first = unique_name("before")
    with Client(other.url, Device.generate()) as client:
        assert client.register(first).status_code == 201
        key = client.request("GET", "/v1/log/key", signed=False).json()["public_key"]
        old = SignedTreeHead.decode(unb64(client.lookup(first).json()["transparency"]["head"]))
    assert old.tree_size >= 1  # signed by the leader, covering that entry
    killed = time.monotonic()
    leader.kill9()
    wait_for(lambda: _leads(other), timeout=10, what="the other process to lead")
    took = time.monotonic() - killed
    assert took < 5, f"took over after {took:.1f} s"
    name = unique_name("after")
    with Client(other.url, Device.generate()) as client:
        assert client.register(name).status_code == 201
        assert client.request("GET", "/v1/log/key", signed=False).json()["public_key"] == key
        doc = client.lookup(name).json()["transparency"]
    from sealpost.crypto.sign import VerifyKey
    from sealpost.transparency.merkle import verify_consistency

    head = SignedTreeHead.decode(unb64(doc["head"]))
    head.verify(VerifyKey.from_public_bytes(unb64(key)))
    assert head.tree_size > doc["index"] >= old.tree_size
    with Client(other.url) as client:
        proof = client.request(
            "GET",
            f"/v1/log/consistency?from={old.tree_size}&to={head.tree_size}",
            signed=False,
        )
    assert proof.status_code == 200, proof.text
    verify_consistency(
        old.tree_size,
        head.tree_size,
        old.root,
        head.root,
        [unb64(h) for h in proof.json()["proof"]],
    )


class _Lock:
    """A transaction of the test's own holding ACCESS EXCLUSIVE locks on some tables, on a
    thread of its own, until :meth:`release`."""

    def __init__(self, dsn: str, tables: tuple[str, ...]) -> None:
        self.dsn = dsn
        self.tables = tables
        self.pid = 0
        self._locked = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()))

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            self.pid = conn.get_server_pid()
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {', '.join(self.tables)} IN ACCESS EXCLUSIVE MODE")
                self._locked.set()
                while not self._release.is_set():
                    await asyncio.sleep(0.02)
        finally:
            await conn.close()

    def __enter__(self) -> _Lock:
        self._thread.start()
        assert self._locked.wait(TIMEOUT), "the lock was not taken"
        return self

    def release(self) -> None:
        self._release.set()
        self._thread.join()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _admin(dsn: str, sql: str, *args: object) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_dropped_database_connections_answer_503_then_the_server_recovers(
    start: Callable[..., ServerProcess], database: str
) -> None:
    """Requests waiting on the database when its connections are terminated
    (``pg_terminate_backend``) are answered 503 ``unavailable`` (``/healthz``: database
    false); the process keeps running and, by itself, serves again: the queued message is
    fetched, a new one is delivered, and it leads again (its cluster connection too)."""
    require_redis()
    server = start()
    bob = _register(server)
    _send(server, [bob], b"queued before")
    wait_for(lambda: _leads(server), what="the process to lead")
    answers: dict[str, httpx.Response] = {}

    def ask(what: str, path: str, signed: bool) -> None:
        with Client(server.url, bob.device) as client:
            answers[what] = client.request("GET", path, signed=signed)

    with _Lock(database, ("queue", "accounts")) as lock:
        asking = [
            threading.Thread(target=ask, args=("fetch", "/v1/messages", True)),
            threading.Thread(target=ask, args=("health", "/healthz", False)),
        ]
        for thread in asking:
            thread.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        wait_for(lambda: _admin(database, waiting) >= 2, what="both requests to wait")
        terminated = _admin(
            database,
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND pid <> $1) t",
            lock.pid,
        )
        assert terminated >= 3  # the two waiting, the cluster connection (and idle ones)
        for thread in asking:
            thread.join(TIMEOUT)
    assert answers["fetch"].status_code == 503, answers["fetch"].text
    assert answers["fetch"].json()["error"] == "unavailable"
    assert answers["health"].status_code == 503
    assert answers["health"].json() == {"status": "degraded", "database": False, "fanout": True}
    assert server.proc is not None and server.proc.poll() is None  # still running

    def fetched() -> list[bytes]:
        response = bob.request("GET", "/v1/messages")
        if response.status_code != 200:
            return []
        return [unb64(m["body"]) for m in response.json()["messages"]]

    assert wait_for(fetched, what="the queue to be served again") == [b"queued before"]
    with Client(server.url) as probe:
        health = probe.request("GET", "/healthz", signed=False)
        assert (health.status_code, health.json()["database"]) == (200, True)
    with _on(server, bob).stream() as stream:
        [old] = stream.receive_messages(1)
        assert unb64(old["body"]) == b"queued before"
        _send(server, [bob], b"sent after")
        [new] = stream.receive_messages(1)
        assert unb64(new["body"]) == b"sent after"
    wait_for(lambda: _leads(server), what="the process to lead again")


def _server_command(*prefix: str, config: Path | None = None) -> list[str]:
    """``sealpost server`` with nothing but the listening address and the rate limits on
    its command line (``prefix``: ``env NAME=VALUE...``)."""
    return [
        *prefix,
        *(sys.executable, "-m", "sealpost.cli", "server"),
        *(("--config", str(config)) if config is not None else ()),
        *("--host", "127.0.0.1", "--port", "0", *OPEN),
    ]


def test_database_and_redis_from_the_environment_and_from_a_toml_file(
    tmp_path: Path, database: str
) -> None:
    """One process configured by environment variables (SEALPOST_DATABASE, SEALPOST_REDIS),
    another by a TOML file's [server] table: they share the database and Redis (a message
    sent through one wakes the other's stream at once, with a slow poll), and a third whose
    file names the database but no Redis is refused."""
    require_redis()
    data = tmp_path / "data"
    env_server = ServerProcess(
        data,
        tmp_path / "logs-env",
        command=_server_command(
            "env",
            f"SEALPOST_DATA={data}",
            f"SEALPOST_DATABASE={database}",
            f"SEALPOST_REDIS={REDIS}",
            f"SEALPOST_POLL_INTERVAL={NO_POLL}",
        ),
    )
    toml = tmp_path / "sealpost.toml"
    toml.write_text(
        f'[server]\ndata = "{data}"\ndatabase = "{database}"\nredis = "{REDIS}"\n'
        f"poll_interval = {NO_POLL}\n"
    )
    file_server = ServerProcess(data, tmp_path / "logs-toml", command=_server_command(config=toml))
    started = []
    try:
        started.append(env_server.start())
        started.append(file_server.start())
        for server in started:
            with Client(server.url) as probe:
                health = probe.request("GET", "/healthz", signed=False).json()
            assert health == {"status": "ok", "database": True, "fanout": True}
        bob = _register(env_server)
        with _on(file_server, bob).stream() as stream:
            assert stream.recv() == {"type": "empty"}
            began = time.monotonic()
            _send(env_server, [bob], b"through redis")
            [frame] = stream.receive_messages(1)
            assert unb64(frame["body"]) == b"through redis"
            assert time.monotonic() - began < 5  # woken through Redis, not the 60 s poll
        alone = tmp_path / "alone.toml"
        alone.write_text(f'[server]\ndata = "{data}"\ndatabase = "{database}"\n')
        refused = ServerProcess(
            data, tmp_path / "logs-alone", command=_server_command(config=alone)
        )
        with pytest.raises(AssertionError, match="--redis"):
            refused.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
        env["SEALPOST_DATABASE"] = database  # no --database flag: migrate reads it here
        migrate = subprocess.run(
            [sys.executable, "-m", "sealpost.cli", "server", "migrate"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert migrate.returncode == 0, migrate.stderr
        assert migrate.stdout == "applied migrations: none (up to date)\n"
    finally:
        for server in started:
            server.stop()


def test_redis_carries_wake_ups_displacements_and_link_ids_only(
    start: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Everything two processes say to a Redis of the test's own (every command, from its
    MONITOR, and every pub/sub message) while messages cross them, a device moves between
    them, rate limits are checked and a device links across them: publishes are 20-byte
    device addresses (wake-ups) or address and epoch (displacements) of the devices
    involved, or the link channel's 16-byte id, and no message body, no username, no
    client address, no KEM key and no provisioning body reaches Redis, in a command or in
    a key."""
    redis = OwnRedis(tmp_path)
    redis.start()
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli comes with redis-server"
    log = (tmp_path / "monitor.log").open("wb")
    monitor = subprocess.Popen(
        [cli, "-p", str(redis.port), "monitor"], stdout=log, stderr=subprocess.DEVNULL
    )
    log.close()
    published: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def listen() -> None:
        with SyncRedis.from_url(redis.url) as r:
            pubsub = r.pubsub()
            pubsub.psubscribe("*")
            while not stop.is_set():
                message = pubsub.get_message(timeout=0.1)
                if message and message["type"] == "pmessage":
                    published.append((message["channel"].decode(), message["data"]))
            pubsub.close()

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        limits = ("--rate-per-address", "1000", "--rate-sealed-per-address", "1000")
        a = start(*limits, redis=redis.url, poll="60")
        b = start(*limits, redis=redis.url, poll="60")
        names = [unique_name("r"), unique_name("r")]
        clients = []
        for server, name in zip((a, b), names, strict=True):
            client = Client(server.url, Device.generate())
            _opened.append(client)
            assert client.register(name).status_code == 201
            clients.append(client)
        bob, carol = clients
        assert bob.device is not None and carol.device is not None
        bodies = [b"not-for-redis-" + os.urandom(8).hex().encode() for _ in range(4)]
        with _on(b, bob).stream() as on_b, _on(a, carol).stream() as on_a:
            assert on_b.recv() == {"type": "empty"} and on_a.recv() == {"type": "empty"}
            _send(a, [bob], bodies[0])  # A -> bob on B
            _send(b, [carol], bodies[1])  # B -> carol on A
            [to_bob] = on_b.receive_messages(1)
            [to_carol] = on_a.receive_messages(1)
            on_b.ack(to_bob["id"])
            on_a.ack(to_carol["id"])
            with _on(a, bob).stream() as moved:  # bob moves to A: B's connection is displaced
                assert moved.recv() == {"type": "empty"}
                with pytest.raises(ConnectionClosed):
                    while True:
                        on_b.recv(timeout=5)
                _send(b, [bob, carol], bodies[2])  # from B, to devices both on A
                assert len(moved.receive_messages(1)) == 1
        _send(a, [bob], bodies[3])  # bob offline
        # a device of bob's links through B to a new device whose socket is on A
        kem, provision = os.urandom(1184), b"not-for-redis-" + os.urandom(8).hex().encode()
        bob_on_b = _on(b, bob)
        with connect(a.url.replace("http://", "ws://", 1) + "/v1/link", open_timeout=TIMEOUT) as ws:
            channel = _open_link(ws, kem)
            assert bob_on_b.request("GET", f"/v1/link/{channel}").status_code == 200
            put = bob_on_b.request("PUT", f"/v1/link/{channel}", json_body={"body": b64(provision)})
            assert put.status_code == 200, put.text
            assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "provision"
        time.sleep(0.5)  # the last publishes reach the listener
    finally:
        stop.set()
        listener.join()
        monitor.terminate()
        monitor.wait()
        with SyncRedis.from_url(redis.url) as r:
            keys = {key: r.dump(key) or b"" for key in r.scan_iter("*")}
        redis.kill()

    addresses = {
        struct.pack(">16sI", bob.device.account_id, 1),
        struct.pack(">16sI", carol.device.account_id, 1),
    }
    wakes = [data for channel, data in published if channel == "sealpost:wake"]
    displaced = [data for channel, data in published if channel == "sealpost:displace"]
    links = [data for channel, data in published if channel == "sealpost:link"]
    assert {name for name, _ in published} <= {
        "sealpost:wake",
        "sealpost:displace",
        "sealpost:link",
    }
    assert wakes and displaced and links
    for data in links:  # the channel's id, once or more: nothing else
        assert data and len(data) % 16 == 0
        assert {data[i : i + 16] for i in range(0, len(data), 16)} == {bytes.fromhex(channel)}
    for data in wakes:
        assert len(data) % 20 == 0
        assert {data[i : i + 20] for i in range(0, len(data), 20)} <= addresses
    for data in displaced:
        assert len(data) == 28 and data[:20] in addresses
    # each MONITOR line: time [db the Redis client's own address] "COMMAND" "arg"...
    lines = (tmp_path / "monitor.log").read_bytes().splitlines()
    commands = b"\n".join(line.split(b"] ", 1)[1] for line in lines if b"] " in line)
    assert b'"PUBLISH"' in commands.upper()  # the monitor did see the processes' traffic
    assert b'"EVALSHA"' in commands.upper() or b'"EVAL"' in commands.upper()  # rate limits
    said = [commands, *keys, *keys.values()]
    hidden = (*bodies, provision, kem[:30])  # 30: its base64 begins the key's
    for secret in (*hidden, *(base64.b64encode(x) for x in hidden), b"127.0.0.1"):
        assert not any(secret in blob for blob in said), secret
    for name in names:
        assert not any(name.encode() in blob for blob in said), name
    assert all(key.startswith(b"sealpost:rl:") for key in keys)


def _open_link(ws: ClientConnection, kem: bytes) -> str:
    """Open a channel on a new device's ``/v1/link`` socket; its id."""
    ws.send(json.dumps({"type": "open", "kem": b64(kem)}))
    frame = json.loads(ws.recv(timeout=TIMEOUT))
    assert frame["type"] == "channel"
    return str(frame["id"])


def test_a_device_links_with_its_socket_key_fetch_and_put_on_three_processes(
    trio: list[ServerProcess], database: str
) -> None:
    """The new device's socket on A, the key fetched through B, the provisioning PUT on C
    (each, behind a load balancer, wherever it lands): the provision reaches the socket,
    which closes (1000), before the PUT is answered; a second PUT while the first waits
    (A frozen with SIGSTOP meanwhile, so it cannot deliver) is 409 on another process; an
    unknown channel is 404 on every process, and so is the channel once delivered, whose
    row is then gone from the database."""
    a, b, c = trio
    alice = _register(a)
    on_b, on_c = _on(b, alice), _on(c, alice)
    kem = os.urandom(1184)
    unknown = os.urandom(16).hex()
    for client in (alice, on_b, on_c):
        assert client.request("GET", f"/v1/link/{unknown}").status_code == 404
        put = client.request("PUT", f"/v1/link/{unknown}", json_body={"body": b64(b"p")})
        assert put.status_code == 404, put.text
    with connect(a.url.replace("http://", "ws://", 1) + "/v1/link", open_timeout=TIMEOUT) as ws:
        channel = _open_link(ws, kem)
        key = on_b.request("GET", f"/v1/link/{channel}")
        assert key.status_code == 200 and unb64(key.json()["kem"]) == kem
        body = os.urandom(2000)  # sealed to the new device: opaque to the relay
        answers: list[httpx.Response] = []
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            first = threading.Thread(
                target=lambda: answers.append(
                    on_c.request("PUT", f"/v1/link/{channel}", json_body={"body": b64(body)})
                )
            )
            first.start()
            wait_for(
                lambda: (
                    _admin(database, "SELECT count(*) FROM link_channels WHERE body IS NOT NULL")
                    == 1
                ),
                what="the first PUT's body to be stored",
            )
            second = on_b.request("PUT", f"/v1/link/{channel}", json_body={"body": b64(b"x")})
            assert second.status_code == 409, second.text
            assert second.json()["error"] == "already_provisioned"
            assert not answers  # waits for the delivery by the frozen process
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        first.join(TIMEOUT)
        [answer] = answers
        assert answer.status_code == 200 and answer.json() == {"delivered": True}, answer.text
        # the PUT was answered after the socket got the provision and was closed
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"type": "provision", "body": b64(body)}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert _admin(database, "SELECT count(*) FROM link_channels") == 0
    for client in (alice, on_b, on_c):
        assert client.request("GET", f"/v1/link/{channel}").status_code == 404
        late = client.request("PUT", f"/v1/link/{channel}", json_body={"body": b64(b"p")})
        assert late.status_code == 404, late.text


class _RoundRobin:
    """A TCP front of the test's own, as a load balancer is: each connection it accepts
    goes to the next process in turn (``url``), on a thread of its own."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.backends = [urlsplit(s.url) for s in servers]
        self.chosen: list[int] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        i = len(self.chosen) % len(self.backends)
        self.chosen.append(i)
        backend = self.backends[i]
        try:
            up_reader, up_writer = await asyncio.open_connection(backend.hostname, backend.port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()

    def __enter__(self) -> _RoundRobin:
        self._thread.start()
        assert self._ready.wait(TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)


def test_sealpost_audit_through_a_balancer_sees_one_log_and_files_are_served_everywhere(
    trio: list[ServerProcess], tmp_path: Path
) -> None:
    """``sealpost audit`` run again and again through a front that sends each connection
    to the next process (as a load balancer does) finds every head consistent with the
    one it checked before, whichever process served either; a file uploaded through one
    process is downloaded through the others (blobs in the data directory they share)."""
    import json

    from sealpost.client.attachments import download_file, upload_file
    from sealpost.client.transport import Identity, Transport

    state = tmp_path / "audit"
    sizes = []
    with _RoundRobin(trio) as front:
        audit = [sys.executable, "-m", "sealpost.cli", "audit", "--server", front.url]
        for i in range(7):
            _register(trio[i % 3])  # the log grows through each process in turn
            done = subprocess.run(
                [*audit, "--state", str(state), "--json"],
                capture_output=True,
                text=True,
                timeout=60,
                env={k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")},
            )
            assert done.returncode == 0, done.stdout + done.stderr
            report = json.loads(done.stdout)
            assert report["consistent"] is True, report
            sizes.append(report["tree_size"])
        assert set(front.chosen) == {0, 1, 2}  # every process answered the auditor
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]

    owner = _register(trio[0])
    assert owner.device is not None
    identity = Identity(owner.device.keys.signing_key, owner.device.account_id, 1)
    source = tmp_path / "photo.bin"
    source.write_bytes(os.urandom(300_000))

    async def round_trip() -> list[bytes]:
        async with Transport(trio[0].url, identity) as transport:
            pointer = await upload_file(transport, source)
        got = []
        for i, server in enumerate(trio[1:]):
            async with Transport(server.url, identity) as transport:
                saved = await download_file(transport, pointer, tmp_path / f"got{i}")
            got.append(Path(saved).read_bytes())
        return got

    assert asyncio.run(round_trip()) == [source.read_bytes()] * 2


def test_a_process_starting_keeps_the_uploads_in_flight_on_the_others(
    trio: list[ServerProcess],
) -> None:
    """Issue 16's audit: a process that (re)starts on the shared data directory removed
    every ``.part`` in ``blobs/``, so each restart killed the uploads in flight on the
    others (their commit then failed with a 500). Now the restart leaves them alone: an
    upload streaming into A while B restarts is stored, and served by B and C."""
    import hashlib

    from sealpost.protocol.signing import sign_request, trailer_message

    a, b, c = trio
    owner = _register(a)
    assert owner.device is not None
    blobs = a.data / "blobs"
    blob = os.urandom(400_000)
    target = "/v1/attachments?signature=trailer"
    headers = sign_request(
        owner.device.keys.signing_key,
        owner.device.account_id,
        1,
        "POST",
        target,
        b"",
        now=int(time.time()),
        nonce=os.urandom(16),
    )
    message = trailer_message(
        "POST",
        target,
        headers["X-Sealpost-Timestamp"],
        headers["X-Sealpost-Nonce"],
        hashlib.sha256(blob).digest(),
    )
    trailer = owner.device.keys.signing_key.sign(message)
    parts_seen: list[int] = []

    def body() -> Iterator[bytes]:
        yield blob[:150_000]
        wait_for(lambda: list(blobs.glob("*.part")), what="the upload to start")
        b.stop()
        b.start()  # opens the blob store on the shared directory
        parts_seen.append(len(list(blobs.glob("*.part"))))
        yield blob[150_000:] + trailer

    headers["Content-Length"] = str(len(blob) + len(trailer))
    response = owner.http.post(target, content=body(), headers=headers, timeout=60)
    assert parts_seen == [1]
    assert response.status_code == 201, response.text
    blob_id = response.json()["id"]
    for server in (b, c):
        fetched = httpx.get(f"{server.url}/v1/attachments/{blob_id}", timeout=TIMEOUT)
        assert fetched.status_code == 200 and fetched.content == blob
