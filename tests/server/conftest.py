"""``backend``: each storage test runs against SQLite (a file of its own) and PostgreSQL (a
database of its own, created and dropped: see tests/services.py), the latter both as one
of several processes and alone on its database (``solo``: it then keeps queue tails in
memory, as the SQLite backend does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services import MakeStorage, fresh_database


@pytest.fixture(params=["sqlite", "postgres", "postgres-solo"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStorage]:
    """A factory of (unopened) storages on one fresh database."""
    if request.param == "sqlite":
        from sealpost.server.storage.sqlite import SqliteStorage

        yield lambda: SqliteStorage(tmp_path / "db")
        return
    from sealpost.server.storage.postgres import PostgresStorage

    solo = request.param == "postgres-solo"
    with fresh_database() as dsn:
        yield lambda: PostgresStorage(dsn, solo=solo)
