"""SQLite storage: group commit batches concurrent writes, and a failing operation in a
batch rolls back alone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sealpost.server.storage import (
    AccountRecord,
    DeviceRecord,
    Envelope,
    MismatchedDevices,
    PreKeyUpload,
    QueueFull,
    SqliteStorage,
)


async def _with_account(storage: SqliteStorage, devices: int = 1) -> bytes:
    account_id = os.urandom(16)
    await storage.create_account(
        AccountRecord(account_id, account_id.hex()[:12], os.urandom(32), b"h" * 32, True, 0),
        DeviceRecord(account_id, 1, b"cert", 0),
        PreKeyUpload(),
    )
    for device_id in range(2, devices + 1):
        await storage.add_device(DeviceRecord(account_id, device_id, b"cert", 0), PreKeyUpload())
    return account_id


def _env(account_id: bytes, device_id: int = 1) -> Envelope:
    return Envelope(os.urandom(16), account_id, device_id, os.urandom(32))


def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            account_id = await _with_account(storage)
            before = storage.commits
            await asyncio.gather(
                *(
                    storage.enqueue(
                        [_env(account_id)], exempt={}, received_at=1, expires_at=9, max_depth=500
                    )
                    for _ in range(200)
                )
            )
            assert storage.commits - before < 200  # batched
            queued = await storage.fetch(account_id, 1, after_seq=0, limit=1000)
            assert len(queued) == 200
            assert [m.seq for m in queued] == sorted(m.seq for m in queued)
        finally:
            await storage.close()

    asyncio.run(main())


def test_a_failing_operation_rolls_back_alone(tmp_path: Path) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            account_id = await _with_account(storage, devices=2)
            good = storage.enqueue(
                [_env(account_id, 1), _env(account_id, 2)],
                exempt={},
                received_at=1,
                expires_at=9,
                max_depth=5,
            )
            bad = storage.enqueue(
                [_env(account_id, 1)], exempt={}, received_at=1, expires_at=9, max_depth=5
            )
            results = await asyncio.gather(good, bad, return_exceptions=True)
            assert results[0] is None
            assert isinstance(results[1], MismatchedDevices)
            assert results[1].accounts == {account_id: ([2], [])}
            assert len(await storage.fetch(account_id, 1, after_seq=0, limit=10)) == 1
            # the queue limit refuses the whole send, including envelopes that would fit
            with pytest.raises(QueueFull):
                await storage.enqueue(
                    [_env(account_id, 1), _env(account_id, 2)],
                    exempt={},
                    received_at=1,
                    expires_at=9,
                    max_depth=1,
                )
            assert len(await storage.fetch(account_id, 2, after_seq=0, limit=10)) == 1
            purged = await storage.purge(now=9)
            assert purged.messages == 2
        finally:
            await storage.close()

    asyncio.run(main())
