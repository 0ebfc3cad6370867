"""Token-bucket rate limits: the :class:`Limiter` interface, and its in-memory form.

One bucket per key (an account id, a client address, or a pair of them) holding at most
``limit`` tokens and refilled at ``limit / window`` tokens a second (``window`` is a minute
unless given). A request spends one token, a byte quota spends one per byte. Buckets live
only in this process's memory: client addresses are never written to disk or logs. The
table is bounded (least recently used buckets are dropped, which only ever forgives), so a
flood of addresses cannot exhaust memory. ``limit = 0`` disables the limit.

    >>> now = [0.0]
    >>> limiter = RateLimiter(2, clock=lambda: now[0])
    >>> limiter.take("a"), limiter.take("a"), limiter.take("a") > 0
    (0.0, 0.0, True)

Handlers see a :class:`Limiter` (awaited), made by a :class:`Limiters`: in one process,
:class:`LocalLimiters` (these buckets); with Redis, :mod:`.ratelimit_redis`, one bucket
per key shared by every process (each leasing a slice of it at a time, so that most takes
are answered in memory), which falls back to these buckets while Redis is away. A take
answered in memory does not suspend its caller, and :meth:`Limiter.take_now` gives it
without a coroutine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

__all__ = ["Limiter", "Limiters", "LocalLimiter", "LocalLimiters", "RateLimiter"]


class Limiter(Protocol):
    """A named token bucket per key, as :class:`RateLimiter` (same answers; shared by
    several processes, to within the slices they lease: :mod:`.ratelimit_redis`), awaited."""

    async def take(self, key: Hashable, amount: float = 1.0) -> float:
        """Spend ``amount`` for ``key``: 0.0 if allowed, else seconds to wait (nothing
        spent then)."""

    def take_now(self, key: Hashable, amount: float = 1.0) -> float | None:
        """:meth:`take`, if it can be answered from memory (then as it would answer, and
        spent the same); ``None`` (nothing spent) if it needs to wait for another process:
        then await :meth:`take`. Spares the hot paths a coroutine per take."""

    async def blocked(self, key: Hashable) -> float:
        """Seconds until ``key`` has a token again (0.0 if it has one); spends nothing."""


class Limiters(Protocol):
    """Makes the server's limiters (once, at start) and holds what they share."""

    def limiter(self, name: str, limit: int, *, window: float = 60.0) -> Limiter:
        """``limit`` per ``window`` seconds per key (0: no limit); ``name`` is unique."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class RateLimiter:
    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float],
        window: float = 60.0,
        max_keys: int = 100_000,
    ) -> None:
        self._rate = limit / window
        self._burst = float(limit)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, last = self._buckets.pop(key, (self._burst, now))
        return min(self._burst, tokens + (now - last) * self._rate)

    def take(self, key: Hashable, amount: float = 1.0) -> float:
        """Spend ``amount`` tokens for ``key``: 0.0 if allowed, else seconds until they
        are there (nothing is spent then). An amount over the whole limit is always refused
        (its wait is a whole window)."""
        if self._burst <= 0:
            return 0.0
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens >= amount:
            self._buckets[key] = (tokens - amount, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            missing = amount - tokens if amount <= self._burst else self._burst
            wait = max(missing, 1e-6) / self._rate
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def blocked(self, key: Hashable) -> float:
        """Seconds until ``key`` has a token again (0.0 if it has one); spends nothing."""
        if self._burst <= 0 or key not in self._buckets:
            return 0.0
        tokens, last = self._buckets[key]
        tokens = min(self._burst, tokens + (self._clock() - last) * self._rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate


class LocalLimiter:
    """A :class:`Limiter` over this process's :class:`RateLimiter`."""

    __slots__ = ("buckets",)

    def __init__(self, buckets: RateLimiter) -> None:
        self.buckets = buckets

    async def take(self, key: Hashable, amount: float = 1.0) -> float:
        return self.buckets.take(key, amount)

    def take_now(self, key: Hashable, amount: float = 1.0) -> float:
        return self.buckets.take(key, amount)

    async def blocked(self, key: Hashable) -> float:
        return self.buckets.blocked(key)


class LocalLimiters:
    """Limiters of one process: its own buckets, nothing shared."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock

    def limiter(self, name: str, limit: int, *, window: float = 60.0) -> Limiter:
        return LocalLimiter(RateLimiter(limit, clock=self._clock, window=window))

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass
