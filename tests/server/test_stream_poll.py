"""The poll of processes sharing a PostgreSQL database (:meth:`StreamEndpoint._poll`), in
process against a real one (shared mode: no queue tails, every push a read): one query
reads the queue positions of every connected device (a few, for more than
:data:`~sealpost.server.stream.POLL_BATCH`), and only the devices whose queue holds a
message not yet pushed are woken and read; a connection whose epoch another claimed is
closed with 4409, as a displacement told over Redis would be; and nothing is missed for
the filtering: not a message committed just after the poll's read (the next poll's), nor
one that a pusher already at its read would have missed (the wake sends it round again),
nor anything of a device with no queue row (woken as before)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocket

from sealpost.crypto.sign import SigningKey
from sealpost.server import stream, stream_conn
from sealpost.server.authn import Authenticator
from sealpost.server.blobs import DirectoryBlobStore
from sealpost.server.config import ServerConfig
from sealpost.server.connections import SEND_TEXTS
from sealpost.server.context import Context
from sealpost.server.diskspace import DiskSpace
from sealpost.server.fanout.local import LocalFanout
from sealpost.server.handlers.messages import MessagesApi
from sealpost.server.limits import Limits
from sealpost.server.metrics import Metrics
from sealpost.server.ratelimit import LocalLimiters
from sealpost.server.storage.base import (
    AccountRecord,
    DeviceRecord,
    Envelope,
    PreKeyUpload,
    QueuedMessage,
    QueuePosition,
)
from sealpost.server.storage.postgres import PostgresStorage
from services import fresh_database

Address = tuple[bytes, int]
DEVICES = 30


class _Device:
    """A connected device as the endpoint holds it, with every frame pushed to it."""

    def __init__(self, address: Address, epoch: int) -> None:
        self.address = address
        self.frames: list[str] = []

        async def receive() -> Any:
            raise AssertionError("not read")

        async def send(message: Any) -> None:
            raise AssertionError("not sent by ASGI")

        scope = {
            "type": "websocket",
            "path": "/v1/stream",
            "headers": [],
            "client": ("127.0.0.1", 40000),
            "extensions": {SEND_TEXTS: self._write},
        }
        sock = stream_conn.Socket(WebSocket(scope, receive, send))
        self.conn = stream_conn.Connection(sock, epoch, address)

    def _write(self, texts: Sequence[str]) -> bool:
        self.frames.extend(texts)
        return True

    def messages(self) -> int:
        return sum('"type":"message"' in f for f in self.frames)


class _Counted:
    """The storage's poll reads and queue reads, as they are asked (the real storage
    answers them)."""

    def __init__(self, storage: PostgresStorage) -> None:
        self.positions: list[list[Address]] = []
        self.fetched: list[Address] = []
        self.after_positions: Callable[[], Awaitable[None]] | None = None
        positions, fetch = storage.queue_positions, storage.fetch

        async def counted_positions(addresses: Sequence[Address]) -> dict[Address, QueuePosition]:
            self.positions.append(list(addresses))
            found = await positions(addresses)
            if self.after_positions is not None:
                await self.after_positions()
            return found

        async def counted_fetch(
            account_id: bytes, device_id: int, *, after_seq: int, limit: int
        ) -> list[QueuedMessage]:
            self.fetched.append((account_id, device_id))
            return await fetch(account_id, device_id, after_seq=after_seq, limit=limit)

        storage.queue_positions = counted_positions  # type: ignore[method-assign]
        storage.fetch = counted_fetch  # type: ignore[method-assign]

    def reset(self) -> None:
        self.positions.clear()
        self.fetched.clear()


Body = Callable[[PostgresStorage, stream.StreamEndpoint, list[_Device], _Counted], Awaitable[None]]


def _run(tmp_path: Path, body: Body) -> None:
    async def main(dsn: str) -> None:
        cfg = ServerConfig(data=tmp_path, database=dsn, redis="redis://unused")
        storage = PostgresStorage(dsn, solo=False)
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
            devices = []
            for i in range(DEVICES):
                account_id = os.urandom(16)
                await storage.create_account(
                    AccountRecord(account_id, f"user{i}", b"k" * 32, b"h" * 32, True, 0),
                    DeviceRecord(account_id, 1, b"cert", 0),
                    PreKeyUpload(),
                )
                address = (account_id, 1)
                device = _Device(address, await storage.claim_device(*address))
                endpoint._current[address] = device.conn  # as _serve holds it
                endpoint._wake(device.conn, address)  # what was queued while away: nothing
                devices.append(device)
            await _settled(devices)
            await body(storage, endpoint, devices, _Counted(storage))
        finally:
            await storage.close()

    with fresh_database() as dsn:
        asyncio.run(main(dsn))


async def _settled(devices: list[_Device]) -> None:
    """Until no pusher runs (each has read the queue and said so)."""
    for _ in range(1000):
        if all(d.conn.pusher is None for d in devices):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("pushers still running")


async def _queue(storage: PostgresStorage, device: _Device) -> None:
    """A message for the device, stored with no wake-up (its publish lost with Redis)."""
    account_id, device_id = device.address
    await storage.enqueue(
        [Envelope(os.urandom(16), account_id, device_id, b"body")],
        exempt={},
        received_at=1,
        expires_at=2**40,
        max_depth=100,
    )


def test_one_query_reads_every_device_and_only_those_with_messages_are_read_and_pushed(
    tmp_path: Path,
) -> None:
    async def body(
        storage: PostgresStorage,
        endpoint: stream.StreamEndpoint,
        devices: list[_Device],
        counted: _Counted,
    ) -> None:
        assert all(d.frames == ['{"type":"empty"}'] for d in devices)
        waiting = devices[:3]
        for device in waiting:
            await _queue(storage, device)
        # Queued and acked before this connection: its position is past the last pushed
        # (nothing, on this connection), its queue empty.
        acked = devices[3]
        await _queue(storage, acked)
        [message] = await storage.fetch(*acked.address, after_seq=0, limit=10)
        assert await storage.ack_all(*acked.address, [message.message_id]) == 1
        counted.reset()

        await endpoint._poll()
        await _settled(devices)
        assert len(counted.positions) == 1  # one query for all of them
        assert sorted(counted.positions[0]) == sorted(d.address for d in devices)
        assert sorted(counted.fetched) == sorted(d.address for d in [*waiting, acked])
        assert [d.messages() for d in waiting] == [1, 1, 1]
        assert all(d.messages() == 0 for d in devices[3:])
        assert all(d.conn.reason is None for d in devices)

        counted.reset()
        await endpoint._poll()  # nothing new: the acked device is not read again
        await _settled(devices)
        assert len(counted.positions) == 1 and counted.fetched == []

    _run(tmp_path, body)


def test_more_devices_than_a_batch_take_a_query_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(
        storage: PostgresStorage,
        endpoint: stream.StreamEndpoint,
        devices: list[_Device],
        counted: _Counted,
    ) -> None:
        monkeypatch.setattr(stream, "POLL_BATCH", 7)
        await _queue(storage, devices[-1])
        counted.reset()
        await endpoint._poll()
        await _settled(devices)
        assert [len(c) for c in counted.positions] == [7, 7, 7, 7, 2]
        assert counted.fetched == [devices[-1].address]
        assert devices[-1].messages() == 1

    _run(tmp_path, body)


def test_a_connection_whose_epoch_another_claimed_is_closed_with_4409(tmp_path: Path) -> None:
    """Redis lost the displacement: the device connected on another process, which took a
    new epoch in the database; the poll closes this process's connection of it."""

    async def body(
        storage: PostgresStorage,
        endpoint: stream.StreamEndpoint,
        devices: list[_Device],
        counted: _Counted,
    ) -> None:
        displaced, kept = devices[0], devices[1]
        await storage.claim_device(*displaced.address)  # the other process's connection
        await _queue(storage, displaced)
        await endpoint._poll()
        await _settled(devices)
        reason = displaced.conn.reason
        assert isinstance(reason, stream_conn.Close) and reason.code == 4409
        assert displaced.messages() == 0  # the new connection's to push, not this one's
        assert displaced.address not in counted.fetched
        assert kept.conn.reason is None

    _run(tmp_path, body)


def test_a_message_committed_just_after_the_poll_read_is_the_next_polls(
    tmp_path: Path,
) -> None:
    async def body(
        storage: PostgresStorage,
        endpoint: stream.StreamEndpoint,
        devices: list[_Device],
        counted: _Counted,
    ) -> None:
        late = devices[0]

        async def commit_one() -> None:
            counted.after_positions = None
            await _queue(storage, late)

        counted.after_positions = commit_one
        await endpoint._poll()
        await _settled(devices)
        assert late.messages() == 0  # the read came first: not woken
        await endpoint._poll()
        await _settled(devices)
        assert late.messages() == 1

    _run(tmp_path, body)


def test_a_poll_wake_sends_a_pusher_already_at_its_read_round_again(tmp_path: Path) -> None:
    """The pusher read the queue before the message committed and is still at it when the
    poll finds the message: woken then, it reads once more rather than stopping."""

    async def body(
        storage: PostgresStorage,
        endpoint: stream.StreamEndpoint,
        devices: list[_Device],
        counted: _Counted,
    ) -> None:
        device = devices[0]
        fetch = storage.fetch
        gate = asyncio.Event()
        read = asyncio.Event()

        async def held_fetch(
            account_id: bytes, device_id: int, *, after_seq: int, limit: int
        ) -> list[QueuedMessage]:
            found = await fetch(account_id, device_id, after_seq=after_seq, limit=limit)
            if not read.is_set():
                read.set()
                await gate.wait()  # its answer is from before the message
            return found

        storage.fetch = held_fetch  # type: ignore[method-assign]
        endpoint._wake(device.conn, device.address)
        await read.wait()
        await _queue(storage, device)
        await endpoint._poll()
        assert device.conn.pusher is not None and device.conn.again
        gate.set()
        await _settled(devices)
        assert device.messages() == 1

    _run(tmp_path, body)


def test_a_device_with_no_queue_row_is_woken_as_before(tmp_path: Path) -> None:
    async def body(
        storage: PostgresStorage,
        endpoint: stream.StreamEndpoint,
        devices: list[_Device],
        counted: _Counted,
    ) -> None:
        rowless = _Device((os.urandom(16), 1), 0)
        endpoint._current[rowless.address] = rowless.conn
        counted.reset()
        await endpoint._poll()
        await _settled([*devices, rowless])
        assert counted.fetched == [rowless.address]
        assert rowless.frames == ['{"type":"empty"}']

    _run(tmp_path, body)
