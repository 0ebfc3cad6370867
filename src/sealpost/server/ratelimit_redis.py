"""Rate limits shared by every server process, in Redis (redis-py asyncio).

With several processes behind a load balancer, a client that spreads its requests over
them must meet one limit, not one per process. So with ``--redis`` each limiter's buckets
live in Redis: the same token bucket as :class:`~.ratelimit.RateLimiter` (``limit``
tokens, refilled at ``limit / window`` a second, an amount over the whole limit always
refused), kept as one number per key, the bucket's "theoretical arrival time" (GCRA: the
instant it would be full again, in microseconds of Redis's clock, so processes with
skewed clocks agree). A Lua script reads and updates it atomically; the key expires when
the bucket would be full, so idle keys cost Redis nothing.

- **No address in clear.** A key is ``sealpost:rl:NAME:`` and the first 16 bytes of
  HMAC-SHA256(secret, NAME, key) in hex, the secret derived from the server's signing key
  (:func:`limiter_secret`: every process of a deployment has it; Redis never does). Whoever
  reads Redis sees how many buckets are in use, never whose.
- **One round trip for many takes.** The takes that arrive while a script call is in flight
  wait for the next, which carries them all (one ``EVALSHA``), so Redis sees at most one
  call in flight per process and a busy process pays one round trip per batch.
- **Redis away: fail open, to local buckets.** If a call fails or takes over ``timeout``
  seconds, the limiter answers from this process's own buckets (the in-memory limiter)
  and keeps doing so for ``retry`` seconds before it tries Redis again. Each process then
  enforces every limit by itself, so a client that spreads over K processes gets at most K
  times the limit until Redis is back: still bounded, and messaging keeps working (the
  fanout also works without Redis, through its poll). Failing closed would make a Redis
  outage refuse every request, which the design (Redis holds only hints) rules out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Hashable
from typing import Final

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from sealpost.crypto.kdf import hkdf, hmac_sha256
from sealpost.crypto.sign import SigningKey
from sealpost.server.ratelimit import Limiter, RateLimiter

__all__ = ["RedisLimiters", "bucket_key", "limiter_secret"]

log = logging.getLogger("sealpost.server.ratelimit")

#: Seconds a call may take before this process answers from its own buckets.
TIMEOUT: Final = 0.5
#: Seconds between attempts to reach Redis again after a failure.
RETRY: Final = 1.0
#: Keys in one script call.
BATCH: Final = 512

# ARGV per key: op ("t" take, "b" blocked), interval (us per token), window (us), amount.
# Numbers are written back with %d: Lua's own number-to-string keeps 14 digits only.
_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 4
  local op = ARGV[a + 1]
  local interval = tonumber(ARGV[a + 2])
  local window = tonumber(ARGV[a + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0)
  if tat < now then tat = now end
  local wait
  if op == 'b' then
    wait = tat + interval - window - now
  else
    local cost = math.ceil(tonumber(ARGV[a + 4]) * interval)
    if cost > window then
      wait = window
    else
      local new = tat + cost
      wait = new - window - now
      if wait <= 0 then
        redis.call('SET', KEYS[i], string.format('%d', new),
                   'PX', math.ceil((new - now) / 1000) + 1)
      end
    end
  end
  if wait < 0 then wait = 0 end
  out[i] = math.ceil(wait)
end
return out
"""

_LEN = struct.Struct(">I")


def limiter_secret(server_key: SigningKey) -> bytes:
    """The deployment's key for bucket names: derived from the server key that every
    process of it loads, so they agree, and nothing else needs to be shared."""
    return hkdf(
        server_key.private_bytes_raw(), salt=b"", info=b"sealpost rate-limit buckets v1", length=32
    )


def _encode(key: Hashable) -> bytes:
    """An unambiguous encoding of the keys limiters are given (str, bytes, int, tuples)."""
    if isinstance(key, str):
        data = key.encode()
        return b"s" + _LEN.pack(len(data)) + data
    if isinstance(key, bytes):
        return b"b" + _LEN.pack(len(key)) + key
    if isinstance(key, int):
        return b"i" + str(key).encode() + b";"
    if isinstance(key, tuple):
        return b"t" + _LEN.pack(len(key)) + b"".join(_encode(k) for k in key)
    raise TypeError(f"a rate-limit key cannot be a {type(key).__name__}")


def bucket_key(secret: bytes, name: str, key: Hashable) -> str:
    """The Redis key of ``key``'s bucket in limiter ``name``."""
    digest = hmac_sha256(secret, name.encode() + b"\0" + _encode(key))
    return f"sealpost:rl:{name}:{digest[:16].hex()}"


_Ask = tuple[str, str, str, str, str, "asyncio.Future[float | None]"]


class RedisLimiters:
    """The limiters of one process, sharing one Redis connection and its batches."""

    def __init__(
        self,
        url: str,
        *,
        secret: bytes,
        clock: Callable[[], float],
        timeout: float = TIMEOUT,
        retry: float = RETRY,
    ) -> None:
        self._url = url
        self._secret = secret
        self._clock = clock
        self._timeout = timeout
        self._retry = retry
        self._redis: aioredis.Redis | None = None
        self._script: AsyncScript | None = None
        self._pending: list[_Ask] = []
        self._flusher: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self.shared = True  # whether the last answer came from Redis (tests, a metric)

    def limiter(self, name: str, limit: int, *, window: float = 60.0) -> Limiter:
        return _RedisLimiter(self, name, limit, window)

    async def open(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self._url, socket_connect_timeout=self._timeout, socket_timeout=1
        )
        self._script = self._redis.register_script(_SCRIPT)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._answer_locally(self._pending)
        self._pending = []
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
            self._redis = None

    def available(self) -> bool:
        return self._redis is not None and self._clock() >= self._down_until

    async def query(
        self, op: str, name: str, key: Hashable, interval: float, window: int, amount: float
    ) -> float | None:
        """Redis's answer in seconds, or ``None`` when it did not give one (answer
        locally)."""
        future: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        self._pending.append(
            (
                bucket_key(self._secret, name, key),
                op,
                repr(interval),
                str(window),
                repr(float(amount)),
                future,
            )
        )
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                try:
                    waits = await self._call(batch)
                except asyncio.CancelledError:  # closing: the callers answer locally
                    self._answer_locally(batch)
                    raise
                except Exception as exc:  # Redis away, or a reply not ours: answer locally
                    self._failed(exc)
                    self._answer_locally(batch + self._pending)
                    self._pending = []
                    return
                if not self.shared:
                    log.warning("redis answers again: rate limits are shared again")
                    self.shared = True
                for ask, wait in zip(batch, waits, strict=True):
                    if not ask[5].done():
                        ask[5].set_result(wait / 1e6)
        finally:
            self._flusher = None

    async def _call(self, batch: list[_Ask]) -> list[int]:
        script = self._script
        assert script is not None
        args: list[str] = []
        for _, op, interval, window, amount, _future in batch:
            args += (op, interval, window, amount)
        async with asyncio.timeout(self._timeout):
            result = await script(keys=[ask[0] for ask in batch], args=args)
        if not isinstance(result, list) or len(result) != len(batch):
            raise RedisError("unexpected reply to the rate-limit script")
        return [int(wait) for wait in result]

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self._retry
        if self.shared:
            log.warning(
                "redis unreachable (%s): each process limits alone until it is back",
                type(exc).__name__,
            )
        self.shared = False

    @staticmethod
    def _answer_locally(asks: list[_Ask]) -> None:
        for ask in asks:
            if not ask[5].done():
                ask[5].set_result(None)


class _RedisLimiter:
    """One named limiter: its buckets in Redis, this process's own while Redis is away."""

    __slots__ = ("_interval", "_limit", "_local", "_name", "_shared", "_window")

    def __init__(self, shared: RedisLimiters, name: str, limit: int, window: float) -> None:
        self._shared = shared
        self._name = name
        self._limit = limit
        self._window = round(window * 1_000_000)
        self._interval = self._window / limit if limit > 0 else 0.0
        self._local = RateLimiter(limit, clock=shared._clock, window=window)

    async def take(self, key: Hashable, amount: float = 1.0) -> float:
        if self._limit <= 0:
            return 0.0
        if self._shared.available():
            wait = await self._shared.query(
                "t", self._name, key, self._interval, self._window, amount
            )
            if wait is not None:
                return wait
        return self._local.take(key, amount)

    async def blocked(self, key: Hashable) -> float:
        if self._limit <= 0:
            return 0.0
        if self._shared.available():
            wait = await self._shared.query("b", self._name, key, self._interval, self._window, 1)
            if wait is not None:
                return wait
        return self._local.blocked(key)
