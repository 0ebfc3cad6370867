"""The server's key-transparency log in storage (SQLite and PostgreSQL): one entry per
account change, committed with it (a refused change logs nothing), proofs that verify
against the root, an old database's accounts logged when it is opened, and signed heads
that only move forward; the account map updated with each entry, in its transaction."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from sealpost.crypto.sign import SigningKey
from sealpost.server.handlers.log import LogService
from sealpost.server.storage import AccountRecord, DeviceRecord, PreKeyUpload, SqliteStorage
from sealpost.server.storage.base import LoggedEntry, TooManyDevices, UsernameTaken
from sealpost.transparency.log import (
    LogEntry,
    SignedTreeHead,
    account_map_key,
    account_map_value,
    devices_commitment,
)
from sealpost.transparency.merkle import (
    InvalidProof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from sealpost.transparency.smt import (
    EMPTY_MAP_ROOT,
    MapProof,
    MemoryMapStore,
    build,
    map_root,
    verify_map,
)
from services import MakeStorage


def _account(name: str) -> AccountRecord:
    account_id = os.urandom(16)
    return AccountRecord(account_id, name, os.urandom(32), b"h" * 32, True, 0)


def test_every_account_change_is_logged_with_what_it_commits_to(backend: MakeStorage) -> None:
    async def main() -> None:
        storage = backend()
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


def test_tree_heads_are_signed_on_demand_kept_and_move_forward(backend: MakeStorage) -> None:
    async def main() -> None:
        storage = backend()
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


def _map_value(item: LoggedEntry) -> bytes:
    return account_map_value(item.index, leaf_hash(item.entry))


def test_the_account_map_follows_the_log_in_the_same_transaction(backend: MakeStorage) -> None:
    """After every change the map holds each name's newest entry (and nothing for an
    unknown name), proven against the root a head would sign; a refused change leaves it."""

    async def main() -> None:
        storage = backend()
        await storage.open()
        try:
            erin, frank = _account("erin"), _account("frank")
            for acct in (erin, frank):
                await storage.create_account(
                    acct, DeviceRecord(acct.account_id, 1, b"cert-1", 0), PreKeyUpload()
                )
            await storage.add_device(
                DeviceRecord(erin.account_id, 2, b"cert-2", 0), PreKeyUpload(), max_devices=2
            )
            await storage.remove_device(erin.account_id, 2, b"revocation-2")
            state = await storage.log_state()
            assert state.size == 4 and state.root == await storage.log_root(4)
            for acct in (erin, frank):
                found = await storage.log_lookup(acct.username)
                newest = await storage.log_latest(acct.account_id)
                assert found.size == 4 and found.latest == newest and newest is not None
                verify_inclusion(
                    leaf_hash(newest.entry), newest.index, 4, found.inclusion, state.root
                )
                verify_map(
                    account_map_key(acct.username),
                    _map_value(newest),
                    MapProof.decode(found.map_proof),
                    state.map_root,
                )
            # erin's older entries are in the log, but the map does not prove them newest
            first = (await storage.log_entries(erin.account_id))[0]
            erin_proof = MapProof.decode((await storage.log_lookup("erin")).map_proof)
            with pytest.raises(InvalidProof):
                verify_map(account_map_key("erin"), _map_value(first), erin_proof, state.map_root)
            nobody = await storage.log_lookup("nobody")
            assert nobody.latest is None and nobody.inclusion == []
            verify_map(
                account_map_key("nobody"), None, MapProof.decode(nobody.map_proof), state.map_root
            )
            with pytest.raises(TooManyDevices):
                await storage.add_device(
                    DeviceRecord(frank.account_id, 2, b"c", 0), PreKeyUpload(), max_devices=1
                )
            assert await storage.log_state() == state
            # the map is the one the log implies: rebuilt from the entries, the same root
            rebuilt = MemoryMapStore()
            newest_by_name = {}
            for acct in (erin, frank):
                for item in await storage.log_entries(acct.account_id):
                    newest_by_name[acct.username] = item
            build(rebuilt, [(account_map_key(n), _map_value(i)) for n, i in newest_by_name.items()])
            assert map_root(rebuilt) == state.map_root
        finally:
            await storage.close()

    asyncio.run(main())


def test_a_schema_2_database_gets_its_map_and_new_heads(tmp_path: Path) -> None:
    """Opening a database from before the map builds the map from the log and drops the
    old tree heads (which did not commit to a map): the next head is signed anew."""

    async def main() -> None:
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        gina = _account("gina")
        await storage.create_account(
            gina, DeviceRecord(gina.account_id, 1, b"cert-1", 0), PreKeyUpload()
        )
        await storage.add_device(
            DeviceRecord(gina.account_id, 2, b"cert-2", 0), PreKeyUpload(), max_devices=2
        )
        expected = (await storage.log_state()).map_root
        await storage.close()
        db = sqlite3.connect(tmp_path / "db")
        with db:  # as schema 2 left it: no map, a head of the first format
            db.execute("DELETE FROM kt_map_leaves")
            db.execute("DELETE FROM kt_map_nodes")
            db.execute("INSERT INTO log_heads VALUES (2, 1, ?)", (b"\x01\x31" + bytes(112),))
            db.execute("PRAGMA user_version=2")
        db.close()
        storage = SqliteStorage(tmp_path / "db")
        await storage.open()
        try:
            state = await storage.log_state()
            assert state.map_root == expected != EMPTY_MAP_ROOT
            assert await storage.log_head() is None
            key = SigningKey.generate(os.urandom)
            found, head = await LogService(storage, key, interval=3600).lookup("gina")
            assert head.tree_size == found.size == 2 and head.map_root == expected
            head.verify(key.public_key())
        finally:
            await storage.close()
        db = sqlite3.connect(tmp_path / "db")
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        db.close()

    asyncio.run(main())


def test_a_lookup_head_is_the_newest_and_signed_when_the_log_grew(backend: MakeStorage) -> None:
    async def main() -> None:
        storage = backend()
        await storage.open()
        service = LogService(storage, SigningKey.generate(os.urandom), interval=3600)
        try:
            hana = _account("hana")
            await storage.create_account(
                hana, DeviceRecord(hana.account_id, 1, b"cert-1", 0), PreKeyUpload()
            )
            _first, head1 = await service.lookup("hana")
            assert head1.tree_size == 1 and head1.map_root == (await storage.log_state()).map_root
            _again, same = await service.lookup("nobody")
            assert same == head1  # the log did not grow: the same head
            await storage.add_device(
                DeviceRecord(hana.account_id, 2, b"cert-2", 0), PreKeyUpload(), max_devices=2
            )
            second, head2 = await service.lookup("hana")
            assert head2.tree_size == 2 and head2.timestamp >= head1.timestamp
            assert second.latest is not None and second.latest.index == 1
        finally:
            await storage.close()

    asyncio.run(main())
