"""A send the server refuses for an outdated device list (``mismatched_devices``: the
recipient linked a device) is encrypted anew, and kept as a pending send from the settle
that says so until the commit of its new encryption: a process that dies in between
loses nothing (the restarted client sends it once, to every device), and a flush in the
meantime does not send it twice. A real server process; the sender runs in the test's
event loop, and its disk is copied at the moment it would die (tests/relay.py ``crash``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from helpers import ServerProcess
from test_client_e2e import texts
from test_client_groups import link
from test_client_offline import PASSCODE, pair

from relay import crash
from sealpost.client import Client
from sealpost.client.rows import Outgoing

TEXT = "to both devices"

#: (alice, bob, bob's laptop) -> the alice that goes on (a restarted one after a crash)
Scenario = Callable[[Client, Client, Client], Awaitable[Client]]


def run(server: ServerProcess, root: Path, scenario: Scenario) -> None:
    """alice and bob know each other, then bob links a laptop (alice's list of his devices
    is stale: her next send to him is refused with mismatched_devices); after
    ``scenario``, the text has been sent once, and both of bob's devices have it once."""

    async def main() -> None:
        alice, bob = await pair(server, root)
        laptop = await link(bob, root, "laptop")
        try:
            alice = await scenario(alice, bob, laptop)
            last = alice.history(bob.username)[-1]
            assert (last.text, last.status) == (TEXT, "sent")
            assert alice.waiting() == 0 and await alice.flush_outbox() == 0
            for device in (bob, laptop):
                assert await received(device, TEXT) == 1
        finally:
            for client in (alice, bob, laptop):
                await client.close()

    asyncio.run(main())


async def received(device: Client, text: str) -> int:
    """How many times ``device`` receives ``text`` (waiting for it, then a while more)."""
    got: list[str] = []
    async with asyncio.timeout(20):
        while text not in got:
            got += [t for _, t in texts(await device.receive(wait=5))]
    got += [t for _, t in texts(await device.receive(wait=0.5))]
    return got.count(text)


def test_a_send_retried_for_a_new_device_survives_a_crash_before_its_new_encryption(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario(alice: Client, bob: Client, laptop: Client) -> Client:
        disks: list[Path] = []

        def die(item: Outgoing) -> None:  # the settle has committed; the process dies
            disks.append(crash(alice, tmp_path / "alice-crashed"))

        alice._services.sending.delivery._requeue = die  # type: ignore[method-assign]
        in_flight = asyncio.ensure_future(alice.send(bob.username, TEXT))
        async with asyncio.timeout(20):
            while not disks:
                await asyncio.sleep(0.01)
        in_flight.cancel()
        await alice.close()
        alice = await Client.open(disks[0], PASSCODE)
        assert alice.history(bob.username)[-1].status == "sending"
        assert alice.waiting() == 1  # kept as a pending send by the settle
        assert await alice.flush_outbox() == 1
        return alice

    run(server, tmp_path, scenario)


def test_a_send_being_retried_is_not_sent_again_by_a_flush_meanwhile(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario(alice: Client, bob: Client, laptop: Client) -> Client:
        delivery = alice._services.sending.delivery
        requeue = delivery._requeue
        flushes: list[asyncio.Future[int]] = []

        def retry(item: Outgoing) -> None:  # the retry kept pending, on its way: flush now
            flushes.append(asyncio.ensure_future(alice.flush_outbox()))
            requeue(item)

        delivery._requeue = retry  # type: ignore[method-assign]
        sent = await alice.send(bob.username, TEXT)
        assert sent is not None and sent.status == "sent"
        assert len(flushes) == 1 and await flushes[0] == 0  # the retry was not sent twice
        return alice

    run(server, tmp_path, scenario)
