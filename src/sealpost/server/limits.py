"""The in-memory abuse limits beyond the plain request rates, built once from the config.

Each is keyed by a client address, an account or a device, and none is ever written to
disk or logs (addresses live only here). They answer "may this happen now", never record
what happened; so after a restart every quota starts full, which only ever forgives.

- ``auth_failures``: failed request authentications per address. A forged signature
  costs the address that sent it, never the account it names (whose own rate limit is
  charged only once a signature verified).
- ``invite_failures``: registrations with a wrong invite code per address, so that
  codes cannot be guessed (past it, 429 before the code is looked at).
- ``sealed_messages`` / ``sealed_bytes``: what one address may queue for one recipient
  account without a delivery token (a stranger to an open account), per
  ``sealed_quota_window``; ``sealed_bytes_per_address``: what it may store with sealed
  sends in all, tokens or not.
- ``bundle_targets`` / ``bundle_addresses``: one-time prekeys handed out per target device,
  and bundle fetches per address, per hour.
- ``sockets``: open ``/v1/sealed`` and ``/v1/link`` sockets per address; ``link_channels``:
  device-link channels per address (:class:`SocketCount`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sealpost.server.config import ServerConfig
from sealpost.server.ratelimit import RateLimiter

__all__ = ["Limits", "SocketCount"]

HOUR = 3600.0


class SocketCount:
    """How many of something each key holds open; refuses past ``limit`` (0 = no limit).

    >>> count = SocketCount(1)
    >>> with count.hold("a") as first, count.hold("a") as second:
    ...     first, second
    (True, False)
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[Hashable, int] = {}

    def count(self, key: Hashable) -> int:
        return self._open.get(key, 0)

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[bool]:
        """``True`` (and counted until the block ends) if ``key`` may open one more."""
        held = self._open.get(key, 0)
        if self._limit and held >= self._limit:
            yield False
            return
        self._open[key] = held + 1
        try:
            yield True
        finally:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]


@dataclass(frozen=True, slots=True)
class Limits:
    auth_failures: RateLimiter
    invite_failures: RateLimiter
    sealed_messages: RateLimiter
    sealed_bytes: RateLimiter
    sealed_bytes_per_address: RateLimiter
    bundle_targets: RateLimiter
    bundle_addresses: RateLimiter
    sockets: SocketCount
    link_channels: SocketCount

    @classmethod
    def from_config(cls, config: ServerConfig, *, clock: Callable[[], float]) -> Limits:
        window = float(config.sealed_quota_window)
        return cls(
            auth_failures=RateLimiter(config.rate_auth_failures_per_address, clock=clock),
            invite_failures=RateLimiter(config.rate_invite_failures_per_address, clock=clock),
            sealed_messages=RateLimiter(config.sealed_quota_messages, clock=clock, window=window),
            sealed_bytes=RateLimiter(config.sealed_quota_bytes, clock=clock, window=window),
            sealed_bytes_per_address=RateLimiter(
                config.sealed_bytes_per_address, clock=clock, window=window
            ),
            bundle_targets=RateLimiter(config.bundles_per_target, clock=clock, window=HOUR),
            bundle_addresses=RateLimiter(config.bundles_per_address, clock=clock, window=HOUR),
            sockets=SocketCount(config.max_sockets_per_address),
            link_channels=SocketCount(config.link_channels_per_address),
        )
