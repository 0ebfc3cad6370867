"""Rate limits shared by every server process, in Redis (redis-py asyncio).

With several processes behind a load balancer, a client that spreads its requests over
them must meet one limit, not one per process. So with ``--redis`` each limiter's buckets
live in Redis: the same token bucket as :class:`~.ratelimit.RateLimiter` (``limit``
tokens, refilled at ``limit / window`` a second, an amount over the whole limit always
refused), kept as one number per key, the bucket's "theoretical arrival time" (GCRA: the
instant it would be full again, in microseconds of Redis's clock, so processes with
skewed clocks agree). A Lua script reads and updates it atomically; the key expires when
the bucket would be full, so idle keys cost Redis nothing.

- **Leases: no round trip per request.** A process does not ask Redis for each request:
  it takes a slice of a key's budget ahead of use, ``L`` = 1/:data:`LEASE_SHARE` of the
  limit (none for a limit under :data:`LEASE_SHARE`, which is then asked each time, and
  exact), and answers from it in memory, without suspending, until it runs out; once less
  than half of it is left, the next slice is asked for in the background, so a steady
  client rarely waits for Redis at all (a take from a lease costs about what one from the
  in-memory bucket does). A request its lease cannot cover asks Redis for what is missing
  and for a new slice in the same call (the slice only as far as the bucket holds it);
  refused, it spends nothing, of the bucket or of the lease. A process holds at most ``L``
  of a key's tokens, and a leased token is spent once; but it left the bucket before it
  was spent, and the bucket refilled meanwhile. So **across K processes an address gets
  at most K x L more than one bucket would allow** (K = 1 included), and it may be
  refused up to K x L early while other processes hold its slices. A lease lasts a
  ``window`` from its last refill at most (unused tokens then lapse), and the table of
  leases is bounded as the local buckets are. With the defaults, 1/64 of a limit a
  process: 37 requests of ``rate_per_address``'s 2,400 a minute, 8 MiB of
  ``sealed_bytes_per_address``'s 512 MiB an hour; the failure limits (60 and 10 a minute)
  and ``bundles_per_target`` (30) lease nothing.
- **No address in clear.** A key is ``sealpost:rl:NAME:`` and the first 16 bytes of
  HMAC-SHA256(secret, NAME, key) in hex, the secret derived from the server's signing key
  (:func:`limiter_secret`: every process of a deployment has it; Redis never does). Whoever
  reads Redis sees how many buckets are in use, never whose.
- **One round trip for many asks.** The asks that arrive while a script call is in flight
  wait for the next, which carries them all (one ``EVALSHA``), so Redis sees at most one
  call in flight per process and a busy process pays one round trip per batch.
- **Redis away: fail open, to local buckets.** If a call fails or takes over ``timeout``
  seconds, the limiter answers from this process's own buckets (the in-memory limiter)
  and keeps doing so for ``retry`` seconds before it tries Redis again. Each process then
  enforces every limit by itself, so a client that spreads over K processes gets at most K
  times the limit until Redis is back: still bounded, and messaging keeps working (the
  fanout also works without Redis, through its poll). Failing closed would make a Redis
  outage refuse every request, which the design (Redis holds only hints) rules out. A
  request its lease covers is answered while a call to a frozen Redis times out; one that
  needs Redis waits for the timeout at most.

    >>> lease_size(2400), lease_size(512 * 2**20), lease_size(60)
    (37, 8388608, 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Final

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from sealpost.crypto.kdf import hkdf, hmac_sha256
from sealpost.crypto.sign import SigningKey
from sealpost.server.ratelimit import Limiter, RateLimiter

__all__ = ["LEASE_SHARE", "RedisLimiters", "bucket_key", "lease_size", "limiter_secret"]

log = logging.getLogger("sealpost.server.ratelimit")

#: Seconds a call may take before this process answers from its own buckets.
TIMEOUT: Final = 0.5
#: Seconds between attempts to reach Redis again after a failure.
RETRY: Final = 1.0
#: Keys in one script call.
BATCH: Final = 512
#: A process leases 1/LEASE_SHARE of a limit at a time: K processes let an address past
#: one bucket by K/64 of it at most (3 processes: under 5%), and a steady client asks
#: Redis once per 1/128 of its limit spent. Limits under it are asked each time (exact).
LEASE_SHARE: Final = 64
#: Leases (keys) one limiter keeps, least recently used dropped first (which only loses
#: their tokens: stricter, never looser).
MAX_LEASES: Final = 100_000

# ARGV per key: op ("l" lease, "b" blocked), interval (us per token), window (us), need,
# want (tokens). "l" takes ``want`` tokens, or as many of them as the bucket holds if that
# is at least ``need``; else it takes nothing and says how long ``need`` is away. Answers
# per key: the wait (us) and what was taken (us of tokens). Numbers are written back with
# %d: Lua's own number-to-string keeps 14 digits only.
_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 5
  local op = ARGV[a + 1]
  local interval = tonumber(ARGV[a + 2])
  local window = tonumber(ARGV[a + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0)
  if tat < now then tat = now end
  local room = now + window - tat
  local wait, taken = 0, 0
  if op == 'b' then
    wait = interval - room
  else
    local need = math.ceil(tonumber(ARGV[a + 4]) * interval)
    if need > window then
      wait = window
    elseif need > room then
      wait = need - room
    else
      taken = math.min(math.max(math.ceil(tonumber(ARGV[a + 5]) * interval), need), room)
      if taken > 0 then
        local new = tat + taken
        redis.call('SET', KEYS[i], string.format('%d', new),
                   'PX', math.ceil((new - now) / 1000) + 1)
      end
    end
  end
  if wait < 0 then wait = 0 end
  out[2 * i - 1] = math.ceil(wait)
  out[2 * i] = taken
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


def lease_size(limit: int) -> int:
    """Tokens a process leases at a time for a limit of ``limit`` (0: none, ask each time)."""
    return max(limit, 0) // LEASE_SHARE


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


#: Redis's answer to one ask: seconds to wait (0.0: allowed) and microseconds of tokens
#: taken; ``None`` when it gave none (answer locally).
_Answer = tuple[float, int] | None


class _Ask:
    __slots__ = ("args", "future", "key")

    def __init__(self, key: str, args: tuple[str, ...], future: asyncio.Future[_Answer]) -> None:
        self.key = key
        self.args = args
        self.future = future


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

    def ask(
        self,
        op: str,
        name: str,
        key: Hashable,
        interval: float,
        window: int,
        need: float,
        want: float,
    ) -> asyncio.Future[_Answer]:
        """Queue one ask for the next script call; its future gets Redis's answer."""
        future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        args = (op, repr(interval), str(window), repr(float(need)), repr(float(want)))
        self._pending.append(_Ask(bucket_key(self._secret, name, key), args, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                try:
                    answers = await self._call(batch)
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
                for i, ask in enumerate(batch):
                    if not ask.future.done():
                        ask.future.set_result((answers[2 * i] / 1e6, answers[2 * i + 1]))
        finally:
            self._flusher = None

    async def _call(self, batch: list[_Ask]) -> list[int]:
        script = self._script
        assert script is not None
        args: list[str] = []
        for ask in batch:
            args += ask.args
        async with asyncio.timeout(self._timeout):
            result = await script(keys=[ask.key for ask in batch], args=args)
        if not isinstance(result, list) or len(result) != 2 * len(batch):
            raise RedisError("unexpected reply to the rate-limit script")
        return [int(n) for n in result]

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
            if not ask.future.done():
                ask.future.set_result(None)


class _Lease:
    """Tokens of one key taken from its shared bucket ahead of use: ``tokens`` free,
    ``reserved`` set aside by requests waiting for Redis for the rest of their amount
    (given back if refused), valid until ``expires``; ``refilling`` while an ask that
    carries a new slice is in flight (one at a time)."""

    __slots__ = ("expires", "refilling", "reserved", "tokens")

    def __init__(self) -> None:
        self.tokens = 0.0
        self.reserved = 0.0
        self.expires = 0.0
        self.refilling = False


class _RedisLimiter:
    """One named limiter: its buckets in Redis, leased a slice at a time; this process's
    own buckets while Redis is away."""

    __slots__ = (
        "_interval",
        "_lease",
        "_leases",
        "_limit",
        "_local",
        "_name",
        "_shared",
        "_ttl",
        "_window",
    )

    def __init__(self, shared: RedisLimiters, name: str, limit: int, window: float) -> None:
        self._shared = shared
        self._name = name
        self._limit = limit
        self._window = round(window * 1_000_000)
        self._interval = self._window / limit if limit > 0 else 0.0
        self._lease = float(lease_size(limit))
        self._ttl = window
        self._leases: OrderedDict[Hashable, _Lease] = OrderedDict()
        self._local = RateLimiter(limit, clock=shared._clock, window=window)

    def _ask(self, op: str, key: Hashable, need: float, want: float) -> asyncio.Future[_Answer]:
        return self._shared.ask(op, self._name, key, self._interval, self._window, need, want)

    def _leased(self, key: Hashable) -> _Lease:
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease()
            if len(self._leases) > MAX_LEASES:
                self._leases.popitem(last=False)
        else:
            self._leases.move_to_end(key)
            if lease.expires <= self._shared._clock():
                lease.tokens = 0.0  # lapsed: the bucket refilled them long ago
        return lease

    def take_now(self, key: Hashable, amount: float = 1.0) -> float | None:
        if self._limit <= 0:
            return 0.0
        if not self._shared.available():
            return self._local.take(key, amount)
        if not self._lease:
            return None
        lease = self._leased(key)
        if lease.tokens >= amount:  # the common case: no Redis, no suspension
            lease.tokens -= amount
            if lease.tokens < self._lease / 2 and not lease.refilling:
                self._prefetch(key, lease)
            return 0.0
        return None

    async def take(self, key: Hashable, amount: float = 1.0) -> float:
        now = self.take_now(key, amount)
        if now is not None:
            return now
        if not self._lease:
            exact = await self._ask("l", key, amount, amount)
            return self._local.take(key, amount) if exact is None else exact[0]
        lease = self._leased(key)
        have, lease.tokens = lease.tokens, 0.0
        lease.reserved += have
        need = amount - have
        carries = not lease.refilling  # this ask brings the next slice too
        want = need + max(0.0, self._lease - lease.reserved + have) if carries else need
        lease.refilling |= carries
        answer: _Answer = None
        try:
            answer = await self._ask("l", key, need, want)
        finally:
            lease.reserved -= have
            if carries:
                lease.refilling = False
            if answer is None or answer[0]:  # refused, or no answer: nothing spent
                lease.tokens += have
        if answer is None:
            return self._local.take(key, amount)
        wait, taken = answer
        if not wait:
            lease.tokens += max(0.0, taken / self._interval - need)
            lease.expires = self._shared._clock() + self._ttl
        elif lease.tokens >= amount:  # a slice came meanwhile (a prefetch) and covers it
            lease.tokens -= amount
            return 0.0
        return wait

    def _prefetch(self, key: Hashable, lease: _Lease) -> None:
        want = self._lease - lease.tokens - lease.reserved
        if want <= 0:
            return
        lease.refilling = True

        def refilled(future: asyncio.Future[_Answer]) -> None:
            lease.refilling = False
            answer = None if future.cancelled() else future.result()
            if answer is not None and answer[1]:
                lease.tokens += answer[1] / self._interval
                lease.expires = self._shared._clock() + self._ttl

        self._ask("l", key, 0.0, want).add_done_callback(refilled)

    async def blocked(self, key: Hashable) -> float:
        if self._limit <= 0:
            return 0.0
        if not self._shared.available():
            return self._local.blocked(key)
        lease = self._leases.get(key) if self._lease else None
        if lease is not None and lease.tokens >= 1 and lease.expires > self._shared._clock():
            return 0.0
        answer = await self._ask("b", key, 1, 1)
        return self._local.blocked(key) if answer is None else answer[0]
