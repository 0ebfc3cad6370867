"""The connection the repositories share: reads at any time, writes only inside a unit of
work (see :mod:`.unit`), savepoints for multi-statement operations, and actions deferred
until the unit commits. SQLCipher's ``OperationalError`` (locked, read-only, full disk, I/O)
leaves it as :class:`~sealpost.client.store.errors.DatabaseFailed`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlcipher3.dbapi2 as sqlcipher  # type: ignore[import-untyped]

from sealpost.client.store.errors import StoreError, database_failed

__all__ = ["Connection"]

_READS = ("SELECT", "WITH")


class Connection:
    """The store's SQLCipher connection as the repositories see it: reads at any time,
    writes only inside a unit."""

    __slots__ = ("_after", "_conn", "in_unit")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.in_unit = False
        self._after: list[Callable[[], object]] = []

    def close(self) -> None:
        self._conn = None

    def _raw(self) -> Any:
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    def _writable(self) -> Any:
        if not self.in_unit:
            raise StoreError("a write outside a unit of work (use store.unit())")
        return self._raw()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement (a write only inside a unit); its cursor."""
        conn = self._raw() if sql.lstrip()[:6].upper().startswith(_READS) else self._writable()
        try:
            return conn.execute(sql, args)
        except sqlcipher.OperationalError as exc:
            raise database_failed(exc) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        conn = self._writable()
        try:
            return conn.executemany(sql, rows)
        except sqlcipher.OperationalError as exc:
            raise database_failed(exc) from None

    def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first row of a query, or None."""
        try:
            return self.execute(sql, args).fetchone()
        except sqlcipher.OperationalError as exc:
            raise database_failed(exc) from None

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Every row of a query."""
        try:
            return list(self.execute(sql, args).fetchall())
        except sqlcipher.OperationalError as exc:
            raise database_failed(exc) from None

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """A savepoint: the statements of the block all happen, or (if it raises) none."""
        conn = self._writable()
        conn.execute("SAVEPOINT repository")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO repository")
                conn.execute("RELEASE repository")
            raise
        conn.execute("RELEASE repository")

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` once this unit has committed (never if it rolls back)."""
        self._writable()
        self._after.append(action)

    def run_after_commit(self) -> None:
        actions, self._after = self._after, []
        for action in actions:
            action()

    def discard_after_commit(self) -> None:
        self._after = []
