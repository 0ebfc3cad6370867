"""The Redis fanout's poll (:mod:`sealpost.server.fanout.redis`) against a real Redis:
its handlers are awaited at once when the listener has subscribed (a wake-up may have
been missed before) and then every ``poll_interval``, a failing one is logged and the poll
goes on, and with no handler every local subscription is woken instead. (What the
stream's handler reads and wakes: tests/server/test_stream_poll.py.)"""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from sealpost.server.fanout.redis import RedisFanout
from services import REDIS, require_redis

INTERVAL = 0.3


def test_the_poll_runs_once_subscribed_then_every_interval_and_survives_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_redis()

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        fanout = RedisFanout(REDIS, poll_interval=INTERVAL)
        polls: list[float] = []

        async def handler() -> None:
            polls.append(loop.time())
            if len(polls) == 2:
                raise RuntimeError("a bug in the handler")

        fanout.on_poll(handler)
        opened = loop.time()
        await fanout.open()
        try:
            while len(polls) < 4:
                await asyncio.sleep(0.02)
                assert loop.time() - opened < 10, "the poll stopped"
        finally:
            await fanout.close()
        return [t - opened for t in polls]

    with caplog.at_level(logging.ERROR, logger="sealpost.server.fanout"):
        times = asyncio.run(main())
    assert times[0] < INTERVAL  # at once once subscribed, not after the first interval
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= INTERVAL * 0.9 for gap in gaps)  # then on the timer
    assert [r.message for r in caplog.records] == ["poll failed"]


def test_with_no_poll_handler_every_subscription_is_woken_each_interval() -> None:
    require_redis()

    async def main() -> int:
        fanout = RedisFanout(REDIS, poll_interval=INTERVAL)
        woken: list[int] = []
        fanout.subscribe((b"a" * 16, 1), lambda: woken.append(1))
        fanout.subscribe((b"b" * 16, 1), lambda: woken.append(2))
        await fanout.open()
        try:
            await asyncio.sleep(INTERVAL * 2.5)
        finally:
            await fanout.close()
        return len(woken)

    assert asyncio.run(main()) >= 4  # both, at subscribing and at least once after
