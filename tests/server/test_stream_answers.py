"""The answers of a connection's pipelined sends (:mod:`sealpost.server.stream`), in
process against a real SQLite storage: sends stored in one group commit are answered in
the order sent, in one write, including those refused in the middle of the batch (each
with its own error); a send refused for a stale epoch closes the connection unanswered
after the answers before it; an acks frame that would take the connection past its bound
of uncommitted acks waits whole, the frames after it behind it; and the random message
ids (:mod:`.handlers.messages`) are distinct cuts of the RNG, drawn anew in a forked
child."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocket, WebSocketDisconnect
from wspeer import Peer

from sealpost.crypto.sign import SigningKey
from sealpost.server import stream, stream_conn
from sealpost.server.acks import MAX_PENDING_ACKS
from sealpost.server.authn import AuthenticatedDevice, Authenticator
from sealpost.server.blobs import DirectoryBlobStore
from sealpost.server.config import ServerConfig
from sealpost.server.connections import SEND_TEXTS
from sealpost.server.context import Context
from sealpost.server.diskspace import DiskSpace
from sealpost.server.fanout.local import LocalFanout
from sealpost.server.frames import SEALED_CLIENT_FRAMES, STREAM_CLIENT_FRAMES
from sealpost.server.handlers.messages import ID_POOL, MESSAGE_ID_LEN, MessagesApi, _MessageIds
from sealpost.server.limits import Limits
from sealpost.server.metrics import Metrics
from sealpost.server.ratelimit import LocalLimiter, LocalLimiters, RateLimiter
from sealpost.server.storage import (
    AccountRecord,
    DeviceRecord,
    Envelope,
    PreKeyUpload,
    SqliteStorage,
)

Body = Callable[[SqliteStorage, stream.StreamEndpoint, list[bytes]], Awaitable[None]]
TOKEN = b"t" * 32


def _run(tmp_path: Path, body: Body, **config: Any) -> None:
    async def main() -> None:
        cfg = ServerConfig(data=tmp_path, **config)
        storage = SqliteStorage(tmp_path / "relay.db")
        await storage.open()
        limiters = LocalLimiters(clock=time.monotonic)
        ctx = Context(
            config=cfg,
            storage=storage,
            fanout=LocalFanout(),
            blobs=DirectoryBlobStore(tmp_path / "blobs", upload_timeout=cfg.upload_timeout),
            server_key=SigningKey.generate(os.urandom),
            metrics=Metrics(),
            clock=lambda: int(time.time()),
            rng=os.urandom,
            per_account=limiters.limiter("per_account", 0),
            per_address=limiters.limiter("per_address", 0),
            sealed_per_address=limiters.limiter("sealed_per_address", 0),
            limits=Limits.from_config(cfg, limiters),
            disk=DiskSpace(tmp_path, min_free=0, clock=time.monotonic),
        )
        endpoint = stream.StreamEndpoint(ctx, MessagesApi(ctx, Authenticator(ctx)))
        try:
            accounts = []
            for i in range(3):
                account_id = os.urandom(16)
                accounts.append(account_id)
                await storage.create_account(
                    AccountRecord(
                        account_id, f"user{i}", b"k" * 32, hashlib.sha256(TOKEN).digest(), True, 0
                    ),
                    DeviceRecord(account_id, 1, b"cert", 0),
                    PreKeyUpload(),
                )
            for account_id in accounts:  # as for a running server: the cache holds them
                await storage.account_by_id(account_id)
            await body(storage, endpoint, accounts)
        finally:
            await storage.close()

    asyncio.run(main())


class _Writes:
    """The socket's ``SEND_TEXTS`` hook: every write, as the list of frames it carried."""

    def __init__(self) -> None:
        self.writes: list[list[dict[str, Any]]] = []
        self.arrived = asyncio.Event()

    def __call__(self, texts: Sequence[str]) -> bool:
        self.writes.append([json.loads(t) for t in texts])
        self.arrived.set()
        return True

    def frames(self) -> list[dict[str, Any]]:
        return [frame for write in self.writes for frame in write]

    async def until(self, count: int) -> None:
        while len(self.frames()) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)


def _connection(writes: _Writes, epoch: int = 0) -> stream_conn.Connection:
    async def receive() -> Any:
        raise AssertionError("not read")

    async def send(message: Any) -> None:
        raise AssertionError("not sent by ASGI")

    scope = {
        "type": "websocket",
        "path": "/v1/sealed",
        "headers": [],
        "client": ("127.0.0.1", 40000),
        "extensions": {SEND_TEXTS: writes},
    }
    return stream_conn.Connection(stream_conn.Socket(WebSocket(scope, receive, send)), epoch)


def _send_text(req: int, account_id: bytes, device_id: int = 1) -> str:
    a = account_id.hex()
    return json.dumps(
        {
            "type": "send",
            "req": req,
            "messages": [{"account_id": a, "device_id": device_id, "body": "AAAA"}],
            "tokens": {a: base64.b64encode(TOKEN).decode()},
        }
    )


async def _submit(
    endpoint: stream.StreamEndpoint,
    conn: stream_conn.Connection,
    text: str,
    device: AuthenticatedDevice | None = None,
) -> None:
    kinds = SEALED_CLIENT_FRAMES if device is None else STREAM_CLIENT_FRAMES
    message = {"type": "websocket.receive", "text": text}
    await endpoint._send(conn, stream_conn.read_frame(message, kinds, "a frame"), device)


def test_answers_stay_in_send_order_when_sends_fail_in_the_middle_of_a_batch(
    tmp_path: Path,
) -> None:
    async def body(
        storage: SqliteStorage, endpoint: stream.StreamEndpoint, accounts: list[bytes]
    ) -> None:
        a, b, full = accounts
        for _ in range(2):  # ``full``'s queue is at its bound (max_queue_depth 2)
            await storage.enqueue(
                [Envelope(os.urandom(16), full, 1, b"x")],
                exempt={},
                received_at=1,
                expires_at=2**40,
                max_depth=2,
            )
        writes = _Writes()
        conn = _connection(writes)
        commits = storage.commits
        await _submit(endpoint, conn, _send_text(0, a))
        await _submit(endpoint, conn, _send_text(1, b, device_id=2))  # b has device 1 only
        await _submit(endpoint, conn, _send_text(2, b))
        await _submit(endpoint, conn, _send_text(3, full))
        await _submit(endpoint, conn, _send_text(4, a))
        await writes.until(5)
        frames = writes.frames()
        assert [(f["type"], f["req"]) for f in frames] == [
            ("sent", 0),
            ("error", 1),
            ("sent", 2),
            ("error", 3),
            ("sent", 4),
        ]
        assert frames[1]["error"] == "mismatched_devices"
        assert frames[1]["accounts"][b.hex()]["extra"] == [2]
        assert frames[3]["error"] == "queue_full"
        assert storage.commits - commits == 1  # one group commit stored them all
        # Those before the mismatched send went out in one write; the rest in another
        # (its answer needs a read).
        assert [[f["req"] for f in w] for w in writes.writes] == [[0], [1, 2, 3, 4]]
        assert len(await storage.fetch(a, 1, after_seq=0, limit=10)) == 2
        assert len(await storage.fetch(b, 1, after_seq=0, limit=10)) == 1
        assert len(await storage.fetch(full, 1, after_seq=0, limit=10)) == 2

    _run(tmp_path, body, max_queue_depth=2)


def test_a_send_refused_before_it_is_stored_is_answered_in_its_turn(tmp_path: Path) -> None:
    """A wrong delivery token (403) or an over-size batch (413), refused before anything is
    stored, between sends waiting for their commit: its error comes after their answers,
    in the order of the sends; with nothing in flight, at once."""

    async def body(
        storage: SqliteStorage, endpoint: stream.StreamEndpoint, accounts: list[bytes]
    ) -> None:
        a, b, _ = accounts
        writes = _Writes()
        conn = _connection(writes)
        wrong = json.loads(_send_text(1, b))
        wrong["tokens"] = {b.hex(): base64.b64encode(b"w" * 32).decode()}
        await _submit(endpoint, conn, _send_text(0, a))
        await _submit(endpoint, conn, json.dumps(wrong))
        await _submit(endpoint, conn, _send_text(2, b))
        await writes.until(3)
        frames = writes.frames()
        assert [(f["type"], f["req"]) for f in frames] == [
            ("sent", 0),
            ("error", 1),
            ("sent", 2),
        ]
        assert frames[1]["error"] == "forbidden"
        await _submit(endpoint, conn, json.dumps({**wrong, "req": 3}))  # nothing in flight
        await writes.until(4)
        assert (writes.frames()[3]["type"], writes.frames()[3]["req"]) == ("error", 3)
        assert len(await storage.fetch(b, 1, after_seq=0, limit=10)) == 1

    _run(tmp_path, body)


def test_stored_sends_wake_their_devices_commit_by_commit_with_one_callback_waiting(
    tmp_path: Path,
) -> None:
    """The devices of the sends stored are woken once their group commit is done, one
    commit after another, with a single done callback waiting (on the first send not yet
    stored), not one a send; a send refused stores nothing and wakes nobody."""

    async def body(
        storage: SqliteStorage, endpoint: stream.StreamEndpoint, accounts: list[bytes]
    ) -> None:
        a, b, c = accounts
        woken: list[bytes] = []
        for account_id in accounts:
            endpoint._ctx.fanout.subscribe((account_id, 1), partial(woken.append, account_id))
        messages = endpoint._messages
        writes = _Writes()
        conn = _connection(writes)
        wrong = json.loads(_send_text(1, c))
        wrong["tokens"] = {c.hex(): base64.b64encode(b"w" * 32).decode()}
        commits = storage.commits
        await _submit(endpoint, conn, _send_text(0, a))  # the first commit
        await asyncio.sleep(0)  # it is committing: what follows waits for the next
        await _submit(endpoint, conn, json.dumps(wrong))
        await _submit(endpoint, conn, _send_text(2, b))
        await _submit(endpoint, conn, _send_text(3, a))
        assert len(messages._storing) == 3 and messages._watching
        await writes.until(4)
        for _ in range(5):  # the publish task, then the wake-ups
            await asyncio.sleep(0)
        assert storage.commits - commits == 2
        assert sorted(woken) == sorted([a, a, b])  # a: once a commit; c: never
        assert not messages._storing and not messages._watching

    _run(tmp_path, body)


def test_the_sealed_hook_takes_a_send_answered_from_memory_and_leaves_one_over_the_bound(
    tmp_path: Path,
) -> None:
    """The socket's text hook takes a sealed send whose recipients are in memory (answered
    in its turn, stored); one naming more envelopes than ``max_envelopes`` is left to the
    handler (which refuses it) before any account is looked up."""

    async def body(
        storage: SqliteStorage, endpoint: stream.StreamEndpoint, accounts: list[bytes]
    ) -> None:
        a = accounts[0]
        writes = _Writes()
        conn = _connection(writes)
        seen = [0.0]
        assert endpoint._sealed_text(conn, seen, _send_text(0, a).encode())
        await writes.until(1)
        assert writes.frames() == [{"type": "sent", "req": 0, "stored": 1}]
        assert seen[0] > 0
        over = json.loads(_send_text(1, a))
        over["messages"] = over["messages"] * 3  # max_envelopes is 2
        looked_up: list[bytes] = []
        known = storage.account_known

        def counting(account_id: bytes) -> Any:
            looked_up.append(account_id)
            return known(account_id)

        storage.account_known = counting  # type: ignore[method-assign]
        assert not endpoint._sealed_text(conn, seen, json.dumps(over).encode())
        assert looked_up == []
        assert len(await storage.fetch(a, 1, after_seq=0, limit=10)) == 1

    _run(tmp_path, body, max_envelopes=2)


def test_the_sealed_hook_refuses_a_send_as_the_handler_does_when_rate_limited(
    tmp_path: Path,
) -> None:
    """A send with more delivery tokens than ``max_envelopes`` from an address out of sends
    gets the same answer whether the text hook or the handler takes it (the tokens are
    checked before the rate limit's answer, as ``_send`` does): which one takes a frame
    depends on timing only."""

    async def body(
        storage: SqliteStorage, endpoint: stream.StreamEndpoint, accounts: list[bytes]
    ) -> None:
        a = accounts[0]
        per_address = endpoint._ctx.per_address
        assert isinstance(per_address, LocalLimiter)
        per_address.buckets = RateLimiter(1, clock=time.monotonic)
        hooked, handled = _Writes(), _Writes()
        conn = _connection(hooked)
        assert endpoint._sealed_text(conn, [0.0], _send_text(0, a).encode())  # the one send
        many = json.loads(_send_text(1, a))
        many["tokens"] = {x.hex(): base64.b64encode(TOKEN).decode() for x in accounts}
        assert endpoint._sealed_text(conn, [0.0], json.dumps(many).encode())
        await _submit(endpoint, _connection(handled), json.dumps(many))
        await hooked.until(2)
        await handled.until(1)
        assert hooked.frames()[1]["error"] == handled.frames()[0]["error"] == "too_large"

    _run(tmp_path, body, max_envelopes=2)


def test_answers_of_one_group_commit_are_one_write(tmp_path: Path) -> None:
    async def body(
        storage: SqliteStorage, endpoint: stream.StreamEndpoint, accounts: list[bytes]
    ) -> None:
        writes = _Writes()
        conn = _connection(writes)
        for req in range(20):
            await _submit(endpoint, conn, _send_text(req, accounts[req % 3]))
        await writes.until(20)
        assert [[f["req"] for f in w] for w in writes.writes] == [list(range(20))]
        assert conn.answerer is None and conn.answers == []

    _run(tmp_path, body)


def test_a_stale_send_closes_after_the_answers_before_it(tmp_path: Path) -> None:
    async def body(
        storage: SqliteStorage, endpoint: stream.StreamEndpoint, accounts: list[bytes]
    ) -> None:
        a, b, _ = accounts
        epoch = await storage.claim_device(a, 1)
        device = AuthenticatedDevice(a, 1, None)  # type: ignore[arg-type]
        writes = _Writes()
        conn = _connection(writes, epoch)

        def copy(req: int) -> str:  # authenticated, as a device's stream sends
            message = {"account_id": b.hex(), "device_id": 1, "body": "AAAA"}
            return json.dumps({"type": "send", "req": req, "messages": [message]})

        await _submit(endpoint, conn, copy(0), device)
        await _submit(endpoint, conn, copy(1), device)
        await asyncio.sleep(0)  # their batch starts (its fences read): it is being committed
        newer = await storage.claim_device(a, 1)  # a newer connection of the device
        await _submit(endpoint, conn, copy(2), device)  # stale: waits for the next batch
        answerer = conn.answerer
        assert answerer is not None
        with pytest.raises(stream_conn.Close) as closed:
            await answerer
        assert closed.value.code == 4409
        assert [(f["type"], f["req"]) for f in writes.frames()] == [("sent", 0), ("sent", 1)]
        assert newer > epoch
        assert len(await storage.fetch(b, 1, after_seq=0, limit=10)) == 2  # not send 2

    _run(tmp_path, body)


def test_an_acks_frame_past_the_bound_waits_whole_and_the_frames_after_it_behind_it(
    tmp_path: Path,
) -> None:
    """A device's stream, over the relay's WebSocket protocol, with 1,000 acks committing
    (the commit thread held, as by a slow disk), gets an ``acks`` frame of 100 ids, then an
    ``ack``: it never holds more than MAX_PENDING_ACKS uncommitted (the reader waits for
    room for the whole frame), the ``ack`` is not taken before it (it waits in the inbox),
    and once the commit is done all 1,101 are committed."""

    async def body(
        storage: SqliteStorage, endpoint: stream.StreamEndpoint, accounts: list[bytes]
    ) -> None:
        a = accounts[0]
        await storage.enqueue(
            [Envelope(os.urandom(16), a, 1, b"x") for _ in range(1101)],
            exempt={},
            received_at=1,
            expires_at=2**40,
            max_depth=10_000,
        )
        ids = [m.message_id.hex() for m in await storage.fetch(a, 1, after_seq=0, limit=2000)]
        assert len(ids) == 1101
        epoch = await storage.claim_device(a, 1)
        device = AuthenticatedDevice(a, 1, None)  # type: ignore[arg-type]
        conns: list[stream_conn.Connection] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            ws = WebSocket(scope, receive, send)
            await ws.accept()
            conn = stream_conn.Connection(stream_conn.Socket(ws), epoch, (a, 1), endpoint._acks)
            conns.append(conn)
            with contextlib.suppress(WebSocketDisconnect):
                await endpoint._receive(conn, device)

        def acks(chunk: list[str]) -> str:
            return json.dumps({"type": "acks", "ids": chunk})

        peer = Peer(app)
        await peer.accepted()
        for _ in range(10):  # the handler starts reading: its text hook is installed
            await asyncio.sleep(0)
        conn = conns[0]
        gate = _hold_commits(storage)
        try:
            peer.send(*(acks(ids[i : i + 250]) for i in range(0, 1000, 250)))
            assert conn.pending == 1000  # taken by the hook
            most = [0]

            async def watch() -> None:
                while True:
                    most[0] = max(most[0], conn.pending)
                    await asyncio.sleep(0)

            watcher = asyncio.create_task(watch())
            for _ in range(5):  # queued: their commit waits for the disk
                await asyncio.sleep(0)
            assert conn.acks == [] and conn.committing is not None
            peer.send(acks(ids[1000:1100]))
            for _ in range(5):  # the reader has it, and waits for room
                await asyncio.sleep(0)
            assert conn.pending == 1000 and conn.busy
            peer.send(json.dumps({"type": "ack", "id": ids[1100]}))
            assert conn.pending == 1000 and peer.protocol.queue.qsize() == 1  # behind it
        finally:
            gate.set()
        for _ in range(1000):
            if conn.pending == 0:
                break
            await asyncio.sleep(0.01)
        watcher.cancel()
        assert conn.pending == 0 and conn.reason is None  # nothing failed
        assert most[0] <= MAX_PENDING_ACKS
        assert await storage.fetch(a, 1, after_seq=0, limit=10) == []
        assert "sealpost_messages_acked_total{} 1101" in endpoint._ctx.metrics.render()
        peer.close()
        for _ in range(10):
            await asyncio.sleep(0)
        assert conn.reader is None and conn.reason is None

    _run(tmp_path, body)


def _hold_commits(storage: SqliteStorage) -> threading.Event:
    """Keep the storage's commit thread busy, as a slow disk would, until the event is set:
    the next batch is written and waits there for its commit."""
    gate = threading.Event()
    thread = storage._committer
    assert thread is not None
    thread.submit(gate.wait, 10)
    return gate


def test_message_ids_are_distinct_cuts_of_one_draw() -> None:
    draws: list[int] = []

    def rng(n: int) -> bytes:
        draws.append(n)
        return os.urandom(n)

    ids = _MessageIds(rng)
    got = [ids() for _ in range(ID_POOL + 1)]
    assert draws == [ID_POOL * MESSAGE_ID_LEN] * 2  # one draw per ID_POOL ids
    assert all(len(i) == MESSAGE_ID_LEN for i in got)
    assert len(set(got)) == len(got)


def test_a_forked_child_draws_its_own_message_ids() -> None:
    ids = _MessageIds(os.urandom)
    ids()  # the pool is drawn, and most of it left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id must not be the parent's next
        os.write(write, ids())
        os._exit(0)
    os.close(write)
    child = os.read(read, MESSAGE_ID_LEN)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == MESSAGE_ID_LEN
    assert child != ids()
