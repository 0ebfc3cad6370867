"""A message the receiver cannot open is dropped on its own (client/inbox.py), against the
server's own code in one event loop (tests/relay.py): logged as a drop with its reason,
acknowledged with its batch, not in the way of the messages behind it, and never surfaced
as :class:`~sealpost.client.UnknownContact` (whose text, "no user ...", once named a
decryption failure instead of a username)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay import InProcessRelay, texts
from sealpost.client import Client, ClientError, UnknownContact, UnknownGroup


def run(scenario: Callable[[InProcessRelay], Awaitable[Any]], root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


async def receive_until(client: Client, text: str) -> list[str]:
    """Every text ``client`` receives until ``text`` (a few receives at most)."""
    got: list[str] = []
    for _ in range(5):
        got += texts(await client.receive(wait=2))
        if text in got:
            break
    return got


def drops(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage().removeprefix("dropped an undecryptable message: ")
        for r in caplog.records
        if r.getMessage().startswith("dropped an undecryptable message")
    ]


def test_messages_a_group_member_sent_that_cannot_be_opened_are_dropped_and_acked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob, carol = [await relay.client(n) for n in ("alice", "bob", "carol")]
        await alice.create_group("team", ["bob", "carol"])
        await bob.receive(wait=5), await carol.receive(wait=5)
        await alice.send("team", "from alice")
        await carol.send("team", "from carol")
        assert sorted(await receive_until(bob, "from carol")) == ["from alice", "from carol"]
        await bob.send("alice", "to alice")  # alice's session with bob is confirmed: from
        assert "to alice" in await receive_until(alice, "to alice")  # now on, no prekeys
        (team,) = bob.groups()

        # bob loses what opens alice's messages: his session with her device is replaced by
        # one that does not decrypt them, and her sender key for the group is forgotten
        path = bob.store.path
        with bob.store.unit() as repos:
            wrong = repos.sessions.get((carol.account_id, carol.device_id))
            assert len(wrong)
            repos.sessions.save((alice.account_id, alice.device_id), wrong, 0)
            repos.sender_keys.forget_member(team.group_id, alice.account_id)
        await bob.close()
        bob = await relay.open(path)

        await alice.send("bob", "no session decrypts this")
        await alice.send("team", "no sender key opens this")
        await carol.send("bob", "behind them")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sealpost.client"):
            assert await receive_until(bob, "behind them") == ["behind them"]
        # the two texts, and alice's delivery receipt for "to alice" if it came after the loss
        dropped = drops(caplog)
        assert set(dropped) == {"InvalidMessage", "no sender key for this group message"}
        assert dropped.count("no sender key for this group message") == 1
        assert not any("no user" in r.getMessage() for r in caplog.records)
        # acknowledged: the server holds nothing more for bob, and nothing comes again
        assert await relay.storage.fetch(bob.account_id, bob.device_id, after_seq=0, limit=50) == []
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sealpost.client"):
            assert texts(await bob.receive(wait=1)) == []
        assert drops(caplog) == []

    run(scenario, tmp_path)


def test_unknown_contact_names_a_username_and_group_refusals_name_the_group(
    tmp_path: Path,
) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await relay.client("carol")
        await alice.create_group("team", ["bob"])
        await bob.receive(wait=5)
        with pytest.raises(UnknownContact) as nobody:
            await alice.send("nobody", "hello?")
        assert (str(nobody.value), nobody.value.name) == (
            "no user 'nobody' on this server",
            "nobody",
        )

        refusals: list[ClientError] = []
        for call in (
            alice.send("#nosuch", "hi"),
            alice.group_add("nosuch", ["bob"]),
            alice.group_remove("team", ["carol"]),  # an account, but not in the group
        ):
            with pytest.raises(ClientError) as caught:
                await call
            refusals.append(caught.value)
        assert not any(isinstance(e, UnknownContact) for e in refusals)
        assert [str(e) for e in refusals] == [
            "you are in no group named #nosuch",
            "you are in no group named #nosuch",
            "carol is not in #team; nothing was changed",
        ]

        await alice.group_remove("team", ["bob"])
        await bob.receive(wait=5)
        with pytest.raises(UnknownGroup) as removed:
            await bob.send("#team", "still here?")
        assert removed.value.removed and str(removed.value) == "you are no longer a member of #team"

    run(scenario, tmp_path)
