"""Fixtures: a shared server for most tests (each test uses fresh accounts), and a
factory for tests that need their own (crash, breach drill, tight limits)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Client, Device, ServerProcess, unique_name


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("shared-server")
    proc = ServerProcess(
        root / "data", root / "logs", "--rate-per-address", "0", "--rate-sealed-per-address", "0"
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(*args: str, name: str = "server") -> ServerProcess:
        proc = ServerProcess(tmp_path / name / "data", tmp_path / name / "logs", *args)
        started.append(proc.start())
        return proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def registered(server: ServerProcess) -> Iterator[Callable[..., Client]]:
    """Register a fresh account on the shared server; returns its client."""
    clients: list[Client] = []

    def make(device: Device | None = None, name: str | None = None) -> Client:
        client = Client(server.url, device or Device.generate())
        response = client.register(name or unique_name())
        assert response.status_code == 201, response.text
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
