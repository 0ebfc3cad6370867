"""The client commands that manage the account rather than read or send messages:
groups, linking and devices, safety numbers and verification, the passcode, alarms and
the key-transparency audit."""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from pathlib import Path

from sealpost.cli.errors import CliError
from sealpost.cli.output import print_json
from sealpost.cli.passcode import PASSCODE_ENV, new_passcode, prompt_line, read_passcode
from sealpost.cli.render import one_line, timestamp
from sealpost.cli.session import handle_events, open_client, server_url, with_client
from sealpost.client.audit import AuditFailure, Auditor
from sealpost.client.client import Client
from sealpost.client.preflight import check_server
from sealpost.client.store import ProfileExists, Store
from sealpost.protocol.errors import ProtocolError
from sealpost.protocol.groupstate import MAX_GROUP_NAME
from sealpost.protocol.linking import LinkCode

__all__ = [
    "cmd_alarms",
    "cmd_audit",
    "cmd_devices",
    "cmd_group",
    "cmd_link",
    "cmd_passcode",
    "cmd_safety_number",
    "cmd_verify",
]


def _names(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(one_line(n) for n in names)


def _group_name(name: str) -> str:
    name = name.removeprefix("#")
    if not 1 <= len(name.encode("utf-8")) <= MAX_GROUP_NAME or not name.isprintable():
        raise CliError(f"a group name is 1 to {MAX_GROUP_NAME} bytes of printable text", 2)
    return name


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
                    print(f"#{one_line(group.name)}{state}: {_names(group.members)}")
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
        print(f"#{one_line(view.name)} (version {view.version}): {_names(view.members)}")
        return 0

    return await with_client(profile, body, read_only=args.group_command == "list")


async def cmd_link(args: argparse.Namespace, profile: Path) -> int:
    if args.link_command == "new":
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


def _show_safety_number(client: Client, contact: str, qr: bool) -> None:
    from sealpost.protocol.safety import safety_number_lines

    number = client.safety_number(contact)
    print(f"Safety number with {one_line(contact)}:")
    for line in safety_number_lines(number):
        print("  " + line)
    if qr:
        from sealpost.client.qr import qr_text

        print(qr_text(client.safety_qr_payload(contact)))


async def cmd_safety_number(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        await client.lookup(args.contact)
        await handle_events(client, client.take_events(), False)
        _show_safety_number(client, args.contact, not args.no_qr)
        return 0

    return await with_client(profile, body)


async def cmd_verify(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        await client.lookup(args.contact)
        await handle_events(client, client.take_events(), False)
        _show_safety_number(client, args.contact, False)
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError("confirm in a terminal, or pass --yes after comparing", 2)
            answer = prompt_line(
                input, f"Does {one_line(args.contact)} see the same number? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("not verified")
                return 1
        client.verify(args.contact)
        print(f"{one_line(args.contact)} is verified")
        return 0

    return await with_client(profile, body)


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


async def cmd_alarms(args: argparse.Namespace, profile: Path) -> int:
    client = await open_client(profile, read_only=not args.dismiss)
    try:
        if args.dismiss:
            if args.dismiss == ["all"]:
                count = await client.dismiss_alarms(None)
            else:
                try:
                    ids = [int(i) for i in args.dismiss]
                except ValueError:
                    raise CliError("alarm ids are numbers (or 'all')", 2) from None
                count = await client.dismiss_alarms(ids)
            print(f"dismissed {count} alarm{'s' if count != 1 else ''}")
            return 0
        alarms = client.alarms(include_dismissed=args.all)
        for alarm in alarms:
            if args.json:
                print_json(alarm.to_json())
            else:
                state = " (dismissed)" if alarm.dismissed else ""
                print(
                    f"{alarm.alarm_id}  {timestamp(alarm.raised * 1000)}  "
                    f"{one_line(alarm.kind)}{state}\n"
                    f"    {one_line(alarm.subject)}: {one_line(alarm.meaning)}\n"
                    f"    {one_line(alarm.detail)}"
                )
        if not alarms and not args.json:
            print("no alarms")
        return 0
    finally:
        await client.close()


async def cmd_audit(args: argparse.Namespace, profile: Path) -> int:
    log_key = None
    if args.log_key:
        try:
            log_key = base64.b64decode(args.log_key, validate=True)
        except ValueError:
            raise CliError("--log-key is base64", 2) from None
        if len(log_key) != 32:
            raise CliError("--log-key is a 32-byte Ed25519 public key", 2)
    state = args.state or profile.parent / "audit" / _safe_name(args.server)
    auditor = Auditor(server_url(args.server), state, log_key=log_key)
    while True:
        try:
            report = await auditor.check()
        except AuditFailure as failure:
            if args.json and failure.report is not None:
                print_json(failure.report.to_json())
            raise CliError(
                f"AUDIT FAILED for {one_line(args.server)}: {one_line(failure.detail)}", 8
            ) from None
        if args.json:
            print_json(report.to_json())
        else:
            print(
                f"{one_line(args.server)}: tree size {report.tree_size}, "
                f"root {report.root.hex()[:16]}…: {one_line(report.detail)}",
                flush=True,
            )
        if not args.loop:
            return 0
        await asyncio.sleep(args.loop)


def _safe_name(url: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in url)
