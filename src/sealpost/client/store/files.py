"""The profile directory's files, and the careful ways this package writes them.

Every file of a profile (keyfile, ``lock``, the database and SQLite's ``-wal`` and ``-shm``
beside it) is mode 0600 and the directory 0700, whatever the umask: the database file is
made 0600 before SQLite writes a byte (SQLite gives its -wal and -shm the database's mode),
and an open tightens the modes of a profile made otherwise. Every rewrite of the keyfile
goes through a temp file of its own name, fsynced, then renamed over it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from sealpost._files import fsync_dir
from sealpost.client.profilelock import LOCK_FILE

__all__ = [
    "DATABASE",
    "KEYFILE",
    "PROFILE_FILES",
    "create_private",
    "fsync_dir",
    "overwrite",
    "tighten",
    "write_atomic",
]

KEYFILE = "keyfile.json"
DATABASE = "profile.db"
#: Every file a profile's directory holds (SQLite makes the -wal and -shm files).
PROFILE_FILES = (KEYFILE, LOCK_FILE, DATABASE, DATABASE + "-wal", DATABASE + "-shm")
_WIPE_CHUNK = 1024 * 1024


def create_private(path: Path) -> None:
    """Make ``path`` an empty file of mode 0600 if it does not exist."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def tighten(directory: Path) -> None:
    """Mode 0700 on the profile's directory and 0600 on its files (a profile made by an
    older sealpost, or files copied in with another mode). Best effort."""
    with contextlib.suppress(OSError):
        if directory.stat().st_mode & 0o777 != 0o700:
            os.chmod(directory, 0o700)
    for name in PROFILE_FILES:
        path = directory / name
        with contextlib.suppress(OSError):
            if path.stat().st_mode & 0o777 != 0o600:
                os.chmod(path, 0o600)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temp file of its own (mkstemp: O_EXCL, mode
    0600, so two writers never share one), fsynced, renamed over it, the directory
    fsynced."""
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def overwrite(path: Path) -> None:
    """Overwrite a file's bytes in place with random ones and fsync (best effort)."""
    with path.open("r+b") as f:
        size = os.fstat(f.fileno()).st_size
        done = 0
        while done < size:
            n = min(_WIPE_CHUNK, size - done)
            f.write(os.urandom(n))
            done += n
        f.flush()
        os.fsync(f.fileno())
