"""The hostile-server harness: the real server in a subprocess (``hostile_server.py``),
on a fixed port so it can be stopped, edited and restarted, with an operator who can
answer requests in its place (rules), per user (views), and who holds its data directory:
the database, the server key and the log key."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

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
    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.logs = root / "logs"
        self.port = free_port()
        self._process = ServerProcess(
            self.data,
            self.logs,
            command=[
                sys.executable,
                str(HERE / "hostile_server.py"),
                str(self.data),
                str(self.port),
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

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data / "sealpost.db", isolation_level=None, timeout=10)

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
        db = self.db()
        try:
            return [
                (seq, bytes(m), bytes(b) + bytes(shared or b""))
                for seq, m, b, shared in db.execute(
                    "SELECT q.seq, q.message_id, q.body, s.body FROM queue q"
                    " LEFT JOIN shared_bodies s ON s.id = q.body_ref"
                    " WHERE q.account_id = ? AND q.device_id = ? ORDER BY q.seq",
                    (account_id, device_id),
                )
            ]
        finally:
            db.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    server = HostileServer(tmp_path_factory.mktemp("hostile")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _honest_again(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "hostile" in request.fixturenames:
        server: HostileServer = request.getfixturevalue("hostile")
        server.clear_rules()
        if server.proc is None:
            server.start()
