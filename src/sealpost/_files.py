"""File-system steps that the client's store and the server's key files both take."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """Flush ``directory`` itself, so that a name just created or renamed in it survives
    a crash as the file's content does."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
