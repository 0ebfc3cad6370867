"""One process at a time on a profile: an exclusive ``flock`` held while it is open.

Two processes that open the same profile would each cache the same ratchet sessions and
encrypt under the same message key (AES-GCM key and nonce reuse), and a stale commit could
roll a ratchet back. So :class:`~sealpost.client.store.Store` takes this lock before it
reads the keyfile and holds it until it is closed (a :class:`~sealpost.client.Client`'s
whole lifetime):

- the lock is ``flock(LOCK_EX)`` on ``lock`` in the profile directory (created 0600). The
  kernel drops it when the process ends, however it ends, so a crash never leaves a
  profile locked; the file itself stays and holds the last holder's pid, for the error;
- a second opener polls for it up to ``timeout`` seconds (a command started while
  another finishes just waits), then gets :class:`LockHeld` naming the holder's pid.

``flock`` locks belong to an open file description, so a second :func:`acquire` in the same
process waits for the first one too, as it must (two ``Client`` objects on one profile in
one process would reuse keys just the same). It is advisory: only sealpost honours it.
Network file systems may not implement it; keep profiles on a local disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "LockHeld", "ProfileLock"]

LOCK_FILE = "lock"
_POLL = 0.05  # seconds between tries while another process holds the lock


class LockHeld(Exception):
    """Another process holds the profile; ``pid`` is its process id (None if unknown)."""

    def __init__(self, pid: int | None) -> None:
        holder = "another process" if pid is None else f"process {pid}"
        super().__init__(f"the profile is in use by {holder}")
        self.pid = pid


class ProfileLock:
    """The held lock on one profile directory; :meth:`release` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "released"
        return f"ProfileLock(path={str(self.path)!r}, {state})"

    @classmethod
    def acquire(cls, directory: Path, timeout: float) -> ProfileLock:
        """Take the lock of ``directory`` (which must exist), waiting up to ``timeout``
        seconds; raises :class:`LockHeld` after that."""
        path = Path(directory) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            deadline = time.monotonic() + max(0.0, timeout)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockHeld(_holder(fd)) from None
                    time.sleep(_POLL)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Free the lock (idempotent). Closing the descriptor releases the ``flock``."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _holder(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, if it reads as one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text.isdigit() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
