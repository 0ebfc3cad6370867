"""The hostile-server harness: the real server in a subprocess (``hostile_server.py``),
on a fixed port so it can be stopped, edited and restarted, with an operator who can
answer requests in its place (rules), per user (views), and who holds its data directory
(the server key and the log key) and its database (``hostile_db.py``).

Every test that uses the ``hostile`` fixture runs twice: on SQLite (the database in the
data directory) and on PostgreSQL (a database of the module's own, created and dropped;
``tests/services.py`` finds the server, and skips, or fails under ``CI=true``, without it)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile_db import OperatorDatabase, PostgresDatabase, SqliteDatabase

from integration.helpers import ServerProcess
from sealpost.crypto.sign import SigningKey
from services import free_port

HERE = Path(__file__).parent
TIMEOUT = 20.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class HostileServer:
    def __init__(self, root: Path, database: str = "") -> None:
        """``database``: a PostgreSQL URL (``--database``), else SQLite in the data
        directory."""
        self.data = root / "data"
        self.logs = root / "logs"
        self.port = free_port()
        self.db: OperatorDatabase = (
            PostgresDatabase(database) if database else SqliteDatabase(self.data / "sealpost.db")
        )
        self._process = ServerProcess(
            self.data,
            self.logs,
            command=[
                sys.executable,
                str(HERE / "hostile_server.py"),
                str(self.data),
                str(self.port),
                *([database] if database else []),
            ],
        )

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._process.proc

    def start(self) -> HostileServer:
        self._process.start(TIMEOUT)
        return self

    def stop(self) -> None:
        self._process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, view: str | None = None) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return base if view is None else f"{base}/_view/{view}"

    # -- the operator's powers

    def rules(self, rules: list[dict[str, Any]]) -> None:
        """Answer matching requests with these bodies instead of the server."""
        path = self.data / "hostile.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules))
        os.replace(tmp, path)

    def clear_rules(self) -> None:
        (self.data / "hostile.json").unlink(missing_ok=True)

    @property
    def log_key(self) -> SigningKey:
        return SigningKey.from_private_bytes((self.data / "log_key").read_bytes())

    @property
    def server_key(self) -> SigningKey:
        return SigningKey.from_private_bytes((self.data / "server_key").read_bytes())

    def get(self, path: str) -> Any:
        response = httpx.get(self.url() + path, timeout=TIMEOUT)
        response.raise_for_status()
        return response.json()

    def queue(self, account_id: bytes, device_id: int = 1) -> list[tuple[int, bytes, bytes]]:
        """(seq, message id, body) of what waits for a device, in queue order."""
        return self.db.queue(account_id, device_id)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileServer]:
    """The hostile server of a module's tests, on SQLite and then on PostgreSQL (a database
    created for the module and dropped after it)."""
    root = tmp_path_factory.mktemp("hostile")
    with contextlib.ExitStack() as stack:
        database = ""
        if request.param == "postgres":
            from services import fresh_database

            database = stack.enter_context(fresh_database())
        server = HostileServer(root, database).start()
        stack.callback(server.stop)  # (before the database is dropped)
        # the server really runs on the backend asked for
        assert (server.data / "sealpost.db").exists() == (not database)
        yield server


@pytest.fixture(autouse=True)
def _honest_again(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "hostile" in request.fixturenames:
        server: HostileServer = request.getfixturevalue("hostile")
        server.clear_rules()
        if server.proc is None:
            server.start()
