"""The server's key-transparency log in SQLite storage: one entry per account change,
committed with it (a refused change logs nothing), proofs that verify against the root,
an old database's accounts logged when it is opened, and signed heads that only move
forward."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from sealpost.crypto.sign import SigningKey
from sealpost.server.handlers.log import LogService
from sealpost.server.storage import AccountRecord, DeviceRecord, PreKeyUpload, SqliteStorage
from sealpost.server.storage.base import TooManyDevices, UsernameTaken
from sealpost.transparency.log import LogEntry, SignedTreeHead, devices_commitment
from sealpost.transparency.merkle import leaf_hash, verify_consistency, verify_inclusion


def _account(name: str) -> AccountRecord:
    account_id = os.urandom(16)
    return AccountRecord(account_id, name, os.urandom(32), b"h" * 32, True, 0)


def test_every_account_change_is_logged_with_what_it_commits_to(tmp_path: Path) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            alice = _account("alice")
            await storage.create_account(
                alice, DeviceRecord(alice.account_id, 1, b"cert-1", 0), PreKeyUpload()
            )
            await storage.add_device(
                DeviceRecord(alice.account_id, 2, b"cert-2", 0), PreKeyUpload(), max_devices=2
            )
            size = await storage.log_size()
            # refused changes log nothing
            with pytest.raises(TooManyDevices):
                await storage.add_device(
                    DeviceRecord(alice.account_id, 3, b"cert-3", 0), PreKeyUpload(), max_devices=2
                )
            with pytest.raises(UsernameTaken):
                other = _account("alice")
                await storage.create_account(
                    other, DeviceRecord(other.account_id, 1, b"cert-x", 0), PreKeyUpload()
                )
            assert await storage.log_size() == size == 2
            await storage.remove_device(alice.account_id, 2, b"revocation-2")
            entries = await storage.log_entries(alice.account_id)
            assert [e.index for e in entries] == [0, 1, 2]
            decoded = [LogEntry.decode(e.entry) for e in entries]
            assert [d.sequence for d in decoded] == [1, 2, 3]
            assert entries[1].certificates == (b"cert-1", b"cert-2")
            assert entries[2].certificates == (b"cert-1",)
            assert entries[2].revocations == (b"revocation-2",)
            for item, entry in zip(entries, decoded, strict=True):
                assert entry.devices == devices_commitment(item.certificates, item.revocations)
                assert entry.account_key == alice.account_key and entry.username == "alice"
            latest = await storage.log_latest(alice.account_id)
            assert latest == entries[-1]
            assert await storage.log_entries(alice.account_id, after=1) == entries[2:]
            root3 = await storage.log_root(3)
            for item in entries:
                proof = await storage.log_inclusion(item.index, 3)
                verify_inclusion(leaf_hash(item.entry), item.index, 3, proof, root3)
            root1 = await storage.log_root(1)
            verify_consistency(1, 3, root1, root3, await storage.log_consistency(1, 3))
        finally:
            await storage.close()

    asyncio.run(main())


def test_accounts_from_before_the_log_are_logged_on_open(tmp_path: Path) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        acct = _account("carol")
        await storage.create_account(
            acct, DeviceRecord(acct.account_id, 1, b"cert-1", 0), PreKeyUpload()
        )
        await storage.close()
        db = sqlite3.connect(tmp_path / "db")
        with db:  # as a database made before the log existed
            db.execute("DELETE FROM log_entries")
            db.execute("DELETE FROM log_nodes")
        db.close()
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            assert await storage.log_size() == 1
            latest = await storage.log_latest(acct.account_id)
            assert latest is not None and latest.certificates == (b"cert-1",)
        finally:
            await storage.close()

    asyncio.run(main())


def test_tree_heads_are_signed_on_demand_kept_and_move_forward(tmp_path: Path) -> None:
    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        key = SigningKey.generate(os.urandom)
        clock = iter([1000, 500, 500]).__next__  # a clock that goes backwards
        service = LogService(storage, key, interval=3600, clock_ms=clock)
        try:
            empty = await service.head()
            assert empty.tree_size == 0
            acct = _account("dave")
            await storage.create_account(
                acct, DeviceRecord(acct.account_id, 1, b"cert-1", 0), PreKeyUpload()
            )
            assert (await service.head()).tree_size == 0  # nothing asked for more
            head = await service.head(1)
            head.verify(key.public_key())
            assert head.tree_size == 1 and head.timestamp > empty.timestamp
            assert head.root == await storage.log_root(1)
            stored = await storage.log_head()
            assert stored is not None and SignedTreeHead.decode(stored) == head
        finally:
            await storage.close()

    asyncio.run(main())
