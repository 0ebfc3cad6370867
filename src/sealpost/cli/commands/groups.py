"""``sealpost group``: create, add, remove, rename, leave, list."""

from __future__ import annotations

import argparse
from pathlib import Path

from sealpost.cli.command import Command, add_action
from sealpost.cli.errors import CliError
from sealpost.cli.output import names, print_json
from sealpost.cli.render import one_line
from sealpost.cli.session import handle_events, with_client
from sealpost.client.client import Client
from sealpost.protocol.groupstate import MAX_GROUP_NAME

__all__ = ["COMMANDS"]


def _group_name(name: str) -> str:
    name = name.removeprefix("#")
    if not 1 <= len(name.encode("utf-8")) <= MAX_GROUP_NAME or not name.isprintable():
        raise CliError(f"a group name is 1 to {MAX_GROUP_NAME} bytes of printable text", 2)
    return name


def _arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="group_command", required=True, metavar="ACTION")
    g = add_action(actions, "create", "a new group with you as its admin")
    g.add_argument("name")
    g.add_argument("members", nargs="+", metavar="MEMBER")
    for action, text in (("add", "add members (admins)"), ("remove", "remove members (admins)")):
        g = add_action(actions, action, text)
        g.add_argument("group")
        g.add_argument("members", nargs="+", metavar="MEMBER")
    g = add_action(actions, "rename", "rename a group (admins)")
    g.add_argument("group")
    g.add_argument("name")
    g = add_action(actions, "leave", "leave a group")
    g.add_argument("group")
    add_action(actions, "list", "your groups")


async def cmd_group(args: argparse.Namespace, profile: Path) -> int:
    if args.group_command in ("create", "rename"):
        args.name = _group_name(args.name)

    async def body(client: Client) -> int:
        action = args.group_command
        if action == "list":
            for group in client.groups():
                if args.json:
                    print_json(group.to_json())
                else:
                    state = "" if group.member else " (not a member)"
                    print(f"#{one_line(group.name)}{state}: {names(group.members)}")
            return 0
        if action == "create":
            view = await client.create_group(args.name, args.members)
        elif action == "add":
            view = await client.group_add(args.group, args.members)
        elif action == "remove":
            view = await client.group_remove(args.group, args.members)
        elif action == "rename":
            view = await client.group_rename(args.group, args.name)
        else:
            view = await client.group_leave(args.group)
        await handle_events(client, client.take_events(), False)
        print(f"#{one_line(view.name)} (version {view.version}): {names(view.members)}")
        return 0

    return await with_client(profile, body, read_only=args.group_command == "list")


COMMANDS = (Command("group", "create and manage groups", _arguments, cmd_group, json=True),)
