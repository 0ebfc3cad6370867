"""Receiving in two phases (client/services/receiving.py), against the server's own code
in one event loop (tests/relay.py): what a batch needs from the network is fetched with
no lock held; the batch is then opened and committed under the lock in one transaction,
with no network call; only then is it acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relay import InProcessRelay, texts
from sealpost.client import Client


class Watch:
    """What a client does while its receive pipeline processes a batch."""

    def __init__(self, client: Client) -> None:
        self.locked_requests: list[str] = []
        self.unlocked_requests: list[str] = []
        self.locked_commits = 0
        self.batches = 0
        ctx, receiver = client._ctx, client._services.receiver
        inside = False
        request, transaction, process = (
            ctx.transport.request,
            ctx.store.transaction,
            receiver.process,
        )

        async def watched_request(method: str, path: str, **kwargs: Any) -> Any:
            if inside:
                (self.locked_requests if ctx.lock.locked() else self.unlocked_requests).append(path)
            return await request(method, path, **kwargs)

        @contextlib.contextmanager
        def watched_transaction() -> Iterator[Any]:
            if inside and ctx.lock.locked():
                self.locked_commits += 1
            with transaction() as conn:
                yield conn

        async def watched_process(stream: Any, pushes: Any) -> Any:
            nonlocal inside
            inside = True
            try:
                return await process(stream, pushes)
            finally:
                inside = False
                self.batches += 1

        ctx.transport.request = watched_request  # type: ignore[method-assign]
        ctx.store.transaction = watched_transaction  # type: ignore[method-assign]
        receiver.process = watched_process  # type: ignore[method-assign]


def run(scenario: Any, root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


def test_new_senders_are_looked_up_without_the_lock_and_a_batch_commits_once(
    tmp_path: Path,
) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        carol = await relay.client("carol")
        await alice.send("bob", "from alice")
        await carol.send("bob", "from carol")
        watch = Watch(bob)
        assert sorted(texts(await bob.receive(wait=5))) == ["from alice", "from carol"]
        # both senders were strangers: their directory entries were fetched, unlocked
        assert sum("/accounts/" in p for p in watch.unlocked_requests) >= 2
        assert watch.locked_requests == []
        assert watch.locked_commits == watch.batches >= 1
        # and what was fetched made them contacts, in the batch's own commit
        assert {c.username for c in bob.contacts()} >= {"alice", "carol"}
        # a known sender's batch needs nothing from the network
        await alice.send("bob", "again")
        watch = Watch(bob)
        assert texts(await bob.receive(wait=5)) == ["again"]
        assert watch.locked_requests == watch.unlocked_requests == []
        assert watch.locked_commits == watch.batches == 1

    run(scenario, tmp_path)
