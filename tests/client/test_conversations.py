"""The conversations service (client/services/conversations.py) against the server's own
code in one event loop (tests/relay.py): names to conversations, history with authors,
disappearing messages left out once due and deleted (with their saved files) by expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay import InProcessRelay, texts
from sealpost.client import UnknownContact


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def run(scenario: Callable[[InProcessRelay], Awaitable[Any]], root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


def test_names_address_contacts_then_groups(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await relay.client("carol")
        await alice.send("bob", "hi")
        await alice.create_group("bob", ["carol"])  # a group named like a contact
        await alice.create_group("club", ["bob"])
        conversations = alice._services.conversations
        peer, display, group = conversations.resolve("BOB")
        assert (peer, display, group) == (bob.account_id, "bob", None)
        (club,) = [g for g in alice.groups() if g.name == "club"]
        assert conversations.resolve("club") == (club.group_id, "club", club.group_id)
        (named_bob,) = [g for g in alice.groups() if g.name == "bob"]
        assert conversations.resolve("#bob")[2] == named_bob.group_id
        assert conversations.is_group("club") and conversations.is_group("#bob")
        assert not conversations.is_group("bob") and not conversations.is_group("nobody")
        with pytest.raises(UnknownContact):
            conversations.resolve("nobody")
        assert conversations.name_of(alice.account_id) == "alice"
        assert conversations.name_of(bob.account_id) == "bob"
        assert conversations.name_of(b"\xab" * 16) == "ab" * 6

    run(scenario, tmp_path)


def test_history_names_each_author_oldest_first(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await alice.send("bob", "one")
        await bob.receive(wait=5)
        await bob.send("alice", "two")
        await alice.receive(wait=5)
        await alice.send("bob", "three")
        history = alice._services.conversations.history("bob")
        assert [(m.author, m.text, m.outgoing, m.peer) for m in history] == [
            ("alice", "one", True, "bob"),
            ("bob", "two", False, "bob"),
            ("alice", "three", True, "bob"),
        ]
        assert [m.text for m in alice._services.conversations.history("bob", limit=2)] == [
            "two",
            "three",
        ]

    run(scenario, tmp_path)


def test_a_disappearing_message_is_left_out_when_due_and_expire_deletes_it(
    tmp_path: Path,
) -> None:
    clock = Clock()

    async def scenario(relay: InProcessRelay) -> None:
        alice = await relay.client("alice", clock=clock)
        bob = await relay.client("bob")
        await alice.set_timer("bob", 60)
        assert alice._services.conversations.timer("bob") == 60
        await bob.receive(wait=5)
        await alice.send("bob", "soon gone")
        assert texts(await bob.receive(wait=5)) == ["soon gone"]
        (message,) = alice.history("bob")
        assert message.expires_at is not None
        clock.now += 61
        stored = alice.store.repos().messages
        assert stored.any_expired(int(clock.now * 1000))
        assert alice._services.conversations.history("bob") == []  # expired on the way
        assert not stored.any_expired(int(clock.now * 1000))
        assert alice._services.conversations.expire() == 0
        await alice.set_timer("bob", 0)
        assert alice._services.conversations.timer("bob") == 0

    run(scenario, tmp_path)
