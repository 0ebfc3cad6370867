"""The directory and trust service (client/services/directory.py) against the server's own
code in one event loop (tests/relay.py): lookups pin contacts, a name that breaks the
username rules is never asked for, the pinned contact serves until refreshed, and a key
change keeps the old key, drops the sessions, raises an event and blocks until verified."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay import InProcessRelay
from sealpost.client import Client, KeyChanged, UnknownContact
from sealpost.client.services.directory import Directory


def run(scenario: Callable[[InProcessRelay], Awaitable[Any]], root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


class Counting:
    """The client's transport, counting the directory requests that pass through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lookups: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        if path.startswith("/v1/accounts/"):
            self.lookups.append(path)
        return await self.inner.request(method, path, **kw)


def directory_of(client: Client) -> tuple[Directory, Counting, list[tuple[bytes, int | None]]]:
    """A directory service over ``client``'s context, its transport counted and its
    dropped sessions recorded."""
    counting = Counting(client._ctx.transport)
    client._ctx.transport = counting
    dropped: list[tuple[bytes, int | None]] = []
    service = Directory(
        client._ctx,
        transparency=client._services.monitoring.transparency,
        forget_sessions=lambda account, device: dropped.append((account, device)),
    )
    return service, counting, dropped


def test_a_lookup_pins_the_contact_with_its_certified_devices(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        directory, _, _ = directory_of(alice)
        row = await directory.resolve("Bob")
        assert (row.account_id, row.username, row.account_key) == (
            bob.account_id,
            "bob",
            bob.account_key,
        )
        assert sorted(row.devices) == [bob.device_id]
        assert not row.verified and not row.key_changed
        (stored,) = alice.store.repos().contacts.all()
        assert stored == row
        assert [c.username for c in directory.contacts()] == ["bob"]

    run(scenario, tmp_path)


def test_a_name_that_breaks_the_username_rules_is_never_looked_up(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice = await relay.client("alice")
        directory, counting, _ = directory_of(alice)
        for name in ("no session decrypts this message", "../v1/keys", "", "x" * 200):
            with pytest.raises(UnknownContact):
                await directory.lookup(name)
        assert counting.lookups == []
        with pytest.raises(UnknownContact):
            await directory.lookup("nobody")  # a valid name the server does not know
        assert counting.lookups == ["/v1/accounts/nobody"]
        assert alice.store.repos().contacts.all() == []

    run(scenario, tmp_path)


def test_the_pinned_contact_serves_until_refreshed(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice = await relay.client("alice")
        await relay.client("bob")
        directory, counting, _ = directory_of(alice)
        first = await directory.resolve("bob")
        assert await directory.resolve("bob") == first
        assert len(counting.lookups) == 1
        assert await directory.resolve("bob", refresh=True) == first
        assert len(counting.lookups) == 2

    run(scenario, tmp_path)


def test_a_key_change_is_kept_announced_and_blocks_until_verified(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice = await relay.client("alice")
        await relay.client("bob")
        directory, _, dropped = directory_of(alice)
        bob = await directory.resolve("bob")
        directory.verify("bob")
        bob = directory.known("bob")
        assert bob.verified
        before = directory.safety_number("bob")
        alice.take_events()
        new_key = bytes(32)
        with alice.store.unit() as repos:
            directory.note_key_change(repos, bob, new_key)
        directory.changed()
        changed = directory.known("bob")
        assert (changed.account_key, changed.verified, changed.key_changed) == (
            new_key,
            True,
            True,
        )
        assert dropped == [(bob.account_id, None)]
        assert [(e.peer, e.verified) for e in alice.take_events() if isinstance(e, KeyChanged)] == [
            ("bob", True)
        ]
        assert directory.safety_number("bob") != before
        directory.acknowledge_key_change("bob")  # verified: only verifying again clears it
        assert directory.known("bob").key_changed
        directory.verify("bob")
        assert not directory.known("bob").key_changed
        with pytest.raises(UnknownContact):
            directory.verify("carol")

    run(scenario, tmp_path)
