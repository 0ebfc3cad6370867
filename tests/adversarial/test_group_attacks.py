"""Attacks on groups and conversation settings by a malicious member or a hostile server
(issue 13, items 4 to 6): each test plays one attack against real clients talking to the
real server (``hostile_server.py``), the attacker using the real client's own send path
with a state, a timer or a chain it forged. docs/THREAT_MODEL.md names each test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from test_hostile_server import user

import sealpost.client.services.group_encryptor as group_encryptor
from conftest import HostileServer
from sealpost.client import (
    Client,
    GroupBehind,
    GroupChanged,
    GroupOutOfDate,
    MessageReceived,
    TimerChanged,
)
from sealpost.client.futures import future as _future
from sealpost.client.rows import Outgoing
from sealpost.protocol.content import GroupUpdateContent
from sealpost.protocol.groupchain import encode_chain
from sealpost.protocol.groupstate import GroupMember, GroupState, state_hash


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def texts(events: list[Any]) -> list[str]:
    return [e.message.text for e in events if isinstance(e, MessageReceived)]


def changes(events: list[Any]) -> list[GroupChanged]:
    return [e for e in events if isinstance(e, GroupChanged)]


def withhold(hostile: HostileServer, client: Client) -> int:
    """The operator drops everything queued for the client's device: how many."""
    hostile.stop()  # (the server keeps the queue's tail in memory)
    try:
        return hostile.db.replace_queue(client.account_id, client.device_id, [])
    finally:
        hostile.start()


async def reopen(client: Client) -> Client:
    path = client.store.path
    await client.close()
    return await Client.open(path, "passcode-" + client.username)


async def until(client: Client, done: Any, tries: int = 10) -> list[Any]:
    """Receive until ``done(events so far)``; the events."""
    got: list[Any] = []
    for _ in range(tries):
        got += await client.receive(wait=2)
        if done(got):
            return got
    raise AssertionError(f"gave up waiting; got {got}")


async def send_update(attacker: Client, to: str, blob: bytes) -> None:
    """A malicious member sends a group update of its own making, pairwise, through the
    real client's send path."""
    content = GroupUpdateContent(0, attacker._ctx.delivery_token, attacker.username, blob)
    await attacker._services.sending.enqueue(Outgoing(to, content, _future(), store=False))


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
                with bob.store.unit() as repos:
                    repos.messages.set_timer(alice.account_id, seconds)
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


# ---------------------------------------------------------------------- 13.4 withheld updates


def test_withheld_group_update_is_caught_up_and_removed_member_reads_nothing(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """alice removes carol (v2) and renames the group (v3); the server withholds both
    updates from bob. alice's next message names v3: bob shows it, says he is behind,
    sends nothing to the group (carol would read it) and asks alice for her chain; once it
    arrives he checks v2 and v3, rotates, and carol reads nothing of what he sends."""

    async def scenario() -> None:
        alice, bob, carol = [await user(hostile, tmp_path) for _ in range(3)]
        try:
            await alice.create_group("team", [bob.username, carol.username])
            for c in (bob, carol):
                await c.receive(wait=5)
            await bob.send("team", "bob at v1")
            assert texts(await carol.receive(wait=5)) == ["bob at v1"]
            await alice.receive(wait=5)

            bob = await reopen(bob)  # offline: nothing waits in a socket
            await bob.close()
            await alice.group_remove("team", [carol.username])
            await alice.group_rename("team", "crew")
            assert withhold(hostile, bob) >= 2  # both updates, gone
            await asyncio.sleep(0.5)  # alice's client notices the restart
            await alice.send("crew", "v3: carol is out")
            await carol.receive(wait=3)

            bob = await Client.open(bob.store.path, "passcode-" + bob.username)
            got = await bob.receive(wait=5)
            assert texts(got) == ["v3: carol is out"]
            assert [(e.version, e.seen, e.by) for e in got if isinstance(e, GroupBehind)] == [
                (1, 3, alice.username)
            ]
            assert [(g.name, g.version) for g in bob.groups()] == [("team", 1)]
            with pytest.raises(GroupOutOfDate) as refused:
                await bob.send("team", "for alice only")
            assert refused.value.version == 1 and refused.value.seen == 3
            assert [m.text for m in bob.history("team") if m.outgoing] == ["bob at v1"]
            assert texts(await carol.receive(wait=2)) == []

            # alice answers bob's request with her chain; bob checks v2 and v3
            await alice.receive(wait=5)
            got = await until(bob, lambda g: len(changes(g)) >= 2)
            steps = [(e.version, e.removed, e.renamed_from, e.name) for e in changes(got)]
            assert steps == [(2, (carol.username,), None, "team"), (3, (), "team", "crew")]
            view = bob.groups()[0]
            assert (view.name, view.version) == ("crew", 3)
            assert sorted(view.members) == sorted([alice.username, bob.username])

            await bob.send("crew", "bob caught up")
            assert texts(await alice.receive(wait=5)) == ["bob caught up"]
            assert texts(await carol.receive(wait=3)) == []  # rotated: nothing opens
        finally:
            for c in (alice, bob, carol):
                await c.close()

    run(scenario())


def test_update_after_a_withheld_one_carries_the_missing_versions(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """The server withholds v2 (carol removed) from bob but lets v3 through: v3 carries
    the chain, so bob checks v2 from it and is at v3 at once (before chains, he dropped
    v3 silently and stayed at v1 with carol reading along)."""

    async def scenario() -> None:
        alice, bob, carol = [await user(hostile, tmp_path) for _ in range(3)]
        try:
            await alice.create_group("team", [bob.username, carol.username])
            for c in (bob, carol):
                await c.receive(wait=5)
            bob = await reopen(bob)
            await bob.close()
            await alice.group_remove("team", [carol.username])
            assert withhold(hostile, bob) >= 1
            await asyncio.sleep(0.5)
            await alice.group_rename("team", "crew")
            bob = await Client.open(bob.store.path, "passcode-" + bob.username)
            got = await bob.receive(wait=5)
            assert [(e.version, e.removed) for e in changes(got)] == [
                (2, (carol.username,)),
                (3, ()),
            ]
            assert [(g.name, g.version) for g in bob.groups()] == [("crew", 3)]
            await bob.send("crew", "after the catch-up")
            assert texts(await alice.receive(wait=5)) == ["after the catch-up"]
            assert texts(await carol.receive(wait=3)) == []
        finally:
            for c in (alice, bob, carol):
                await c.close()

    run(scenario())


# ---------------------------------------------------------------------- 13.5 squatting


def test_removed_member_cannot_squat_group_id(hostile: HostileServer, tmp_path: Path) -> None:
    """carol, removed from alice's group, signs versions of it with herself as admin and
    dave as member, and sends them to dave before alice adds him: a v100 alone, a v2 of
    her own on the real v1, and an unchained (legacy-form) v100. dave accepts none; the
    real v3 that adds him is accepted, and his messages reach the real members."""

    async def scenario() -> None:
        alice, bob, carol, dave = [await user(hostile, tmp_path) for _ in range(4)]
        try:
            await alice.create_group("team", [bob.username, carol.username])
            for c in (bob, carol):
                await c.receive(wait=5)
            v1 = GroupState.decode(carol._services.groups.get(alice.groups()[0].group_id).raw)  # type: ignore[union-attr]
            await alice.group_remove("team", [carol.username])
            await bob.receive(wait=5)
            await carol.receive(wait=5)

            me = GroupMember(carol.account_id, carol.account_key, carol.username)
            them = GroupMember(dave.account_id, dave.account_key, dave.username)
            members = tuple(sorted((me, them), key=lambda m: m.account_id))
            squat = GroupState(
                v1.group_id,
                100,
                "team",
                members,
                frozenset({me.account_id}),
                me.account_id,
                link=state_hash(v1),
            ).signed_by(carol._ctx.account)
            fork = v1.next(add=(them,), admins=frozenset({me.account_id})).signed_by(
                carol._ctx.account
            )
            legacy = GroupState(
                v1.group_id, 100, "team", members, frozenset({me.account_id}), me.account_id
            ).signed_by(carol._ctx.account)
            for blob in (
                encode_chain((squat,)),
                encode_chain((v1, fork)),
                legacy.encode(),
                squat.encode(),
            ):
                await send_update(carol, dave.username, blob)
            got = await dave.receive(wait=5)
            assert changes(got) == [] and dave.groups() == []

            await alice.group_add("team", [dave.username])
            got = await until(dave, lambda g: changes(g))
            assert [(e.version, e.by, e.member) for e in changes(got)] == [
                (3, alice.username, True)
            ]
            view = dave.groups()[0]
            assert view.version == 3 and view.admins == (alice.username,)
            assert sorted(view.members) == sorted([alice.username, bob.username, dave.username])
            await bob.receive(wait=5)
            await dave.send("team", "dave in the real group")
            for c in (alice, bob):
                assert texts(await c.receive(wait=5)) == ["dave in the real group"]
            assert texts(await carol.receive(wait=3)) == []
        finally:
            for c in (alice, bob, carol, dave):
                await c.close()

    run(scenario())


def test_member_naming_a_state_that_does_not_exist_is_named_until_removed(
    hostile: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mallory, a member, names a state nobody has in her message (her version with
    another hash). bob shows the message, stops sending to the group and names her;
    her real chain does not end it (it does not back her claim); alice removing her
    does, and bob sends again."""

    async def scenario() -> None:
        alice, bob, mallory = [await user(hostile, tmp_path) for _ in range(3)]
        try:
            await alice.create_group("team", [bob.username, mallory.username])
            for c in (bob, mallory):
                await c.receive(wait=5)
            with monkeypatch.context() as patch:
                patch.setattr(group_encryptor, "state_hash", lambda _state: os.urandom(32))
                await mallory.send("team", "trust me")
            got = await bob.receive(wait=5)
            assert texts(got) == ["trust me"]
            assert [e.by for e in got if isinstance(e, GroupBehind)] == [mallory.username]
            with pytest.raises(GroupOutOfDate, match=mallory.username):
                await bob.send("team", "hello")
            await mallory.receive(wait=5)  # she answers bob's request with her real chain
            await bob.receive(wait=3)
            with pytest.raises(GroupOutOfDate):
                await bob.send("team", "hello")
            await alice.group_remove("team", [mallory.username])
            got = await until(bob, lambda g: changes(g))
            assert [e.removed for e in changes(got)] == [(mallory.username,)]
            await bob.send("team", "hello again")
            assert texts(await alice.receive(wait=5))[-1:] == ["hello again"]
        finally:
            for c in (alice, bob, mallory):
                await c.close()

    run(scenario())
