"""The group services against the server's own code, in one event loop (tests/relay.py):
three real clients, a real relay, no server process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay import InProcessRelay, texts
from sealpost.client import Client, GroupChanged, MessageReceived


def run(scenario: Callable[[InProcessRelay], Awaitable[Any]], root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


def group_texts(events: list[Any]) -> list[tuple[str, str]]:
    return [
        (e.message.author, e.message.text)
        for e in events
        if isinstance(e, MessageReceived) and e.message.group is not None
    ]


async def receive_all(*clients: Client) -> list[list[Any]]:
    return [await c.receive(wait=5) for c in clients]


def test_a_group_message_reaches_every_member_and_a_removed_one_reads_no_more(
    tmp_path: Path,
) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob, carol = [await relay.client(n) for n in ("alice", "bob", "carol")]
        view = await alice.create_group("team", ["bob", "carol"])
        assert sorted(view.members) == ["alice", "bob", "carol"] and view.admins == ("alice",)
        for events in await receive_all(bob, carol):
            (changed,) = [e for e in events if isinstance(e, GroupChanged)]
            assert changed.name == "team" and changed.by == "alice"
        await alice.send("team", "hello team")
        for events in await receive_all(bob, carol):
            assert group_texts(events) == [("alice", "hello team")]
        await bob.send("team", "hello from bob")
        for events in await receive_all(alice, carol):
            assert group_texts(events) == [("bob", "hello from bob")]

        view = await alice.group_remove("team", ["carol"])
        assert sorted(view.members) == ["alice", "bob"]
        bob_events, carol_events = await receive_all(bob, carol)
        assert [e.removed for e in bob_events if isinstance(e, GroupChanged)] == [("carol",)]
        assert [e.member for e in carol_events if isinstance(e, GroupChanged)] == [False]
        await alice.send("team", "after carol")
        assert group_texts(await bob.receive(wait=5)) == [("alice", "after carol")]
        assert texts(await carol.receive(wait=1)) == []  # its keys are gone, and so is it
        assert [g.member for g in carol.groups()] == [False]

    run(scenario, tmp_path)


def test_a_renamed_group_is_known_by_its_new_name_on_every_device(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await alice.create_group("team", ["bob"])
        await bob.receive(wait=5)
        await alice.group_rename("team", "crew")
        events = await bob.receive(wait=5)
        assert [e.renamed_from for e in events if isinstance(e, GroupChanged)] == ["team"]
        assert [g.name for g in bob.groups()] == ["crew"]
        await bob.send("#crew", "under the new name")
        assert group_texts(await alice.receive(wait=5)) == [("bob", "under the new name")]

    run(scenario, tmp_path)
