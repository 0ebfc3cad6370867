"""The client library end to end against a real server process: three profiles talking,
receipts, history, safety numbers, and key changes (plain and of a verified contact)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import ServerProcess, swap_account, unique_name

from sealpost.client import (
    Client,
    KeyChanged,
    MessageReceived,
    ReceiptReceived,
    UnknownContact,
    UntrustedContact,
)
from sealpost.client.store import TEST_PARAMS


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def make_client(server: ServerProcess, root: Path, name: str | None = None) -> Client:
    name = name or unique_name()
    return await Client.create(
        root / name, "passcode-" + name, server_url=server.url, username=name, params=TEST_PARAMS
    )


def texts(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.message.peer, e.message.text) for e in events if isinstance(e, MessageReceived)]


def test_three_profiles_talk(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice, bob, carol = [await make_client(server, tmp_path) for _ in range(3)]
        try:
            await alice.send(bob.username, "hi bob")
            await carol.send(bob.username, "hi bob, carol here")
            await alice.send(carol.username, "hi carol")
            got = texts(await bob.receive(wait=10))
            assert sorted(got) == sorted(
                [(alice.username, "hi bob"), (carol.username, "hi bob, carol here")]
            )
            assert texts(await carol.receive(wait=10)) == [(alice.username, "hi carol")]
            reply = await bob.send(alice.username, "hello alice ✓")
            events = await alice.receive(wait=10)
            assert texts(events) == [(bob.username, "hello alice ✓")]
            receipts = [e for e in events if isinstance(e, ReceiptReceived)]
            assert {(e.peer, len(e.message_ids)) for e in receipts} >= {(bob.username, 1)}
            history = alice.history(bob.username)
            assert [(m.outgoing, m.text) for m in history] == [
                (True, "hi bob"),
                (False, "hello alice ✓"),
            ]
            assert history[0].status == "delivered"
            assert bob.history(alice.username)[-1].id == reply.id
            assert {c.username for c in bob.contacts()} == {alice.username, carol.username}
            assert alice.safety_number(bob.username) == bob.safety_number(alice.username)
            assert alice.safety_number(bob.username) != alice.safety_number(carol.username)
            # nothing is delivered twice
            assert texts(await bob.receive(wait=0)) == []
        finally:
            for c in (alice, bob, carol):
                await c.close()

    run(scenario())


def test_many_messages_in_order_and_exactly_once(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        try:
            sent = [f"message {i}" for i in range(300)]
            await asyncio.gather(*(alice.send(bob.username, t) for t in sent))
            got: list[str] = []
            while len(got) < len(sent):
                new = [t for _, t in texts(await bob.receive(wait=10))]
                assert new, "a message was lost"
                got += new
            assert got == sent
            assert len(bob.history(bob_peer := alice.username)) == len(sent)
            assert bob_peer
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_unknown_contact(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice = await make_client(server, tmp_path)
        try:
            with pytest.raises(UnknownContact):
                await alice.send("nobody-" + unique_name(), "hello?")
        finally:
            await alice.close()

    run(scenario())


def test_key_change_warns_and_blocks_a_verified_contact(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        new_bob = await make_client(server, tmp_path)
        try:
            await alice.send(bob.username, "before")
            await bob.receive(wait=10)
            before = alice.safety_number(bob.username)
            alice.verify(bob.username)
            swap_account(server, bob.username, new_bob.username)
            new_bob.username = bob.username  # the new phone's profile answers to the name
            await alice.lookup(bob.username)
            assert [e for e in alice.take_events() if isinstance(e, KeyChanged)] == [
                KeyChanged(bob.username, True)
            ]
            assert alice.safety_number(bob.username) != before
            with pytest.raises(UntrustedContact):
                await alice.send(bob.username, "must not be sent")
            assert texts(await new_bob.receive(wait=0)) == []
            alice.verify(bob.username)
            await alice.send(bob.username, "after re-verifying")
            assert texts(await new_bob.receive(wait=10)) == [(alice.username, "after re-verifying")]
            assert [m.text for m in alice.history(bob.username)] == [
                "before",
                "after re-verifying",
            ]
        finally:
            for c in (alice, bob, new_bob):
                await c.close()

    run(scenario())


def test_key_change_of_an_unverified_contact_warns_once_and_sends(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        new_bob = await make_client(server, tmp_path)
        try:
            await alice.send(bob.username, "before")
            swap_account(server, bob.username, new_bob.username)
            new_bob.username = bob.username
            await alice.lookup(bob.username)
            assert KeyChanged(bob.username, False) in alice.take_events()
            alice.acknowledge_key_change(bob.username)
            await alice.send(bob.username, "to the new key")
            assert texts(await new_bob.receive(wait=10)) == [(alice.username, "to the new key")]
            # the new key's side sees alice as a new contact and can answer
            await new_bob.send(alice.username, "got it")
            assert texts(await alice.receive(wait=10)) == [(bob.username, "got it")]
        finally:
            for c in (alice, bob, new_bob):
                await c.close()

    run(scenario())


def test_a_sender_claiming_another_name_is_dropped(server: ServerProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        mallory = await make_client(server, tmp_path)
        try:
            mallory.username = alice.username  # claims to be alice in its messages
            await mallory.send(bob.username, "this is alice, honest")
            assert texts(await bob.receive(wait=2)) == []
            assert bob.contacts() == []
            await alice.send(bob.username, "the real alice")
            assert texts(await bob.receive(wait=10)) == [(alice.username, "the real alice")]
        finally:
            for c in (alice, bob, mallory):
                await c.close()

    run(scenario())


Checker = Callable[[Client], None]
