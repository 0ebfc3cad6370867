"""Attacks on groups and conversation settings by a malicious member or a hostile server
(issue 13, items 4 to 6): each test plays one attack against real clients talking to the
real server (``hostile_server.py``), the attacker using the real client's own send path
with a state, a timer or a chain it forged. docs/THREAT_MODEL.md names each test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from test_hostile_server import user

from conftest import HostileServer
from sealpost.client import MessageReceived, TimerChanged
from sealpost.client.client import _set_timer


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def texts(events: list[Any]) -> list[str]:
    return [e.message.text for e in events if isinstance(e, MessageReceived)]


# ---------------------------------------------------------------------- 13.6 timers


def test_incoming_message_cannot_change_timer(hostile: HostileServer, tmp_path: Path) -> None:
    """A contact whose client writes a different timer into its texts (here: off, and a
    year) cannot change the conversation's timer on the recipient: only an explicit timer
    change does, and that one comes with its notice."""

    async def scenario() -> None:
        alice, bob = await user(hostile, tmp_path), await user(hostile, tmp_path)
        try:
            await bob.send(alice.username, "hello")
            await alice.receive(wait=10)
            await bob.set_timer(alice.username, 60)
            got = await alice.receive(wait=10)
            assert [(e.seconds, e.by) for e in got if isinstance(e, TimerChanged)] == [
                (60, bob.username)
            ]
            assert alice.timer(bob.username) == 60
            # the malicious contact turns the timer off on its side only, without a notice,
            # and its next texts carry expire_timer 0 (then a year)
            for seconds in (0, 365 * 24 * 3600):
                with bob.store.transaction() as conn:
                    _set_timer(conn, alice.account_id, seconds)
                await bob.send(alice.username, f"timer {seconds}")
                got = await alice.receive(wait=10)
                assert texts(got) == [f"timer {seconds}"]
                assert not [e for e in got if isinstance(e, TimerChanged)]
                assert alice.timer(bob.username) == 60
            # alice's own replies keep the conversation's timer
            sent = await alice.send(bob.username, "still disappearing")
            assert sent.expires_at is not None
        finally:
            await alice.close()
            await bob.close()

    run(scenario())
