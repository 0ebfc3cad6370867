"""A SQLite database of schema version 1 with messages queued for several devices, opened
by this server (migrations 1 -> 2 -> current, all at open): the old messages are delivered
in the order they were queued and the new ones after them; a resend of an old message
stores nothing (sends are idempotent on message ids: the ``ON CONFLICT (message_id)`` of
every insert needs the unique index the old table has); acks, depth and byte quotas count
the old rows. (tests/server/test_sqlite_storage.py has the one-message migration, and
tests/server/test_transparency_log.py the map built at version 3.)"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from test_sqlite_storage import _env, _with_account

from sealpost.server.storage import Envelope, QueueFull, SharedEnvelope, SqliteStorage
from sealpost.server.storage import sqlite as sqlite_module

#: What migration 1 -> 2 added, taken away again: a database as version 1 left it.
TO_VERSION_1 = (
    "DROP TRIGGER queue_unref; DROP INDEX attachments_by_owner; DROP TABLE shared_bodies;"
    " ALTER TABLE queue DROP COLUMN body_ref; ALTER TABLE queue DROP COLUMN size;"
    " ALTER TABLE attachments DROP COLUMN owner; PRAGMA user_version=1;"
)


def _send(storage: SqliteStorage, envelopes: list[Envelope], **limits: int) -> asyncio.Future[int]:
    limits.setdefault("max_depth", 100)
    return storage.enqueue_nowait(envelopes, exempt={}, received_at=1, expires_at=10**12, **limits)


def test_a_version_1_database_with_messages_queued_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "db"

    async def main() -> None:
        storage = SqliteStorage(path)
        await storage.open()
        try:
            a = await _with_account(storage, devices=2)
            b = await _with_account(storage)
            old = [[_env(a, 1), _env(a, 2), _env(b)] for _ in range(5)]
            await asyncio.gather(*(_send(storage, s) for s in old))
        finally:
            await storage.close()
        conn = sqlite3.connect(path)
        conn.executescript(TO_VERSION_1)
        assert [r[1] for r in conn.execute("PRAGMA table_info(queue)")] == [
            "seq",
            "account_id",
            "device_id",
            "message_id",
            "body",
            "received_at",
            "expires_at",
        ]
        conn.close()

        storage = SqliteStorage(path)
        await storage.open()
        try:
            for i, device in enumerate(((a, 1), (a, 2), (b, 1))):
                queued = await storage.fetch(*device, after_seq=0, limit=100)
                assert [m.message_id for m in queued] == [s[i].message_id for s in old]
                assert [m.body for m in queued] == [s[i].body for s in old]
            # resends of old messages store nothing, alone or beside new ones
            assert await _send(storage, old[0]) == 0
            new = [_env(a, 1), _env(a, 2), _env(b)]
            assert await asyncio.gather(_send(storage, old[1]), _send(storage, new)) == [0, 3]
            for i, device in enumerate(((a, 1), (a, 2), (b, 1))):
                queued = await storage.fetch(*device, after_seq=0, limit=100)
                assert [m.message_id for m in queued] == [s[i].message_id for s in [*old, new]]
                seqs = [m.seq for m in queued]
                assert seqs == sorted(set(seqs))
            # the old rows count against the quotas: depth, and bytes (their sizes filled in)
            with pytest.raises(QueueFull):
                await _send(storage, [_env(b)], max_depth=6)
            with pytest.raises(QueueFull):
                await _send(storage, [_env(b)], max_bytes=6 * 32 + 31)
            # a multi send (shared bodies: new in version 2) beside the old messages
            shared = [SharedEnvelope(os.urandom(16), x, d) for x, d in ((a, 1), (a, 2), (b, 1))]
            assert (
                await storage.enqueue_shared(
                    b"group", shared, received_at=1, expires_at=10**12, max_depth=100
                )
                == 3
            )
            # acks of old and new messages empty every queue, and the shared body goes
            for i, device in enumerate(((a, 1), (a, 2), (b, 1))):
                ids = [s[i].message_id for s in [*old, new]] + [shared[i].message_id]
                assert await storage.ack_all(*device, ids) == 7
                assert await storage.fetch(*device, after_seq=0, limit=100) == []
        finally:
            await storage.close()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone() == (sqlite_module.SCHEMA_VERSION,)
            assert conn.execute("SELECT COUNT(*) FROM queue").fetchone() == (0,)
            assert conn.execute("SELECT COUNT(*) FROM shared_bodies").fetchone() == (0,)
        finally:
            conn.close()

    asyncio.run(main())
