"""A device linked to an account that is already in a group gets that group's messages
from the first one on (issue 14 item 14: the first one was dropped as
``UnknownContact``), against a real server process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import ServerProcess
from test_client_e2e import make_client, run
from test_client_groups import drain, link, received


def test_first_group_message_reaches_a_newly_linked_device(
    server: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        bob = await make_client(server, tmp_path)
        bob2 = None
        try:
            await alice.create_group("crew", [bob.username])
            await bob.receive(wait=5)  # the group
            await alice.send("crew", "before the tablet")
            assert received(await bob.receive(wait=5)) == [
                ("crew", alice.username, "before the tablet")
            ]
            bob2 = await link(bob, tmp_path, "tablet")
            await bob.receive(wait=2)  # the notice that the tablet was linked
            with caplog.at_level(logging.WARNING, logger="sealpost.client"):
                await alice.send("crew", "first for the tablet")
                got = await bob2.receive(wait=5)
                assert received(got) == [("crew", alice.username, "first for the tablet")]
                (old_phone,) = await drain(bob)
                assert received(old_phone) == [("crew", alice.username, "first for the tablet")]
            drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
            assert drops == []
            assert [m.text for m in bob2.history("crew")] == ["first for the tablet"]
        finally:
            for client in (alice, bob, bob2):
                if client is not None:
                    await client.close()

    run(scenario())
