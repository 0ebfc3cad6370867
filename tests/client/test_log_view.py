"""The client's view of the key-transparency log, one part at a time, against the server's
own code in one event loop (tests/relay.py): ``services/log_heads.py`` refuses a head the
pinned key did not sign and keeps the one it had, ``services/lookup_proofs.py`` refuses a
lookup whose devices the log does not hold and pins nothing, ``services/alarms.py`` stores
each alarm once and emits it, and ``services/transparency.py`` is one view over them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relay import InProcessRelay
from sealpost.client import Client
from sealpost.client.errors import TransparencyFailure
from sealpost.client.records import AlarmRaised
from sealpost.client.services.alarms import Alarms
from sealpost.client.services.log_heads import LogHeads
from sealpost.client.services.lookup_proofs import LookupProofs
from sealpost.client.services.transparency import KeyTransparency
from sealpost.client.transport import unb64
from sealpost.crypto.sign import SigningKey, VerifyKey
from sealpost.transparency.log import SignedTreeHead


def run(scenario: Callable[[InProcessRelay], Awaitable[Any]], root: Path) -> Any:
    async def main() -> Any:
        async with InProcessRelay.start(root) as relay:
            return await asyncio.wait_for(scenario(relay), 60)

    return asyncio.run(main())


def parts(client: Client) -> tuple[Alarms, LogHeads, LookupProofs]:
    """Fresh log-view parts over ``client``'s context and pinned log key."""
    raw_key = client.store.repos().log.log_key()
    assert raw_key is not None
    alarms = Alarms(client._ctx)
    heads = LogHeads(client._ctx, VerifyKey.from_public_bytes(raw_key), alarms)
    return alarms, heads, LookupProofs(client._ctx, heads, alarms)


def test_a_head_the_pinned_key_did_not_sign_is_refused_and_alarmed_once(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice = await relay.client("alice")
        _, heads, _ = parts(alice)
        doc = await alice._ctx.transport.request("GET", "/v1/accounts/alice", signed=False)
        held = await heads.observe(unb64(doc["transparency"]["head"]), source="a lookup")
        assert heads.head == held
        forged = SignedTreeHead.sign(
            SigningKey.from_private_bytes(bytes(32)),
            tree_size=held.tree_size + 1,
            timestamp=held.timestamp + 1,
            root=bytes(32),
            map_root=bytes(32),
        ).encode()
        alice._ctx.events.take()
        for _ in range(2):
            with pytest.raises(TransparencyFailure) as caught:
                await heads.observe(forged, source="a test")
            assert caught.value.kind == "bad_tree_head"
        assert heads.head == held and heads.freshness_floor() == held.tree_size
        (alarm,) = alice.store.repos().alarms.list()
        assert (alarm.kind, alarm.subject) == ("bad_tree_head", "log")
        assert [e for e in alice._ctx.events.take() if isinstance(e, AlarmRaised)] == [
            AlarmRaised(alarm)
        ]

    run(scenario, tmp_path)


def test_a_lookup_with_devices_the_log_does_not_hold_pins_nothing(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        _, heads, lookups = parts(alice)
        doc = await alice._ctx.transport.request("GET", "/v1/accounts/bob", signed=False)
        who = {"account_id": bob.account_id, "username": "bob", "account_key": bob.account_key}
        assert alice.store.repos().log.pin(bob.account_id) is None
        with pytest.raises(TransparencyFailure) as caught:
            await lookups.check_lookup({**doc, "devices": []}, **who)
        assert caught.value.kind == "directory_mismatch"
        assert alice.store.repos().log.pin(bob.account_id) is None
        assert [a.kind for a in alice.store.repos().alarms.list()] == ["directory_mismatch"]

        await lookups.check_lookup(doc, **who)
        pin = alice.store.repos().log.pin(bob.account_id)
        assert pin is not None and pin.log_index == doc["transparency"]["index"]
        assert heads.freshness_floor() >= pin.log_index + 1  # the lookup's head was kept

    run(scenario, tmp_path)


def test_the_log_view_is_one_view_over_its_parts(tmp_path: Path) -> None:
    async def scenario(relay: InProcessRelay) -> None:
        alice = await relay.client("alice")
        raw_key = alice.store.repos().log.log_key()
        assert raw_key is not None
        kt = KeyTransparency(alice._ctx, VerifyKey.from_public_bytes(raw_key))
        assert kt.lookups._heads is kt.heads and kt.heads._alarms is kt.alarms
        kt.gossip_deadline = 5.0
        assert kt.heads.gossip_deadline == 5.0
        assert kt.log_key == raw_key and kt.gossip() is None and kt.head is None
        doc = await alice._ctx.transport.request("GET", "/v1/accounts/alice", signed=False)
        head = await kt.heads.observe(unb64(doc["transparency"]["head"]), source="a lookup")
        assert kt.head == head and kt.gossip() == head.encode()
        kt.alarm("unknown_device", "alice", "a test alarm")
        assert [a.detail for a in alice.store.repos().alarms.list()] == ["a test alarm"]

    run(scenario, tmp_path)
