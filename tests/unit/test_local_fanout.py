"""The in-process fanout: a device's subscriptions (a reconnecting device has two for a
moment) are each woken by a publish, whichever closes first or during the publish."""

from __future__ import annotations

import asyncio

from sealpost.server.fanout.local import LocalFanout, LocalSubscription


def test_every_subscription_of_a_device_is_woken_until_it_closes() -> None:
    async def main() -> None:
        fanout = LocalFanout()
        woken: list[str] = []
        a, b = (b"a" * 16, 1), (b"b" * 16, 1)
        old = fanout.subscribe(a, lambda: woken.append("old"))
        new = fanout.subscribe(a, lambda: woken.append("new"))
        other = fanout.subscribe(b, lambda: woken.append("other"))
        assert fanout.connected() == 3 and fanout.local(a)
        await fanout.publish({a})
        assert sorted(woken) == ["new", "old"]
        woken.clear()
        old.close()
        old.close()  # again: nothing
        await fanout.publish([a, b])
        assert sorted(woken) == ["new", "other"]
        woken.clear()
        new.close()
        assert not fanout.local(a) and fanout.connected() == 1
        await fanout.publish([a])
        assert woken == []
        other.close()
        assert fanout.connected() == 0

    asyncio.run(main())


def test_a_wake_that_closes_a_subscription_does_not_cut_the_others_off() -> None:
    async def main() -> None:
        fanout = LocalFanout()
        address = (b"c" * 16, 2)
        woken: list[int] = []
        subs: list[LocalSubscription] = []

        def wake(i: int) -> None:
            woken.append(i)
            subs[i].close()  # its own, while the publish is at it

        for i in range(3):
            subs.append(fanout.subscribe(address, lambda i=i: wake(i)))
        await fanout.publish([address])
        assert sorted(woken) == [0, 1, 2]
        assert not fanout.local(address) and fanout.connected() == 0

    asyncio.run(main())
