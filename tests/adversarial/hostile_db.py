"""The operator's hands on the server's database, the same on both backends.

A test edits storage through whole operations (``add_device``, ``replace_queue``, ...),
each one transaction, as the operator would with ``sqlite3`` or ``psql``. The statements
are written once, with ``?`` placeholders (``$1``, ``$2``, ... for PostgreSQL); what differs
is where the layouts differ: PostgreSQL keeps each device's queue sequence, depth and bytes
in ``device_queues`` (``server/storage/pg_schema.py``), which an operator who adds a device
or rewrites a queue keeps true, as the server would. A change the operator logs is appended
to the key-transparency log by the backend's own ``log_account_state``, in the same
transaction.

asyncpg is asynchronous and a test calls these from inside its own event loop, so each
PostgreSQL operation runs in a thread of its own, with its own loop and connection, and
the caller waits for it (as it waits for a ``sqlite3`` call).
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: One statement and its parameters, with ``?`` placeholders.
Statement = tuple[str, tuple[Any, ...]]

#: What the operator's queued rows say about themselves (the tests read them back only
#: through ``queue``): received at the epoch, expiring in 2286.
_RECEIVED, _EXPIRES = 0, 9_999_999_999


class OperatorDatabase(ABC):
    """The server's database as its operator edits it."""

    backend: str

    @abstractmethod
    def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """The rows of one query."""

    @abstractmethod
    def write(self, statements: Sequence[Statement], *, log: bytes | None = None) -> list[int]:
        """Run the statements in one transaction and, with ``log``, append that account's
        state (as the transaction sees it) to the log, as the server does; each statement's
        row count."""

    def _new_device(self, account_id: bytes, device_id: int, cert: bytes) -> list[Statement]:
        return [
            (
                "INSERT INTO devices (account_id, device_id, certificate, registered)"
                " VALUES (?, ?, ?, 0)",
                (account_id, device_id, cert),
            )
        ]

    @abstractmethod
    def _queue(self, account_id: bytes, device_id: int, bodies: Sequence[bytes]) -> list[Statement]:
        """Statements that empty the device's queue (the first one, its row count: how
        many were there) and queue ``bodies`` in that order."""

    # -- reads

    def queue(self, account_id: bytes, device_id: int = 1) -> list[tuple[int, bytes, bytes]]:
        """(seq, message id, body) of what waits for a device, in queue order."""
        return [
            (seq, bytes(m), bytes(b) + bytes(shared or b""))
            for seq, m, b, shared in self.fetch(
                "SELECT q.seq, q.message_id, q.body, s.body FROM queue q"
                " LEFT JOIN shared_bodies s ON s.id = q.body_ref"
                " WHERE q.account_id = ? AND q.device_id = ? ORDER BY q.seq",
                account_id,
                device_id,
            )
        ]

    def log_entries(self) -> list[bytes]:
        return [bytes(e) for (e,) in self.fetch("SELECT entry FROM log_entries ORDER BY idx")]

    def one_time_prekeys(self, account_id: bytes) -> int:
        ((n,),) = self.fetch(
            "SELECT COUNT(*) FROM one_time_prekeys WHERE account_id = ?", account_id
        )
        return int(n)

    # -- the operator's edits

    def add_device(
        self, account_id: bytes, device_id: int, cert: bytes, *, logged: bool = True
    ) -> None:
        """A device in the account's storage; ``logged``: and in its log."""
        statements = self._new_device(account_id, device_id, cert)
        self.write(statements, log=account_id if logged else None)

    def substitute_account(self, account_id: bytes, account_key: bytes, cert: bytes) -> None:
        """Another account key, and device 1's certificate under it, stored and logged."""
        self.write(
            [
                (
                    "UPDATE accounts SET account_key = ? WHERE account_id = ?",
                    (account_key, account_id),
                ),
                (
                    "UPDATE devices SET certificate = ? WHERE account_id = ? AND device_id = 1",
                    (cert, account_id),
                ),
            ],
            log=account_id,
        )

    def restore_device(self, account_id: bytes, device_id: int, cert: bytes) -> None:
        """Put back a device the account revoked and drop its revocations, logged."""
        statements = [("DELETE FROM revocations WHERE account_id = ?", (account_id,))]
        statements += self._new_device(account_id, device_id, cert)
        self.write(statements, log=account_id)

    def replace_queue(self, account_id: bytes, device_id: int, bodies: Sequence[bytes]) -> int:
        """What waits for the device becomes ``bodies``, in that order (each under a new
        message id); how many messages were dropped to make room."""
        return self.write(self._queue(account_id, device_id, bodies))[0]


class SqliteDatabase(OperatorDatabase):
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, timeout=10)

    def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = self._connect()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def write(self, statements: Sequence[Statement], *, log: bytes | None = None) -> list[int]:
        from sealpost.server.storage.sqlite import log_account_state

        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            counts = [db.execute(sql, args).rowcount for sql, args in statements]
            if log is not None:
                log_account_state(db, log)
            db.execute("COMMIT")
            return counts
        finally:
            db.close()

    def _queue(self, account_id: bytes, device_id: int, bodies: Sequence[bytes]) -> list[Statement]:
        address = (account_id, device_id)
        return [("DELETE FROM queue WHERE account_id = ? AND device_id = ?", address)] + [
            (
                "INSERT INTO queue (account_id, device_id, message_id, body, size, received_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*address, os.urandom(16), body, len(body), _RECEIVED, _EXPIRES),
            )
            for body in bodies
        ]


_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``, ..."""
    count = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql)


def _in_a_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a loop of its own, in another thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class PostgresDatabase(OperatorDatabase):
    backend = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import asyncpg

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return [tuple(r) for r in await conn.fetch(_numbered(sql), *args)]
            finally:
                await conn.close()

        return _in_a_thread(run)

    def write(self, statements: Sequence[Statement], *, log: bytes | None = None) -> list[int]:
        import asyncpg

        from sealpost.server.storage.pg_log import NodeCache, log_account_state

        async def run() -> list[int]:
            conn = await asyncpg.connect(self.dsn)
            try:
                async with conn.transaction():
                    counts = []
                    for sql, args in statements:
                        status = await conn.execute(_numbered(sql), *args)
                        counts.append(int(status.rsplit(" ", 1)[-1]))
                    if log is not None:
                        await log_account_state(conn, NodeCache(), log)
                    return counts
            finally:
                await conn.close()

        return _in_a_thread(run)

    def _new_device(self, account_id: bytes, device_id: int, cert: bytes) -> list[Statement]:
        # as the server's own insert_device: a device has its queue's row
        queue_row = (
            "INSERT INTO device_queues (account_id, device_id) VALUES (?, ?) ON CONFLICT DO NOTHING"
        )
        device_row = super()._new_device(account_id, device_id, cert)
        return [*device_row, (queue_row, (account_id, device_id))]

    def _queue(self, account_id: bytes, device_id: int, bodies: Sequence[bytes]) -> list[Statement]:
        address = (account_id, device_id)
        where = " WHERE account_id = ? AND device_id = ?"
        statements: list[Statement] = [
            ("DELETE FROM queue" + where, address),  # (its trigger releases shared bodies)
            ("UPDATE device_queues SET depth = 0, bytes = 0" + where, address),
        ]
        for body in bodies:  # each row takes the device's next sequence number
            statements += [
                (
                    "INSERT INTO queue (account_id, device_id, seq, message_id, body, size,"
                    " received_at, expires_at) SELECT account_id, device_id, last_seq + 1,"
                    " ?::bytea, ?::bytea, ?::integer, ?::bigint, ?::bigint FROM device_queues"
                    + where,
                    (os.urandom(16), body, len(body), _RECEIVED, _EXPIRES, *address),
                ),
                (
                    "UPDATE device_queues SET last_seq = last_seq + 1, depth = depth + 1,"
                    " bytes = bytes + ?" + where,
                    (len(body), *address),
                ),
            ]
        return statements
