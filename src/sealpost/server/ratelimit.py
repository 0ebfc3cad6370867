"""Token-bucket rate limits, in memory.

One bucket per key (an account id, or a client address) refilled at ``per_minute / 60``
tokens a second up to ``per_minute``. Buckets live only in this process's memory: client
addresses are never written to disk or logs. The table is bounded (least recently used
buckets are dropped, which only ever forgives), so a flood of addresses cannot exhaust
memory. ``per_minute = 0`` disables the limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(
        self, per_minute: int, *, clock: Callable[[], float], max_keys: int = 100_000
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(per_minute)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable) -> float:
        """Spend one token for ``key``: 0.0 if allowed, else seconds until one is free."""
        if self._burst <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait
