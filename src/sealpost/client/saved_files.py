"""Files saved from received attachments: where each one is, and whether the file found
there now is still the one sealpost saved.

When a message goes (its disappearing-message timer expires, or its author deletes it
for everyone), the file saved from its attachment goes with it. The store therefore
keeps, per message, a *record* of the saved file: its absolute path (a relative path
would name another file as soon as a later command runs in another directory) and the
identity of the file sealpost wrote (device, inode, size, modification time). A file is
deleted only while it still matches that record: a file the user moved, edited or put in
its place stays, and so does a symlink. A record written by an older sealpost (a bare
path, perhaps relative) names no identity and is never acted on.

Example::

    text = record(Path("/home/me/in/photo.jpg"))
    assert saved_path(text) == "/home/me/in/photo.jpg"
    remove(text)  # True: it was the saved file, and it is gone
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

__all__ = ["is_saved", "record", "remove", "saved_path"]

log = logging.getLogger(__name__)

_FIELDS = ("dev", "ino", "size", "mtime_ns")


def _identity(st: os.stat_result) -> dict[str, int]:
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def record(path: Path) -> str:
    """The record of the file just saved at ``path`` (made absolute)."""
    path = Path(os.path.abspath(path))
    return json.dumps({"path": str(path)} | _identity(os.lstat(path)), sort_keys=True)


def _parse(text: str | None) -> dict[str, object] | None:
    if not text or not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("path"), str):
        return None
    if not all(isinstance(doc.get(k), int) for k in _FIELDS):
        return None
    return doc


def saved_path(text: str | None) -> str | None:
    """Where the file was saved, for display (a legacy record's bare path as it is)."""
    doc = _parse(text)
    if doc is not None:
        return str(doc["path"])
    return text or None


def _matching(text: str | None) -> Path | None:
    doc = _parse(text)
    if doc is None:
        return None
    path = Path(str(doc["path"]))
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or _identity(st) != {k: doc[k] for k in _FIELDS}:
        return None
    return path


def is_saved(text: str | None) -> bool:
    """Whether the file the record names is there and still the one sealpost saved."""
    return _matching(text) is not None


def remove(text: str | None) -> bool:
    """Delete the saved file if it is still the one sealpost saved; True if it went."""
    path = _matching(text)
    if path is None:
        if text:
            log.info("left a saved attachment in place: it is not the file sealpost saved")
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("could not delete a saved attachment")
        return False
    return True
