"""The server's Ed25519 key, which signs sender certificates.

Generated on first start into ``DATA/server_key`` (32 raw bytes, mode 0600, created with
``O_EXCL`` so two starting processes cannot both write one). Clients pin the public half
(``GET /v1/certificate/server``). Losing the file only means clients must re-pin; leaking it
lets the holder forge sender certificates, which recipients still cross-check against the
sender's AIK-signed device certificate (see :mod:`sealpost.protocol.sealed`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sealpost.crypto.sign import ED25519_LEN, SigningKey
from sealpost.entropy import Rng

__all__ = ["ServerKeyError", "load_or_create_server_key"]


class ServerKeyError(Exception):
    pass


def load_or_create_server_key(path: Path, rng: Rng) -> SigningKey:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(rng(ED25519_LEN))
            fh.flush()
            os.fsync(fh.fileno())
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ServerKeyError(f"{path} is readable by others; chmod 600 it")
    data = path.read_bytes()
    if len(data) != ED25519_LEN:
        raise ServerKeyError(f"{path} is not a sealpost server key ({len(data)} bytes)")
    return SigningKey.from_private_bytes(data)
