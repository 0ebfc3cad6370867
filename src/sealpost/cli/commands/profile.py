"""Profile commands: ``init`` (create keys and register), ``whoami``, ``passcode change``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from sealpost.cli.command import Command, add_action, no_arguments
from sealpost.cli.output import print_json
from sealpost.cli.passcode import PASSCODE_ENV, new_passcode, read_passcode
from sealpost.cli.render import one_line
from sealpost.cli.session import server_url, with_client
from sealpost.client.client import Client
from sealpost.client.preflight import check_new_account
from sealpost.client.store import ProfileExists, Store

__all__ = ["COMMANDS"]


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server", required=True, metavar="URL", help="the relay, e.g. http://host:8765"
    )
    p.add_argument("--username", required=True, metavar="NAME", help="3-32 of a-z 0-9 _ . -")
    p.add_argument(
        "--wipe-after",
        type=int,
        default=None,
        metavar="N",
        help="destroy the profile's key after N wrong passcodes in a row",
    )
    p.add_argument("--device-name", default="primary", metavar="NAME")
    p.add_argument(
        "--invite", metavar="CODE", help="the invite code the server's operator gave you"
    )


async def cmd_init(args: argparse.Namespace, profile: Path) -> int:
    # everything that can be checked is checked before the passcode is asked
    server_url(args.server)
    if Store.exists(profile):
        raise ProfileExists("a profile already exists there")
    await check_new_account(args.server, args.username)
    passcode = new_passcode("Choose a passcode: ", PASSCODE_ENV)
    client = await Client.create(
        profile,
        passcode,
        server_url=args.server,
        username=args.username,
        device_name=args.device_name,
        wipe_after=args.wipe_after,
        invite=args.invite,
    )
    try:
        print(
            f"registered {one_line(client.username)} on {one_line(client.server_url)} "
            f"(profile {one_line(profile)})"
        )
    finally:
        await client.close()
    return 0


async def cmd_whoami(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        info = client.whoami() | {"profile": str(profile)}
        if args.json:
            print_json(info)
        else:
            print(
                f"{one_line(info['username'])} on {one_line(info['server'])} "
                f"(device {info['device_id']})"
            )
        return 0

    return await with_client(profile, body, read_only=True)


def _passcode_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="passcode_command", required=True, metavar="ACTION")
    add_action(actions, "change", "set a new passcode (the data is not re-encrypted)")


async def cmd_passcode(args: argparse.Namespace, profile: Path) -> int:
    old = read_passcode()
    client = await Client.open(profile, old)
    try:
        new = new_passcode()
        await asyncio.to_thread(client.change_passcode, old, new)
        print("passcode changed")
    finally:
        await client.close()
    return 0


COMMANDS = (
    Command("init", "create keys and register an account on a server", _init_arguments, cmd_init),
    Command("whoami", "this profile's account and server", no_arguments, cmd_whoami, json=True),
    Command("passcode", "manage the profile's passcode", _passcode_arguments, cmd_passcode),
)
