"""The Redis-backed rate limiter (:mod:`sealpost.server.ratelimit_redis`) against a real
Redis: two limiters on one Redis (two processes) share one bucket that answers as the
in-memory one does, concurrent takes never overspend, Redis holds no client address, and
a Redis that dies is replaced by this process's own buckets until it is back. With
leases (limits of 64 and more): two processes together stay within the limit and their
two leases, a take its lease covers neither suspends nor calls Redis, a refused take
spends nothing, a lease lapses after its window, and a frozen Redis costs a take no more
than the timeout."""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sealpost.crypto.sign import SigningKey
from sealpost.server.ratelimit import Limiter, RateLimiter
from sealpost.server.ratelimit_redis import TIMEOUT, RedisLimiters, lease_size, limiter_secret
from services import REDIS, OwnRedis, require_redis

ADDRESS = "203.0.113.77"


@pytest.fixture
def url() -> str:
    require_redis()
    return REDIS


@pytest.fixture
def name() -> Iterator[str]:
    """A limiter name of the test's own (its keys are removed afterwards)."""
    name = "test_" + secrets.token_hex(4)
    yield name

    async def clean() -> None:
        r = aioredis.Redis.from_url(REDIS)
        try:
            keys = [k async for k in r.scan_iter(f"sealpost:rl:{name}:*")]
            if keys:
                await r.delete(*keys)
        finally:
            await r.aclose()

    asyncio.run(clean())


def _limiters(url: str, secret: bytes = b"k" * 32) -> RedisLimiters:
    return RedisLimiters(url, secret=secret, clock=time.monotonic, retry=0.2)


def test_two_processes_share_one_bucket_that_answers_as_the_in_memory_one(
    url: str, name: str
) -> None:
    amounts = [1, 3, 1, 2, 5, 1, 1, 4, 1]  # 19 asked of a limit of 10

    async def run() -> list[bool]:
        a, b = _limiters(url), _limiters(url)
        await a.open()
        await b.open()
        try:
            on_a, on_b = a.limiter(name, 10), b.limiter(name, 10)
            allowed = []
            for i, amount in enumerate(amounts):
                limiter = on_a if i % 2 else on_b
                allowed.append(await limiter.take(ADDRESS, amount) == 0.0)
            wait = await on_a.blocked(ADDRESS)
            assert 0 < wait <= 60 / 10 + 0.5  # less than one token left
            return allowed
        finally:
            await a.close()
            await b.close()

    shared = asyncio.run(run())
    local = RateLimiter(10, clock=lambda: 0.0)
    assert shared == [local.take(ADDRESS, amount) == 0.0 for amount in amounts]
    assert shared.count(True) == 7  # 1+3+1+2 = 7, 5 refused, 1+1 = 9, 4 refused, 1 = 10


def test_concurrent_takes_never_overspend(url: str, name: str) -> None:
    async def run() -> list[float]:
        a, b = _limiters(url), _limiters(url)
        await a.open()
        await b.open()
        try:
            la, lb = a.limiter(name, 50), b.limiter(name, 50)
            return await asyncio.gather(
                *(la.take(ADDRESS) for _ in range(60)), *(lb.take(ADDRESS) for _ in range(60))
            )
        finally:
            await a.close()
            await b.close()

    waits = asyncio.run(run())
    assert sum(1 for w in waits if w == 0.0) == 50
    assert all(0 < w <= 60 / 50 * 71 for w in waits if w)  # refused: told how long to wait


def test_an_amount_over_the_whole_limit_is_refused_for_a_window(url: str, name: str) -> None:
    async def run() -> tuple[float, float]:
        limiters = _limiters(url)
        await limiters.open()
        try:
            limiter = limiters.limiter(name, 100, window=30)
            return await limiter.take(ADDRESS, 101), await limiter.take(ADDRESS, 100)
        finally:
            await limiters.close()

    over, whole = asyncio.run(run())
    assert over == pytest.approx(30.0)
    assert whole == 0.0  # the refused take spent nothing


def test_redis_holds_no_client_address_only_an_hmac_under_the_deployment_secret(
    url: str, name: str
) -> None:
    secret = limiter_secret(SigningKey.from_private_bytes(b"\x01" * 32))

    async def run() -> dict[bytes, bytes]:
        limiters = _limiters(url, secret)
        await limiters.open()
        try:
            await limiters.limiter(name, 10).take(ADDRESS)
            await limiters.limiter(name + "_pair", 10).take((ADDRESS, b"\xaa" * 16))
        finally:
            await limiters.close()
        r = aioredis.Redis.from_url(url)
        try:
            keys = [k async for k in r.scan_iter(f"sealpost:rl:{name}*")]
            values = await r.mget(keys)
            await r.delete(*keys)
            return dict(zip(keys, values, strict=True))
        finally:
            await r.aclose()

    stored = asyncio.run(run())
    assert len(stored) == 2
    for key, value in stored.items():
        assert re.fullmatch(rb"sealpost:rl:test_[0-9a-f]{8}(_pair)?:[0-9a-f]{32}", key), key
        assert value is not None and value.isdigit()  # an instant, nothing else
        assert ADDRESS.encode() not in key + value
    other = limiter_secret(SigningKey.from_private_bytes(b"\x02" * 32))
    assert other != secret and len(secret) == 32


def test_a_dead_redis_leaves_each_process_to_its_own_buckets_until_it_is_back(
    tmp_path: Path, name: str
) -> None:
    redis = OwnRedis(tmp_path)
    redis.start()

    async def count(limiter: object) -> int:
        allowed = 0
        for _ in range(8):
            allowed += await limiter.take(ADDRESS) == 0.0  # type: ignore[attr-defined]
        return allowed

    async def run() -> None:
        a, b = _limiters(redis.url), _limiters(redis.url)
        await a.open()
        await b.open()
        try:
            la, lb = a.limiter(name, 5), b.limiter(name, 5)
            assert await count(la) + await count(lb) == 5  # one limit for both
            redis.kill()
            started = time.monotonic()
            assert await count(la) == 5 and await count(lb) == 5  # each its own, still bounded
            assert time.monotonic() - started < 2  # no request waits on the dead Redis
            assert not a.shared and not b.shared
            redis.start()  # empty: a fresh shared bucket
            await asyncio.sleep(0.3)  # past the retry interval
            assert await count(la) + await count(lb) == 5
            assert a.shared and b.shared
        finally:
            await a.close()
            await b.close()

    try:
        asyncio.run(run())
    finally:
        redis.kill()


def test_a_redis_that_stops_answering_costs_a_request_at_most_the_timeout(
    tmp_path: Path, name: str
) -> None:
    """Redis frozen (SIGSTOP: connected, silent): the first check waits out the timeout
    and is answered locally; the next ones do not wait at all until the retry; closing
    the limiters with a check in flight answers it too."""
    redis = OwnRedis(tmp_path)
    redis.start()

    async def run() -> None:
        limiters = RedisLimiters(redis.url, secret=b"k" * 32, clock=time.monotonic, retry=30)
        await limiters.open()
        try:
            limiter = limiters.limiter(name, 3)
            assert await limiter.take(ADDRESS) == 0.0 and limiters.shared
            assert redis.proc is not None
            redis.proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            assert await limiter.take(ADDRESS) == 0.0  # local bucket: full
            assert 0.4 <= time.monotonic() - started < 2.5  # the 0.5 s timeout, no more
            assert not limiters.shared
            started = time.monotonic()
            waits = [await limiter.take(ADDRESS) for _ in range(3)]
            assert time.monotonic() - started < 0.2  # no call to Redis meanwhile
            assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # still limited, alone
        finally:
            redis.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            await limiters.close()

        closing = RedisLimiters(redis.url, secret=b"k" * 32, clock=time.monotonic)
        await closing.open()
        limiter = closing.limiter(name + "_c", 3)
        redis.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            pending = asyncio.create_task(limiter.take(ADDRESS))
            await asyncio.sleep(0.05)
            await closing.close()
            assert await asyncio.wait_for(pending, 1) == 0.0
        finally:
            redis.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    try:
        asyncio.run(run())
    finally:
        redis.kill()


def _at_once(limiter: Limiter, key: str, amount: float = 1.0) -> float:
    """The take's answer, which must come without suspending (from the lease)."""
    coro = limiter.take(key, amount)
    try:
        coro.send(None)
    except StopIteration as done:
        return float(done.value)
    coro.close()
    raise AssertionError("the take suspended: it waited for Redis")


def _evalsha_calls(url: str) -> int:
    async def run() -> int:
        r = aioredis.Redis.from_url(url)
        try:
            stats = await r.info("commandstats")
        finally:
            await r.aclose()
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    return asyncio.run(run())


def test_a_limit_is_still_enforced_across_two_processes_within_two_leases(
    url: str, name: str
) -> None:
    """Takes spread over two processes, one after another and all at once: together they
    get the limit, give or take the two leases (K x L), never more."""
    limit, lease = 640, lease_size(640)
    assert lease == 10

    async def run() -> tuple[list[int], float, list[float]]:
        a, b = _limiters(url), _limiters(url)
        await a.open()
        await b.open()
        try:
            started = time.monotonic()
            on = [a.limiter(name, limit), b.limiter(name, limit)]
            allowed, refused = [0, 0], set()
            for n in range(4 * limit):
                if len(refused) == 2:
                    break
                if n % 2 in refused:
                    continue
                if await on[n % 2].take(ADDRESS):
                    refused.add(n % 2)
                else:
                    allowed[n % 2] += 1
            elapsed = time.monotonic() - started
            burst = await asyncio.gather(
                *(on[0].take("198.51.100.1") for _ in range(500)),
                *(on[1].take("198.51.100.1") for _ in range(500)),
            )
            return allowed, elapsed, burst
        finally:
            await a.close()
            await b.close()

    allowed, elapsed, burst = asyncio.run(run())
    refill = limit / 60 * elapsed
    assert limit - 2 <= sum(allowed) <= limit + refill + 2 * lease, allowed  # -2: fractions
    assert min(allowed) >= 100  # each process spent from the one bucket
    got = sum(1 for w in burst if w == 0.0)
    assert limit - 1 - 2 * lease <= got <= limit + 2 * lease + 2, got
    assert all(0 < w <= 60 for w in burst if w)  # refused: told how long to wait


def test_a_take_its_lease_covers_neither_suspends_nor_calls_redis(tmp_path: Path) -> None:
    redis = OwnRedis(tmp_path)
    redis.start()
    limit = 64_000  # a lease of 1,000

    async def run() -> list[float]:
        limiters = _limiters(redis.url)
        await limiters.open()
        try:
            limiter = limiters.limiter("test_quiet", limit)
            assert await limiter.take(ADDRESS) == 0.0  # the first one asks, for a lease too
            waits = [_at_once(limiter, ADDRESS) for _ in range(998)]
            await asyncio.sleep(0.05)  # room for a prefetch, were one asked
            return waits
        finally:
            await limiters.close()

    try:
        waits = asyncio.run(run())
        assert waits == [0.0] * 998
        assert _evalsha_calls(redis.url) <= 3  # the first take and a prefetch or two
    finally:
        redis.kill()


def test_a_refused_take_spends_nothing_of_the_bucket_or_the_lease(url: str, name: str) -> None:
    async def run() -> None:
        a, b = _limiters(url), _limiters(url)
        await a.open()
        await b.open()
        try:
            limiter = a.limiter(name, 640)  # 0.09375 s a token, a lease of 10
            assert await limiter.take(ADDRESS, 630) == 0.0  # and the last 10 leased
            wait = await limiter.take(ADDRESS, 20)  # 10 leased, 10 more the bucket lacks
            assert 0.8 < wait <= 10 * 0.09375
            assert _at_once(limiter, ADDRESS, 10) == 0.0  # the lease was left whole
            assert await limiter.take(ADDRESS) > 0
            assert await b.limiter(name, 640).take(ADDRESS) > 0  # and the bucket is empty
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_a_lease_is_not_kept_past_its_window(url: str, name: str) -> None:
    """A lease's tokens lapse a window after it was taken (this process's clock is made to
    jump; Redis's bucket, on its own clock, has not refilled)."""
    now = [1000.0]

    async def run() -> None:
        a = RedisLimiters(url, secret=b"k" * 32, clock=lambda: now[0])
        b = _limiters(url)
        await a.open()
        await b.open()
        try:
            on_a, on_b = a.limiter(name, 640), b.limiter(name, 640)
            assert await on_a.take(ADDRESS) == 0.0  # and 10 leased
            assert await on_b.take(ADDRESS, 629) == 0.0  # the bucket's rest
            now[0] += 59
            assert _at_once(on_a, ADDRESS) == 0.0  # within the window: from the lease
            now[0] += 2
            assert await on_a.take(ADDRESS) > 0  # past it: lapsed, and the bucket is empty
            assert await on_a.blocked(ADDRESS) > 0
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_a_frozen_redis_still_falls_back_within_the_timeout_with_a_lease(
    tmp_path: Path,
) -> None:
    """Redis frozen while a process holds a lease: what the lease covers is answered at
    once (its prefetch hangs meanwhile); a take past it waits for the timeout at most,
    then this process limits alone, without waiting, until the retry."""
    redis = OwnRedis(tmp_path)
    redis.start()

    async def run() -> None:
        limiters = RedisLimiters(redis.url, secret=b"k" * 32, clock=time.monotonic, retry=30)
        await limiters.open()
        limiter = limiters.limiter("test_frozen", 6400)  # a lease of 100
        try:
            assert await limiter.take(ADDRESS) == 0.0  # 99 leased
            assert redis.proc is not None
            redis.proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            assert [_at_once(limiter, ADDRESS) for _ in range(99)] == [0.0] * 99  # a prefetch
            assert await limiter.take(ADDRESS, 10) == 0.0  # waits for it: local, full
            assert time.monotonic() - started < TIMEOUT + 0.5  # the timeout, no more
            assert not limiters.shared
            started = time.monotonic()
            assert await limiter.take(ADDRESS, 6390) == 0.0  # alone: the local bucket's rest
            assert await limiter.take(ADDRESS) > 0  # still limited
            assert time.monotonic() - started < 0.1  # no call to Redis meanwhile
        finally:
            redis.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            await limiters.close()

    try:
        asyncio.run(run())
    finally:
        redis.kill()


def test_take_now_answers_what_its_lease_covers_and_defers_the_rest(url: str, name: str) -> None:
    async def run() -> None:
        limiters = _limiters(url)
        await limiters.open()
        try:
            limiter = limiters.limiter(name, 640)  # a lease of 10
            assert limiter.take_now(ADDRESS) is None  # no lease yet: only Redis can say
            assert await limiter.take(ADDRESS) == 0.0  # asks, for the lease too
            assert limiter.take_now(ADDRESS, 4) == 0.0
            assert limiter.take_now(ADDRESS, 4) == 0.0
            assert limiter.take_now(ADDRESS, 5) is None  # 2 left: it spent nothing
            assert limiter.take_now(ADDRESS, 2) == 0.0
        finally:
            await limiters.close()

    asyncio.run(run())
