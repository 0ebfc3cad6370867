"""The machine's PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379) for the
tests that need them, and a database of a test's own.

Where a service does not answer, those tests skip and say why; under ``CI=true`` they
fail (a CI run must not pass by skipping them). ``SEALPOST_TEST_POSTGRES`` and
``SEALPOST_TEST_REDIS`` point them elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

POSTGRES = os.environ.get("SEALPOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("SEALPOST_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def require(url: str, default_port: int, what: str) -> None:
    if _answers(url, default_port):
        return
    reason = f"{what} is not answering at {urlsplit(url).netloc}; these tests need it"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_postgres() -> None:
    require(POSTGRES, 5432, "PostgreSQL")


def require_redis() -> None:
    require(REDIS, 6379, "Redis")


def _admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database (random name), dropped afterwards; its URL."""
    require_postgres()
    name = "sealpost_test_" + secrets.token_hex(6)
    _admin(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(POSTGRES)._replace(path="/" + name).geturl()
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


#: A factory of (unopened) storages on one database (tests/server/conftest.py ``backend``).
MakeStorage = Callable[[], Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of the test's own, on a free port, that the test kills and restarts."""

    def __init__(self, tmp: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            reason = "redis-server is not installed; the Redis fault test needs it"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        self.exe = exe
        self.port = free_port()
        self.dir = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return True
            except OSError:
                return False

        deadline = time.monotonic() + 20
        while not up():
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not listen within 20 s")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
