"""A directory made read-only for a test, the way a user meets it: a read-only file
system when the tests run as root (a read-only bind mount; permission bits do not stop
root), permission bits otherwise."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [directory, *directory.iterdir()]}
        for path in modes:
            path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount(8) to make a read-only file system")
    done = subprocess.run([mount, "--bind", str(directory), str(directory)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        done = subprocess.run(
            [mount, "-o", "remount,ro,bind", str(directory)], check=False, capture_output=True
        )
        if done.returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)
