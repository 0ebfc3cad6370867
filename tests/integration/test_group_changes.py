"""What a user sees of group changes (issue 14, item 19), against a real server: a second
group of the same name and adding a member already in the group are refused with a clear
error and change nothing; change notices say what changed; the first message of a new
group shows the group's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import ServerProcess
from test_client_e2e import make_client, run, texts

from sealpost.cli.output import notice
from sealpost.client import Client, GroupChanged, GroupChangeRefused


def changes(events: list[Any]) -> list[GroupChanged]:
    return [e for e in events if isinstance(e, GroupChanged)]


async def _reopen(client: Client) -> Client:
    path = client.store.path
    await client.close()
    return await Client.open(path, "passcode-" + client.username)


def test_second_group_of_a_name_and_existing_member_are_refused(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        try:
            await alice.create_group("team", [bob.username])
            with pytest.raises(GroupChangeRefused, match="already in a group named #team"):
                await alice.create_group("Team", [bob.username])
            assert [g.name for g in alice.groups()] == ["team"]
            with pytest.raises(GroupChangeRefused, match=f"{bob.username} is already in #team"):
                await alice.group_add("team", [bob.username])
            assert alice.groups()[0].version == 1  # no new version
            await alice.create_group("other", [bob.username])
            with pytest.raises(GroupChangeRefused, match="already in a group named #team"):
                await alice.group_rename("other", "TEAM")
            got = await bob.receive(wait=5)
            assert [(e.name, e.version) for e in changes(got)] == [("team", 1), ("other", 1)]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_change_notices_say_what_changed(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = [await make_client(server, tmp_path) for _ in range(4)]
        try:
            await alice.create_group("team", [bob.username, carol.username])
            await bob.receive(wait=5)
            await alice.group_add("team", [dave.username])
            await alice.group_remove("team", [carol.username])
            await alice.group_rename("team", "crew")
            await alice.group_leave("crew")  # the last admin: the lowest account id takes over
            got: list[GroupChanged] = []
            for _ in range(10):
                got += changes(await bob.receive(wait=2))
                if len(got) >= 4:
                    break
            heir = min((bob, dave), key=lambda c: c.account_id).username
            assert [
                (e.version, e.added, e.removed, e.renamed_from, e.admins_added) for e in got
            ] == [
                (2, (dave.username,), (), None, ()),
                (3, (), (carol.username,), None, ()),
                (4, (), (), "team", ()),
                (5, (), (alice.username,), None, (heir,)),
            ]
            capsys.readouterr()
            for event in got:
                notice(event, False)
            lines = capsys.readouterr().err.splitlines()
            who = alice.username
            assert lines == [
                f"sealpost: #team: {who} added {dave.username}",
                f"sealpost: #team: {who} removed {carol.username}",
                f"sealpost: #crew: {who} renamed #team to #crew",
                f"sealpost: #crew: {who} left; made {heir} admin",
            ]
        finally:
            for c in (alice, bob, carol, dave):
                await c.close()

    run(scenario())


def test_first_message_of_a_new_group_shows_its_name(server: ServerProcess, tmp_path: Path) -> None:
    """The group's creation and its first message arrive in one receive batch: the
    message is shown in #team, not under the group's id."""

    async def scenario() -> None:
        alice, bob = await make_client(server, tmp_path), await make_client(server, tmp_path)
        try:
            await alice.send(bob.username, "hi")
            await bob.receive(wait=5)
            bob = await _reopen(bob)
            await bob.close()
            await alice.create_group("team", [bob.username])
            await alice.send("team", "first words")
            bob = await Client.open(bob.store.path, "passcode-" + bob.username)
            got = await bob.receive(wait=5)
            assert [e.name for e in changes(got)] == ["team"]
            assert texts(got) == [("team", "first words")]
        finally:
            await alice.close()
            await bob.close()

    run(scenario())
