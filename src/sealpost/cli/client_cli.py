"""The client half of the ``sealpost`` command line.

The contract scripts rely on (names, flags, JSON fields, exit codes) is in README.md.
Every command that opens a profile asks for its passcode at a prompt, or reads
``SEALPOST_PASSCODE`` (weaker: other processes of the same user can read a process's
environment, and it may end up in shell history). Errors are one line on stderr with a
non-zero exit status; ``--debug`` shows the traceback as well.

Exit codes: 0 success, 1 any other error, 2 usage, 3 wrong passcode or locked profile,
4 server unreachable or refusing, 5 unknown contact, 6 a verified contact's key changed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from sealpost.client.client import Client, Event, KeyChanged, Message, MessageReceived
from sealpost.client.errors import (
    ClientError,
    ServerError,
    ServerUnavailable,
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

    p = command("send", "send a message to a contact (a username on your server)")
    p.add_argument("contact")
    p.add_argument("text", help="the text, or - to read it from stdin")

    p = command("receive", "fetch, store and print what is queued for this device")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("listen", "stay connected and print messages as they arrive")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("history", "the conversation with a contact")
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

    p = command("whoami", "this profile's account and server")
    p.add_argument("--json", action="store_true")

    command("demo", "a temporary server and two profiles exchanging messages")


CLIENT_COMMANDS = (
    "init",
    "send",
    "receive",
    "listen",
    "history",
    "contacts",
    "safety-number",
    "verify",
    "passcode",
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
    elif message.outgoing:
        print(f"[{_time(message.sent_at)}] me → {message.peer}: {message.text}", file=out)
    else:
        print(f"[{_time(message.sent_at)}] {message.peer}: {message.text}", file=out, flush=True)


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


def _handle_events(client: Client, events: list[Event], as_json: bool) -> None:
    for event in events:
        if isinstance(event, MessageReceived):
            print_message(event.message, as_json)
        elif isinstance(event, KeyChanged):
            warn_key_change(event)
            if not event.verified:
                client.acknowledge_key_change(event.peer)


# ---------------------------------------------------------------------- commands


async def _open(profile: Path) -> Client:
    return await Client.open(profile, read_passcode())


async def _with_client(profile: Path, body: Callable[[Client], Awaitable[int]]) -> int:
    client = await _open(profile)
    try:
        return await body(client)
    finally:
        await client.close()


async def cmd_init(args: argparse.Namespace, profile: Path) -> int:
    passcode = new_passcode("Choose a passcode: ", PASSCODE_ENV)
    client = await Client.create(
        profile,
        passcode,
        server_url=args.server,
        username=args.username,
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
    if not text:
        raise CliError("nothing to send: the text is empty", 2)

    async def body(client: Client) -> int:
        await client.lookup(args.contact)  # notices a changed key before encrypting to it
        message = await client.send(args.contact, text)
        _handle_events(client, client.take_events(), False)
        print(message.id.hex())
        return 0

    return await _with_client(profile, body)


async def cmd_receive(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        _handle_events(client, await client.receive(wait=args.wait), args.json)
        return 0

    return await _with_client(profile, body)


async def cmd_listen(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        async for event in client.events():
            _handle_events(client, [event], args.json)
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
        _handle_events(client, client.take_events(), False)
        _show_safety_number(client, args.contact, not args.no_qr)
        return 0

    return await _with_client(profile, body)


async def cmd_verify(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        await client.lookup(args.contact)
        _handle_events(client, client.take_events(), False)
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


async def cmd_demo(args: argparse.Namespace, profile: Path) -> int:
    from sealpost.cli.demo import run_demo

    return await run_demo()


COMMANDS: dict[str, Callable[[argparse.Namespace, Path], Coroutine[Any, Any, int]]] = {
    "init": cmd_init,
    "send": cmd_send,
    "receive": cmd_receive,
    "listen": cmd_listen,
    "history": cmd_history,
    "contacts": cmd_contacts,
    "safety-number": cmd_safety_number,
    "verify": cmd_verify,
    "passcode": cmd_passcode,
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
