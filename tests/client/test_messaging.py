"""The messaging service (client/services/messaging.py) against the server's own code in
one event loop (tests/relay.py): what the user sends is stamped with the injected clock,
a refused send changes nothing, and a timer or a deletion for everyone applies here and on
the other side."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay import InProcessRelay, texts
from sealpost.client import (
    ClientError,
    MessageDeleted,
    MessageReceived,
    MessageTooLarge,
    TimerChanged,
    UnknownGroup,
)
from sealpost.client.errors import MAX_SEND_TEXT


def run(scenario: Callable[[InProcessRelay], Awaitable[Any]], root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


def test_a_text_is_stamped_by_the_injected_clock(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        now = round(time.time()) - 0.25  # stopped (within the server's skew window)
        alice = await relay.client("alice", clock=lambda: now)
        bob = await relay.client("bob")
        messaging = alice._services.messaging
        sent = await messaging.send("bob", "at a fixed time")
        assert sent.sent_at == int(now * 1000)
        (got,) = [e.message for e in await bob.receive(wait=5) if isinstance(e, MessageReceived)]
        assert (got.text, got.sent_at) == ("at a fixed time", int(now * 1000))

    run(scenario, tmp_path)


def test_refused_sends_change_nothing(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        messaging = alice._services.messaging
        await bob.send("alice", "from bob")
        await alice.receive(wait=5)
        before = alice.history("bob")
        with pytest.raises(MessageTooLarge):
            await messaging.send("bob", "x" * (MAX_SEND_TEXT + 1))
        with pytest.raises(UnknownGroup):
            await messaging.send("#no such group", "hello")
        with pytest.raises(ValueError, match="a timer is 0 to"):
            await messaging.set_timer("bob", -1)
        (incoming,) = before
        with pytest.raises(ClientError, match="only a message this account sent"):
            await messaging.delete_for_everyone("bob", incoming.id)
        assert alice.history("bob") == before
        assert alice.timer("bob") == 0
        assert texts(await bob.receive(wait=1)) == []  # nothing went out

    run(scenario, tmp_path)


def test_a_timer_and_a_deletion_apply_here_and_there(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        messaging = alice._services.messaging
        await messaging.set_timer("bob", 3600)  # a name to look up: resolved first
        assert alice.timer("bob") == 3600
        got = await bob.receive(wait=5)
        assert [(e.seconds, e.by) for e in got if isinstance(e, TimerChanged)] == [(3600, "alice")]
        sent = await messaging.send("bob", "to be taken back")
        assert sent.expires_at is not None
        assert texts(await bob.receive(wait=5)) == ["to be taken back"]
        await messaging.delete_for_everyone("bob", sent.id)
        assert alice.history("bob") == []
        got = await bob.receive(wait=5)
        assert [e.message_id for e in got if isinstance(e, MessageDeleted)] == [sent.id]
        assert bob.history("alice") == []

    run(scenario, tmp_path)
