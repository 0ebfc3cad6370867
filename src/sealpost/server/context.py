"""Everything a handler needs, built once by :func:`sealpost.server.app.create_app` and
passed to each handler's constructor (no global state, no service locator)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sealpost.crypto.sign import SigningKey
from sealpost.entropy import Rng
from sealpost.server.blobs import BlobStore
from sealpost.server.config import ServerConfig
from sealpost.server.diskspace import DiskSpace
from sealpost.server.fanout.base import Fanout
from sealpost.server.limits import Limits
from sealpost.server.metrics import Metrics
from sealpost.server.ratelimit import Limiter
from sealpost.server.storage.base import Storage

__all__ = ["Context"]


@dataclass(frozen=True, slots=True)
class Context:
    config: ServerConfig
    storage: Storage
    fanout: Fanout
    blobs: BlobStore
    server_key: SigningKey
    metrics: Metrics
    clock: Callable[[], int]
    rng: Rng
    per_account: Limiter
    per_address: Limiter
    sealed_per_address: Limiter
    limits: Limits
    disk: DiskSpace
