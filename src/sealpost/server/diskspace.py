"""The free-disk watermark: below ``min_free_disk`` free bytes on the data directory's
disk the server refuses new data (sends, registrations, prekey uploads, attachments) with
``507 {"error": "insufficient_storage", ...}`` instead of failing halfway when the disk
fills: SQLite and the blob store would otherwise meet ``ENOSPC`` mid-write. Reading,
acknowledging and deleting (which frees space) still work.

The free space is read at most once a second (``statvfs`` is cheap, but not free on every
send), so a burst may pass the watermark by what arrives in that second; the watermark is
a margin, not the disk's end.

    >>> space = DiskSpace(Path("."), min_free=0, clock=lambda: 0.0)
    >>> space.check()  # never refuses with a watermark of 0
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from sealpost.server.errors import ApiError

__all__ = ["DiskSpace"]

#: Seconds a reading of the free space is reused.
INTERVAL = 1.0


class DiskSpace:
    def __init__(
        self,
        path: Path,
        *,
        min_free: int,
        clock: Callable[[], float],
        free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
    ) -> None:
        self._path = path
        self._min_free = min_free
        self._clock = clock
        self._free = free
        self._checked = float("-inf")
        self._low = False

    def low(self) -> bool:
        """Whether free space is under the watermark (read again after :data:`INTERVAL`)."""
        if self._min_free <= 0:
            return False
        now = self._clock()
        if now - self._checked >= INTERVAL:
            self._checked = now
            try:
                self._low = self._free(self._path) < self._min_free
            except OSError:
                self._low = True  # cannot tell: refuse rather than fill a failing disk
        return self._low

    def check(self) -> None:
        """Raise the 507 ``insufficient_storage`` error when free space is low."""
        if self.low():
            raise ApiError(
                507,
                "insufficient_storage",
                "the server is low on disk space and takes no new data; try again later",
                headers={"Retry-After": "60"},
            )
