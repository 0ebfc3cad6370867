"""Fixtures for the chat app's tests: a real server process (shared by a module's tests,
each using fresh accounts), and one of a test's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.helpers import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("app-server")
    proc = ServerProcess(
        root / "data", root / "logs", "--rate-per-address", "0", "--rate-sealed-per-address", "0"
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(*args: str) -> ServerProcess:
        proc = ServerProcess(
            tmp_path / "own-server" / "data", tmp_path / "own-server" / "logs", *args
        )
        started.append(proc.start())
        return proc

    yield make
    for proc in started:
        proc.stop()
