"""What each device of an account is told when a device is linked (services/linking.py,
services/absorb.py), against the server's own code in one event loop (tests/relay.py): the
new device's announcement is the one event, received once by the device that accepted the
link and once by a sibling that did not, and the new device itself is told nothing of its
own link."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay import InProcessRelay
from sealpost.client import Client, DeviceLinked


def run(scenario: Callable[[InProcessRelay], Awaitable[Any]], root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


async def linked(client: Client) -> list[DeviceLinked]:
    """Every DeviceLinked ``client`` has for the application: those held outside receive,
    then what two receives bring (the notice is queued before link_new returns)."""
    events = client.take_events()
    for _ in range(2):
        events += await client.receive(wait=1)
    return [e for e in events if isinstance(e, DeviceLinked)]


def test_each_device_is_told_of_a_link_once(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        phone = await relay.client("alice")
        laptop = await relay.link(phone, "laptop")
        assert await linked(phone) == [DeviceLinked(laptop.device_id, "laptop")]
        assert await linked(laptop) == []

        tablet = await relay.link(phone, "tablet")
        assert await linked(phone) == [DeviceLinked(tablet.device_id, "tablet")]
        assert await linked(laptop) == [DeviceLinked(tablet.device_id, "tablet")]
        assert await linked(tablet) == []
        names = {d["device_id"]: d["name"] for d in await phone.devices()}
        assert names[laptop.device_id] == "laptop" and names[tablet.device_id] == "tablet"

    run(scenario, tmp_path)
