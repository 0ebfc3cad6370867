"""The server's Ed25519 keys: ``DATA/server_key`` signs sender certificates,
``DATA/log_key`` the key-transparency log's tree heads.

Each is 32 raw bytes, mode 0600, generated on first start. Clients pin the public half
(``GET /v1/certificate/server``, ``GET /v1/log/key``). Losing a file only means clients must
re-pin (a key-transparency alarm for the log key); leaking the server key lets the holder
forge sender certificates, which recipients still cross-check against the sender's
AIK-signed device certificate (see :mod:`sealpost.protocol.sealed`).

Several processes may start at once on one fresh (shared) data directory, so a key file
appears whole or not at all: the key is written to a temporary file of its own in the same
directory, flushed to disk, then hard-linked to its name (:func:`os.link` fails if the
name exists). The process whose link succeeds has created the key; every other one reads
the winner's file, which is complete before it has a name. A file created in place
(``O_EXCL``, then written) could be read by a second process while still empty.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from sealpost._files import fsync_dir
from sealpost.crypto.sign import ED25519_LEN, SigningKey
from sealpost.entropy import Rng

__all__ = ["ServerKeyError", "load_or_create_server_key"]


class ServerKeyError(Exception):
    """A key file is not usable (the message names it and says what to do)."""


def load_or_create_server_key(path: Path, rng: Rng) -> SigningKey:
    """The key in ``path``, created there first (from ``rng``) if there is none."""
    if not path.exists():
        _create(path, rng(ED25519_LEN))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerKeyError(f"{path} is readable by others; chmod 600 it")
    data = path.read_bytes()
    if len(data) != ED25519_LEN:
        raise ServerKeyError(f"{path} is not a sealpost server key ({len(data)} bytes)")
    return SigningKey.from_private_bytes(data)


def _create(path: Path, key: bytes) -> None:
    """Give ``path`` the content ``key`` unless another process gave it one first (then
    leave that one: it is the key)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp: mode 0600, a name no one else has
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process's key won
            os.link(temporary, path)
            fsync_dir(path.parent)  # the new name survives a crash
    finally:
        os.unlink(temporary)
