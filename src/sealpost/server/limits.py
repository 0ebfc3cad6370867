"""The abuse limits beyond the plain request rates, built once from the config.

Each is keyed by a client address, an account or a device, and none is ever written to
disk or logs. They answer "may this happen now", never record what happened; so after a
restart every quota starts full, which only ever forgives. The rate limits are made by the
server's :class:`~.ratelimit.Limiters`: in this process's memory, or with Redis shared by
every process (keyed by an HMAC of the address, never the address:
:mod:`.ratelimit_redis`). The socket counts stay per process (a socket is held by one).

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

from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sealpost.server.config import ServerConfig
from sealpost.server.ratelimit import Limiter, Limiters

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
    auth_failures: Limiter
    invite_failures: Limiter
    sealed_messages: Limiter
    sealed_bytes: Limiter
    sealed_bytes_per_address: Limiter
    bundle_targets: Limiter
    bundle_addresses: Limiter
    sockets: SocketCount
    link_channels: SocketCount

    @classmethod
    def from_config(cls, config: ServerConfig, limiters: Limiters) -> Limits:
        window = float(config.sealed_quota_window)
        make = limiters.limiter
        return cls(
            auth_failures=make("auth_failures", config.rate_auth_failures_per_address),
            invite_failures=make("invite_failures", config.rate_invite_failures_per_address),
            sealed_messages=make("sealed_messages", config.sealed_quota_messages, window=window),
            sealed_bytes=make("sealed_bytes", config.sealed_quota_bytes, window=window),
            sealed_bytes_per_address=make(
                "sealed_bytes_per_address", config.sealed_bytes_per_address, window=window
            ),
            bundle_targets=make("bundle_targets", config.bundles_per_target, window=HOUR),
            bundle_addresses=make("bundle_addresses", config.bundles_per_address, window=HOUR),
            sockets=SocketCount(config.max_sockets_per_address),
            link_channels=SocketCount(config.link_channels_per_address),
        )
