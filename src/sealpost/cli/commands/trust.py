"""Trust commands: ``contacts`` (and their verification), ``safety-number``, ``verify``,
``alarms`` (what the server did that it must not) and ``audit`` (a key-transparency witness
that needs no profile)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from pathlib import Path

from sealpost.cli.command import Command, no_arguments
from sealpost.cli.errors import CliError
from sealpost.cli.output import print_json
from sealpost.cli.passcode import prompt_line
from sealpost.cli.render import one_line, timestamp
from sealpost.cli.session import handle_events, open_client, server_url, with_client
from sealpost.client.audit import AuditFailure, Auditor
from sealpost.client.client import Client

__all__ = ["COMMANDS"]


async def cmd_contacts(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        for contact in client.contacts():
            if args.json:
                print_json(contact.to_json())
            else:
                state = "verified" if contact.verified else "not verified"
                if contact.key_changed:
                    state += ", KEY CHANGED"
                print(f"{one_line(contact.username)}  ({state})")
        return 0

    return await with_client(profile, body, read_only=True)


# ---------------------------------------------------------------------- safety numbers


def _show_safety_number(client: Client, contact: str, qr: bool) -> None:
    from sealpost.protocol.safety import safety_number_lines

    number = client.safety_number(contact)
    print(f"Safety number with {one_line(contact)}:")
    for line in safety_number_lines(number):
        print("  " + line)
    if qr:
        from sealpost.client.qr import qr_text

        print(qr_text(client.safety_qr_payload(contact)))


def _safety_number_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("contact")
    p.add_argument("--no-qr", action="store_true", help="digits only")


async def cmd_safety_number(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        await client.lookup(args.contact)
        await handle_events(client, client.take_events(), False)
        _show_safety_number(client, args.contact, not args.no_qr)
        return 0

    return await with_client(profile, body)


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("contact")
    p.add_argument("--yes", action="store_true", help="do not ask (you compared it already)")


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


# ---------------------------------------------------------------------- alarms and audit


def _alarms_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="include dismissed alarms")
    p.add_argument(
        "--dismiss", nargs="+", metavar="ID", help="dismiss these alarms ('all' for every one)"
    )


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


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, metavar="URL")
    p.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="where the newest checked head is kept (default: beside the profile)",
    )
    p.add_argument("--log-key", metavar="B64", help="the log key to pin (default: first seen)")
    p.add_argument("--loop", type=float, metavar="SECONDS", help="check again every SECONDS")


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


COMMANDS = (
    Command(
        "contacts",
        "your contacts and their verification status",
        no_arguments,
        cmd_contacts,
        json=True,
    ),
    Command(
        "safety-number",
        "the safety number to compare with a contact",
        _safety_number_arguments,
        cmd_safety_number,
    ),
    Command("verify", "mark a contact's safety number as checked", _verify_arguments, cmd_verify),
    Command(
        "alarms",
        "key-transparency alarms: what the server did that it must not",
        _alarms_arguments,
        cmd_alarms,
        json=True,
    ),
    Command(
        "audit",
        "witness a server's key-transparency log (no profile needed)",
        _audit_arguments,
        cmd_audit,
        json=True,
    ),
)
