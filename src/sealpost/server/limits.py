"""The in-memory abuse limits beyond the plain request rates, built once from the config.

Each is keyed by a client address, an account or a device, and none is ever written to
disk or logs (addresses live only here). They answer "may this happen now", never record
what happened; so after a restart every quota starts full, which only ever forgives.

- ``auth_failures``: failed request authentications per address. A forged signature
  costs the address that sent it, never the account it names (whose own rate limit is
  charged only once a signature verified).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sealpost.server.config import ServerConfig
from sealpost.server.ratelimit import RateLimiter

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    auth_failures: RateLimiter

    @classmethod
    def from_config(cls, config: ServerConfig, *, clock: Callable[[], float]) -> Limits:
        return cls(
            auth_failures=RateLimiter(config.rate_auth_failures_per_address, clock=clock),
        )
