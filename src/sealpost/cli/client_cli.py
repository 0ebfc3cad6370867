"""The client half of the ``sealpost`` command line.

The contract scripts rely on (names, flags, JSON fields, exit codes) is in README.md.
Every command that opens a profile asks for its passcode at a prompt, or reads
``SEALPOST_PASSCODE`` (weaker: other processes of the same user can read a process's
environment, and it may end up in shell history). Errors are one line on stderr with a
non-zero exit status; ``--debug`` shows the traceback as well.

Exit codes: 0 success, 1 any other error, 2 usage, 3 wrong passcode or locked profile,
4 server unreachable or refusing, 5 unknown contact, 6 a verified contact's key changed,
7 a key-transparency check failed (the server's answer contradicts its log; an alarm is
raised), 8 ``sealpost audit`` found the log inconsistent.

Key-transparency alarms are printed on stderr by every command that opens a profile,
until they are dismissed with ``sealpost alarms --dismiss``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sealpost.client.audit import AuditFailure, Auditor
from sealpost.client.client import (
    AlarmRaised,
    Client,
    DeviceLinked,
    DeviceRemoved,
    Event,
    GroupChanged,
    KeyChanged,
    Message,
    MessageDeleted,
    MessageReceived,
    TimerChanged,
)
from sealpost.client.errors import (
    ClientError,
    ServerError,
    ServerUnavailable,
    TransparencyFailure,
    UnknownContact,
    UntrustedContact,
)
from sealpost.client.store import (
    NoProfile,
    ProfileExists,
    ProfileWiped,
    StoreError,
    TooManyAttempts,
    WrongPasscode,
)
from sealpost.protocol.content import MAX_TIMER

if TYPE_CHECKING:
    from sealpost.client.attachments import ProgressBar

__all__ = ["add_client_commands", "run_client_command"]

PASSCODE_ENV = "SEALPOST_PASSCODE"
NEW_PASSCODE_ENV = "SEALPOST_NEW_PASSCODE"  # for 'passcode change' in scripts
PROFILE_ENV = "SEALPOST_PROFILE"
MIN_PASSCODE = 6


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def default_profile() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sealpost" / "default"


def add_client_commands(sub: Any) -> None:
    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        return p

    p = command("init", "create keys and register an account on a server")
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

    p = command("send", "send a message to a contact or a group (#name for a group)")
    p.add_argument("contact")
    p.add_argument("text", nargs="?", default="", help="the text, or - to read it from stdin")
    p.add_argument("--file", type=Path, metavar="PATH", help="attach a file (up to 100 MiB)")

    p = command("receive", "fetch, store and print what is queued for this device")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--save-dir", type=Path, metavar="DIR", help="save attachments here")

    p = command("listen", "stay connected and print messages as they arrive")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--save-dir", type=Path, metavar="DIR", help="save attachments here")

    p = command("group", "create and manage groups")
    gsub = p.add_subparsers(dest="group_command", required=True, metavar="ACTION")
    g = gsub.add_parser("create", help="a new group with you as its admin")
    g.add_argument("name")
    g.add_argument("members", nargs="+", metavar="MEMBER")
    for action, text in (("add", "add members (admins)"), ("remove", "remove members (admins)")):
        g = gsub.add_parser(action, help=text)
        g.add_argument("group")
        g.add_argument("members", nargs="+", metavar="MEMBER")
    g = gsub.add_parser("rename", help="rename a group (admins)")
    g.add_argument("group")
    g.add_argument("name")
    g = gsub.add_parser("leave", help="leave a group")
    g.add_argument("group")
    g = gsub.add_parser("list", help="your groups")
    g.add_argument("--json", action="store_true")

    p = command("link", "link another device to this account")
    lsub = p.add_subparsers(dest="link_command", required=True, metavar="ACTION")
    g = lsub.add_parser("new", help="on the NEW device: show a link code and wait")
    g.add_argument("--server", required=True, metavar="URL")
    g.add_argument("--name", required=True, metavar="DEVICE_NAME", help="e.g. laptop")
    g.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    g = lsub.add_parser("accept", help="on an EXISTING device: provision the new one")
    g.add_argument("code", help="the link code the new device shows")
    g.add_argument(
        "--confirm-code",
        metavar="DIGITS",
        help="the confirmation code the new device shows (non-interactive use)",
    )

    p = command("devices", "this account's devices")
    p.add_argument("--json", action="store_true")
    dsub = p.add_subparsers(dest="devices_command", metavar="ACTION")
    g = dsub.add_parser("remove", help="revoke a device (its certificate is revoked)")
    g.add_argument("device_id", type=int)

    p = command("timer", "disappearing messages for a conversation")
    p.add_argument("contact", help="a contact or a group")
    p.add_argument("duration", help="e.g. 30s, 10m, 1h, 1d, 1w, or off")

    p = command("delete", "delete a message you sent, for everyone")
    p.add_argument("contact", help="the conversation (a contact or a group)")
    p.add_argument("message_id", help="the id 'send' printed (hex)")

    p = command("history", "the conversation with a contact or a group")
    p.add_argument("contact")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=1000)

    p = command("contacts", "your contacts and their verification status")
    p.add_argument("--json", action="store_true")

    p = command("safety-number", "the safety number to compare with a contact")
    p.add_argument("contact")
    p.add_argument("--no-qr", action="store_true", help="digits only")

    p = command("verify", "mark a contact's safety number as checked")
    p.add_argument("contact")
    p.add_argument("--yes", action="store_true", help="do not ask (you compared it already)")

    p = command("passcode", "manage the profile's passcode")
    passcode_sub = p.add_subparsers(dest="passcode_command", required=True, metavar="ACTION")
    passcode_sub.add_parser("change", help="set a new passcode (the data is not re-encrypted)")

    p = command("alarms", "key-transparency alarms: what the server did that it must not")
    p.add_argument("--json", action="store_true", help="one JSON object per alarm")
    p.add_argument("--all", action="store_true", help="include dismissed alarms")
    p.add_argument(
        "--dismiss", nargs="+", metavar="ID", help="dismiss these alarms ('all' for every one)"
    )

    p = command("audit", "witness a server's key-transparency log (no profile needed)")
    p.add_argument("--server", required=True, metavar="URL")
    p.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="where the newest checked head is kept (default: beside the profile)",
    )
    p.add_argument("--log-key", metavar="B64", help="the log key to pin (default: first seen)")
    p.add_argument("--loop", type=float, metavar="SECONDS", help="check again every SECONDS")
    p.add_argument("--json", action="store_true", help="one JSON report per check")

    p = command("whoami", "this profile's account and server")
    p.add_argument("--json", action="store_true")

    command("demo", "a temporary server and two profiles exchanging messages")


CLIENT_COMMANDS = (
    "init",
    "send",
    "receive",
    "listen",
    "group",
    "link",
    "devices",
    "timer",
    "delete",
    "history",
    "contacts",
    "safety-number",
    "verify",
    "passcode",
    "alarms",
    "audit",
    "whoami",
    "demo",
)


# ---------------------------------------------------------------------- passcodes


def _ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise CliError(f"no passcode: set {PASSCODE_ENV} or run in a terminal", 3)
        return line.rstrip("\n")
    return getpass.getpass(prompt)


def read_passcode() -> str:
    env = os.environ.get(PASSCODE_ENV)
    if env is not None:
        return env
    return _ask("Passcode: ")


def new_passcode(prompt: str = "New passcode: ", env_name: str = NEW_PASSCODE_ENV) -> str:
    """A passcode being set: asked twice at a terminal, or read from ``env_name``."""
    env = os.environ.get(env_name)
    if env is not None:
        passcode = env
    else:
        passcode = _ask(prompt)
        if sys.stdin.isatty() and _ask("Again: ") != passcode:
            raise CliError("the two passcodes differ", 2)
    if len(passcode) < MIN_PASSCODE:
        raise CliError(f"a passcode needs at least {MIN_PASSCODE} characters", 2)
    return passcode


# ---------------------------------------------------------------------- output


def _time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def print_message(message: Message, as_json: bool, out: TextIO = sys.stdout) -> None:
    if as_json:
        print(json.dumps(message.to_json(), ensure_ascii=False), file=out, flush=True)
        return
    where = f"#{message.peer}" if message.group else message.peer
    text = message.text
    if message.attachment is not None:
        a = message.attachment
        saved = f", saved to {a.saved_to}" if a.saved_to else ""
        text = f"{text} [file {a.filename}, {a.size} bytes{saved}]".strip()
    if message.outgoing:
        print(f"[{_time(message.sent_at)}] me → {where}: {text}", file=out, flush=True)
    elif message.group:
        print(
            f"[{_time(message.sent_at)}] {message.author} in {where}: {text}", file=out, flush=True
        )
    else:
        print(f"[{_time(message.sent_at)}] {where}: {text}", file=out, flush=True)


def progress_bar(label: str) -> ProgressBar:
    from sealpost.client.attachments import ProgressBar

    return ProgressBar(label)


def warn_key_change(event: KeyChanged) -> None:
    if event.verified:
        print(
            f"sealpost: WARNING: {event.peer}'s safety number changed since you verified it. "
            f"Nothing will be sent to {event.peer} until you compare it again "
            f"(sealpost safety-number {event.peer}) and run 'sealpost verify {event.peer}'.",
            file=sys.stderr,
        )
    else:
        print(
            f"sealpost: warning: {event.peer}'s safety number changed (a new phone, or "
            f"someone in between). Compare it: sealpost safety-number {event.peer}",
            file=sys.stderr,
        )


async def _handle_events(
    client: Client, events: list[Event], as_json: bool, save_dir: Path | None = None
) -> None:
    for event in events:
        if isinstance(event, MessageReceived):
            message = event.message
            if save_dir is not None and message.attachment is not None:
                with progress_bar(message.attachment.filename) as bar:
                    saved = await client.save_attachment(message.id, save_dir, progress=bar)
                attachment = dataclasses.replace(message.attachment, saved_to=str(saved))
                message = dataclasses.replace(message, attachment=attachment)
            print_message(message, as_json)
        elif isinstance(event, KeyChanged):
            warn_key_change(event)
            if not event.verified:
                client.acknowledge_key_change(event.peer)
        else:
            _print_notice(event, as_json)


def _print_notice(event: Event, as_json: bool) -> None:
    if isinstance(event, DeviceLinked):
        doc = {"event": "device_linked", "device_id": event.device_id, "name": event.name}
        text = f"a device was linked to your account: {event.name} (device {event.device_id})"
    elif isinstance(event, DeviceRemoved):
        doc = {"event": "device_removed", "device_id": event.device_id, "name": event.name}
        text = f"a device was removed from your account: {event.name} ({event.device_id})"
    elif isinstance(event, GroupChanged):
        doc = {
            "event": "group_changed",
            "group": event.group.hex(),
            "name": event.name,
            "by": event.by,
            "added": list(event.added),
            "removed": list(event.removed),
            "member": event.member,
        }
        parts = [f"#{event.name} changed by {event.by}"]
        if event.added:
            parts.append("added " + ", ".join(event.added))
        if event.removed:
            parts.append("removed " + ", ".join(event.removed))
        text = "; ".join(parts)
    elif isinstance(event, TimerChanged):
        where = f"#{event.peer}" if event.group else event.peer
        doc = {
            "event": "timer_changed",
            "peer": event.peer,
            "seconds": event.seconds,
            "by": event.by,
        }
        text = f"{event.by} set disappearing messages in {where} to {_duration(event.seconds)}"
    elif isinstance(event, AlarmRaised):
        alarm = event.alarm
        doc = {"event": "alarm"} | alarm.to_json()
        text = f"ALARM {alarm.alarm_id}: {alarm.meaning}: {alarm.detail}"
    elif isinstance(event, MessageDeleted):
        doc = {
            "event": "message_deleted",
            "peer": event.peer,
            "id": event.message_id.hex(),
            "by": event.by,
        }
        text = f"{event.by} deleted a message in {event.peer}"
    else:
        return
    if as_json:
        print(json.dumps(doc), flush=True)
    else:
        print(f"sealpost: {text}", file=sys.stderr, flush=True)


DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``30s``, ``10m``, ``1h``, ``1d``, ``1w``, a number of seconds, or ``off``."""
    text = text.strip().lower()
    if text in ("off", "0"):
        return 0
    unit = DURATIONS.get(text[-1:])
    number = text[:-1] if unit else text
    if not number.isdigit():
        raise CliError(f"not a duration: {text!r} (try 30s, 10m, 1h, 1d, 1w or off)", 2)
    seconds = int(number) * (unit or 1)
    if not 0 < seconds <= MAX_TIMER:
        raise CliError("a timer is from 1 second to a year", 2)
    return seconds


def _duration(seconds: int) -> str:
    if seconds == 0:
        return "off"
    for suffix, size in reversed(DURATIONS.items()):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"


# ---------------------------------------------------------------------- commands


async def _open(profile: Path) -> Client:
    return await Client.open(profile, read_passcode())


def _show_alarms(client: Client, shown: set[int]) -> None:
    """Print the alarms not dismissed (and not shown yet by this command) on stderr."""
    for alarm in client.alarms():
        if alarm.alarm_id in shown:
            continue
        shown.add(alarm.alarm_id)
        print(
            f"sealpost: ALARM {alarm.alarm_id} ({alarm.subject}): {alarm.meaning}: "
            f"{alarm.detail}. See 'sealpost alarms'.",
            file=sys.stderr,
            flush=True,
        )


async def _with_client(profile: Path, body: Callable[[Client], Awaitable[int]]) -> int:
    client = await _open(profile)
    shown: set[int] = set()
    try:
        _show_alarms(client, shown)
        return await body(client)
    finally:
        try:
            _show_alarms(client, shown)  # raised while this command ran
        finally:
            await client.close()


async def cmd_init(args: argparse.Namespace, profile: Path) -> int:
    passcode = new_passcode("Choose a passcode: ", PASSCODE_ENV)
    client = await Client.create(
        profile,
        passcode,
        server_url=args.server,
        username=args.username,
        device_name=args.device_name,
        wipe_after=args.wipe_after,
    )
    try:
        print(f"registered {client.username} on {client.server_url} (profile {profile})")
    finally:
        await client.close()
    return 0


async def cmd_send(args: argparse.Namespace, profile: Path) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.text == "-":
        text = text.rstrip("\n")
    if not text and args.file is None:
        raise CliError("nothing to send: the text is empty", 2)
    if args.file is not None and not args.file.is_file():
        raise CliError(f"no such file: {args.file}", 2)

    async def body(client: Client) -> int:
        if not client.is_group(args.contact):
            await client.lookup(args.contact)  # notices a changed key before encrypting
        with progress_bar(args.file.name if args.file else "") as bar:
            message = await client.send(
                args.contact, text, file=args.file, progress=bar if args.file else None
            )
        await _handle_events(client, client.take_events(), False)
        print(message.id.hex())
        return 0

    return await _with_client(profile, body)


async def cmd_receive(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        events = await client.receive(wait=args.wait)
        await _handle_events(client, events, args.json, args.save_dir)
        return 0

    return await _with_client(profile, body)


async def cmd_listen(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        async for event in client.events():
            await _handle_events(client, [event], args.json, args.save_dir)
        return 0

    return await _with_client(profile, body)


async def cmd_group(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        action = args.group_command
        if action == "list":
            for group in client.groups():
                if args.json:
                    print(json.dumps(group.to_json()))
                else:
                    state = "" if group.member else " (not a member)"
                    print(f"#{group.name}{state}: {', '.join(group.members)}")
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
        await _handle_events(client, client.take_events(), False)
        print(f"#{view.name} (version {view.version}): {', '.join(view.members)}")
        return 0

    return await _with_client(profile, body)


async def cmd_link(args: argparse.Namespace, profile: Path) -> int:
    if args.link_command == "new":
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
            print(f"linked as device {client.device_id} of {client.username}")
        finally:
            await client.close()
        return 0

    async def body(client: Client) -> int:
        def confirm(name: str, code: str) -> bool:
            print(f"Link the device {name!r} to your account {client.username}?")
            print(f"It must show the code: {code}")
            if args.confirm_code is not None:
                return "".join(args.confirm_code.split()) == code.replace(" ", "")
            if not sys.stdin.isatty():
                raise CliError("confirm in a terminal, or pass --confirm-code", 2)
            answer = input("Does it show that code, and did you start this link? [y/N] ")
            return answer.strip().lower() in ("y", "yes")

        device_id = await client.link_accept(args.code, confirm)
        print(f"provisioned device {device_id}")
        return 0

    return await _with_client(profile, body)


async def cmd_devices(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        if args.devices_command == "remove":
            await client.remove_device(args.device_id)
            print(f"device {args.device_id} removed")
            return 0
        for device in await client.devices():
            if args.json:
                print(json.dumps(device))
            else:
                mark = " (this device)" if device["current"] else ""
                created = _time(int(device["created"]) * 1000)
                print(f"{device['device_id']}: {device['name']}, linked {created}{mark}")
        return 0

    return await _with_client(profile, body)


async def cmd_timer(args: argparse.Namespace, profile: Path) -> int:
    seconds = parse_duration(args.duration)

    async def body(client: Client) -> int:
        await client.set_timer(args.contact, seconds)
        print(f"disappearing messages: {_duration(seconds)}")
        return 0

    return await _with_client(profile, body)


async def cmd_delete(args: argparse.Namespace, profile: Path) -> int:
    try:
        message_id = bytes.fromhex(args.message_id)
    except ValueError:
        raise CliError("a message id is hex", 2) from None

    async def body(client: Client) -> int:
        await client.delete_for_everyone(args.contact, message_id)
        print("deleted for everyone")
        return 0

    return await _with_client(profile, body)


async def cmd_history(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        for message in client.history(args.contact, args.limit):
            print_message(message, args.json)
        return 0

    return await _with_client(profile, body)


async def cmd_contacts(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        for contact in client.contacts():
            if args.json:
                print(json.dumps(contact.to_json()))
            else:
                state = "verified" if contact.verified else "not verified"
                if contact.key_changed:
                    state += ", KEY CHANGED"
                print(f"{contact.username}  ({state})")
        return 0

    return await _with_client(profile, body)


def _show_safety_number(client: Client, contact: str, qr: bool) -> None:
    from sealpost.protocol.safety import safety_number_lines

    number = client.safety_number(contact)
    print(f"Safety number with {contact}:")
    for line in safety_number_lines(number):
        print("  " + line)
    if qr:
        from sealpost.client.qr import qr_text

        print(qr_text(client.safety_qr_payload(contact)))


async def cmd_safety_number(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        await client.lookup(args.contact)
        await _handle_events(client, client.take_events(), False)
        _show_safety_number(client, args.contact, not args.no_qr)
        return 0

    return await _with_client(profile, body)


async def cmd_verify(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        await client.lookup(args.contact)
        await _handle_events(client, client.take_events(), False)
        _show_safety_number(client, args.contact, False)
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError("confirm in a terminal, or pass --yes after comparing", 2)
            answer = input(f"Does {args.contact} see the same number? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("not verified")
                return 1
        client.verify(args.contact)
        print(f"{args.contact} is verified")
        return 0

    return await _with_client(profile, body)


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


async def cmd_whoami(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        info = client.whoami() | {"profile": str(profile)}
        if args.json:
            print(json.dumps(info))
        else:
            print(f"{info['username']} on {info['server']} (device {info['device_id']})")
        return 0

    return await _with_client(profile, body)


async def cmd_alarms(args: argparse.Namespace, profile: Path) -> int:
    client = await _open(profile)
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
                print(json.dumps(alarm.to_json()))
            else:
                state = " (dismissed)" if alarm.dismissed else ""
                print(
                    f"{alarm.alarm_id}  {_time(alarm.raised * 1000)}  {alarm.kind}{state}\n"
                    f"    {alarm.subject}: {alarm.meaning}\n    {alarm.detail}"
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
    auditor = Auditor(args.server, state, log_key=log_key)
    while True:
        try:
            report = await auditor.check()
        except AuditFailure as failure:
            if args.json and failure.report is not None:
                print(json.dumps(failure.report.to_json()), flush=True)
            raise CliError(f"AUDIT FAILED for {args.server}: {failure.detail}", 8) from None
        if args.json:
            print(json.dumps(report.to_json()), flush=True)
        else:
            print(
                f"{args.server}: tree size {report.tree_size}, root {report.root.hex()[:16]}…: "
                f"{report.detail}",
                flush=True,
            )
        if not args.loop:
            return 0
        await asyncio.sleep(args.loop)


def _safe_name(url: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in url)


async def cmd_demo(args: argparse.Namespace, profile: Path) -> int:
    from sealpost.cli.demo import run_demo

    return await run_demo()


COMMANDS: dict[str, Callable[[argparse.Namespace, Path], Coroutine[Any, Any, int]]] = {
    "init": cmd_init,
    "send": cmd_send,
    "receive": cmd_receive,
    "listen": cmd_listen,
    "group": cmd_group,
    "link": cmd_link,
    "devices": cmd_devices,
    "timer": cmd_timer,
    "delete": cmd_delete,
    "history": cmd_history,
    "contacts": cmd_contacts,
    "safety-number": cmd_safety_number,
    "verify": cmd_verify,
    "passcode": cmd_passcode,
    "alarms": cmd_alarms,
    "audit": cmd_audit,
    "whoami": cmd_whoami,
    "demo": cmd_demo,
}


def _describe(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, WrongPasscode):
        return "wrong passcode", 3
    if isinstance(exc, TooManyAttempts):
        return f"too many wrong passcodes; try again in {exc.retry_after:.0f} s", 3
    if isinstance(exc, ProfileWiped):
        return "this profile was wiped after too many wrong passcodes", 3
    if isinstance(exc, NoProfile):
        return "no profile here; create one with 'sealpost init'", 1
    if isinstance(exc, ProfileExists):
        return "a profile already exists here (use --profile DIR for another)", 1
    if isinstance(exc, UnknownContact):
        return str(exc), 5
    if isinstance(exc, UntrustedContact):
        return str(exc), 6
    if isinstance(exc, TransparencyFailure):
        return f"{exc} (nothing was sent; see 'sealpost alarms')", 7
    if isinstance(exc, ServerUnavailable):
        return f"server unavailable: {exc}", 4
    if isinstance(exc, ServerError):
        return f"the server refused: {exc.message} ({exc.code})", 4
    if isinstance(exc, ClientError | StoreError):
        return str(exc) or type(exc).__name__, 1
    return f"unexpected error: {type(exc).__name__}: {exc}", 1


def run_client_command(args: argparse.Namespace) -> int:
    profile = Path(args.profile or os.environ.get(PROFILE_ENV) or default_profile())
    try:
        return asyncio.run(COMMANDS[args.command](args, profile))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message, code = _describe(exc)
        print(f"sealpost: {message}", file=sys.stderr)
        if args.debug:
            import traceback

            traceback.print_exc()
        return code
