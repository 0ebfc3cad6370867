"""Device commands: ``link new`` (on the new device), ``link accept`` (on a linked one),
``devices`` and ``devices remove``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sealpost.cli.command import Command, add_action
from sealpost.cli.errors import CliError
from sealpost.cli.output import print_json
from sealpost.cli.passcode import PASSCODE_ENV, new_passcode, prompt_line
from sealpost.cli.render import one_line, timestamp
from sealpost.cli.session import server_url, with_client
from sealpost.client.client import Client
from sealpost.client.preflight import check_server
from sealpost.client.store import ProfileExists, Store
from sealpost.protocol.errors import ProtocolError
from sealpost.protocol.linking import LinkCode

__all__ = ["COMMANDS"]


def _link_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="link_command", required=True, metavar="ACTION")
    g = add_action(actions, "new", "on the NEW device: show a link code and wait")
    g.add_argument("--server", required=True, metavar="URL")
    g.add_argument("--name", required=True, metavar="DEVICE_NAME", help="e.g. laptop")
    g.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    g = add_action(actions, "accept", "on an EXISTING device: provision the new one")
    g.add_argument("code", help="the link code the new device shows")
    g.add_argument(
        "--confirm-code",
        metavar="DIGITS",
        help="the confirmation code the new device shows (non-interactive use)",
    )


async def cmd_link(args: argparse.Namespace, profile: Path) -> int:
    if args.link_command == "new":
        return await _link_new(args, profile)
    try:
        LinkCode.from_text(args.code)
    except ProtocolError:
        raise CliError(
            "that is not a link code: copy the whole code the new device shows "
            "(it starts with 'sealpost-link:')",
            2,
        ) from None

    async def body(client: Client) -> int:
        def confirm(name: str, code: str) -> bool:
            print(
                f"Link the device '{one_line(name)}' to your account {one_line(client.username)}?"
            )
            print(f"It must show the code: {code}")
            if args.confirm_code is not None:
                return "".join(args.confirm_code.split()) == code.replace(" ", "")
            if not sys.stdin.isatty():
                raise CliError("confirm in a terminal, or pass --confirm-code", 2)
            answer = prompt_line(
                input, "Does it show that code, and did you start this link? [y/N] "
            )
            return answer.strip().lower() in ("y", "yes")

        device_id = await client.link_accept(args.code, confirm)
        print(f"provisioned device {device_id}")
        return 0

    return await with_client(profile, body)


async def _link_new(args: argparse.Namespace, profile: Path) -> int:
    server_url(args.server)
    if Store.exists(profile):
        raise ProfileExists("a profile already exists there")
    await check_server(args.server)
    passcode = new_passcode("Choose a passcode for this device: ", PASSCODE_ENV)

    def show(code: str, confirmation: str) -> None:
        from sealpost.client.qr import qr_text

        print("On a device already linked to your account, run")
        print(f"  sealpost link accept {code}")
        print("or scan this code with it:")
        print(qr_text(code.encode()))
        print(f"It will ask you to confirm this code: {confirmation}", flush=True)

    client = await Client.link_new(
        profile,
        passcode,
        server_url=args.server,
        device_name=args.name,
        show=show,
        timeout=args.timeout,
    )
    try:
        print(f"linked as device {client.device_id} of {one_line(client.username)}")
    finally:
        await client.close()
    return 0


def _devices_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="devices_command", metavar="ACTION")
    g = add_action(actions, "remove", "revoke a device (its certificate is revoked)")
    g.add_argument("device_id", type=int)


async def cmd_devices(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        if args.devices_command == "remove":
            await client.remove_device(args.device_id)
            print(f"device {args.device_id} removed")
            return 0
        for device in await client.devices():
            if args.json:
                print_json(device)
            else:
                mark = " (this device)" if device["current"] else ""
                created = timestamp(int(device["created"]) * 1000)
                print(f"{device['device_id']}: {one_line(device['name'])}, linked {created}{mark}")
        return 0

    return await with_client(profile, body)


COMMANDS = (
    Command("link", "link another device to this account", _link_arguments, cmd_link),
    Command("devices", "this account's devices", _devices_arguments, cmd_devices, json=True),
)
