"""The server's key files (:mod:`sealpost.server.server_key`): several processes starting at
once on one fresh data directory all load the same key, never a file still being written,
and leave one file of mode 0600 behind, nothing else."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sealpost.server.server_key import ServerKeyError, load_or_create_server_key

ROUNDS = 40
PROCESSES = 4


def _load(path: Path, start: Any, results: Any) -> None:
    """One starting process: wait for the others, then load (or create) the key."""
    start.wait()
    try:
        results.put(load_or_create_server_key(path, os.urandom).public_key().public_bytes_raw())
    except Exception as exc:  # reported to the test, which fails on it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_creating_one_key_at_once_all_load_the_same_whole_one(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        directory = tmp_path / str(round_)
        directory.mkdir()
        path = directory / "server_key"
        start, results = context.Barrier(PROCESSES), context.Queue()
        processes = [
            context.Process(target=_load, args=(path, start, results)) for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        loaded = [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join()
        assert len(set(loaded)) == 1, loaded  # one key, and no "0 bytes" from any of them
        again = load_or_create_server_key(path, os.urandom)
        assert loaded[0] == again.public_key().public_bytes_raw()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in directory.iterdir()] == ["server_key"]  # no temporary left


def test_an_existing_key_is_loaded_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "log_key"
    first = load_or_create_server_key(path, os.urandom)
    again = load_or_create_server_key(path, lambda n: b"\x01" * n)
    assert again.public_key() == first.public_key()


def test_a_truncated_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "server_key"
    path.write_bytes(b"")
    path.chmod(0o600)
    with pytest.raises(ServerKeyError, match="0 bytes"):
        load_or_create_server_key(path, os.urandom)
    assert path.read_bytes() == b""


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "server_key"
    load_or_create_server_key(path, os.urandom)
    path.chmod(0o640)
    with pytest.raises(ServerKeyError, match="chmod 600"):
        load_or_create_server_key(path, os.urandom)
