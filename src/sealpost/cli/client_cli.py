"""The client half of the ``sealpost`` command line: the commands that read and send
messages, and the one place a command's error becomes a line on stderr and an exit code.

The contract scripts rely on (names, flags, JSON fields, exit codes) is in README.md; the
arguments are declared in :mod:`sealpost.cli.parser`, errors in :mod:`sealpost.cli.errors`,
what is printed in :mod:`sealpost.cli.output` (peer text through
:mod:`sealpost.cli.render`), the account and group commands in :mod:`sealpost.cli.manage`.

Every command that opens a profile asks for its passcode at a prompt, or reads
``SEALPOST_PASSCODE`` (weaker: other processes of the same user can read a process's
environment, and it may end up in shell history). Errors are one line on stderr with a
non-zero exit status (:data:`sealpost.cli.errors.ERRORS`); ``--debug`` shows the traceback
as well. Key-transparency alarms are printed on stderr by every command that opens a
profile, until they are dismissed with ``sealpost alarms --dismiss``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from sealpost.cli.errors import CliError, describe
from sealpost.cli.manage import (
    cmd_alarms,
    cmd_audit,
    cmd_devices,
    cmd_group,
    cmd_link,
    cmd_passcode,
    cmd_safety_number,
    cmd_verify,
)
from sealpost.cli.output import (
    format_duration,
    parse_duration,
    print_json,
    print_message,
    progress_bar,
    warn,
)
from sealpost.cli.parser import CLIENT_COMMANDS, JSON_COMMANDS, add_client_commands
from sealpost.cli.passcode import PASSCODE_ENV, new_passcode, read_passcode
from sealpost.cli.render import one_line
from sealpost.cli.session import (
    conversation_is_group,
    default_profile,
    handle_events,
    server_url,
    with_client,
)
from sealpost.client.client import Client
from sealpost.client.errors import MAX_SEND_TEXT, MessageTooLarge
from sealpost.client.handoff import HandoffServer, SendRequest, hand_off
from sealpost.client.preflight import check_new_account
from sealpost.client.store import ProfileExists, Store

__all__ = ["CLIENT_COMMANDS", "add_client_commands", "run_client_command"]

PROFILE_ENV = "SEALPOST_PROFILE"


# ---------------------------------------------------------------------- commands


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
    )
    try:
        print(
            f"registered {one_line(client.username)} on {one_line(client.server_url)} "
            f"(profile {one_line(profile)})"
        )
    finally:
        await client.close()
    return 0


async def cmd_send(args: argparse.Namespace, profile: Path) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.text == "-":
        text = text.rstrip("\n")
    if not text and args.file is None:
        raise CliError("nothing to send: the text is empty", 2)
    size = len(text.encode("utf-8"))
    if size > MAX_SEND_TEXT:
        raise CliError(describe(MessageTooLarge(size, MAX_SEND_TEXT))[0], 2)
    if args.file is not None and not args.file.is_file():
        raise CliError(f"no such file: {one_line(args.file)}", 2)

    async def body(client: Client) -> int:
        if not conversation_is_group(client, args.contact):
            await client.lookup(args.contact)  # notices a changed key before encrypting
        with progress_bar(args.file.name if args.file else "") as bar:
            message = await client.send(
                args.contact, text, file=args.file, progress=bar if args.file else None
            )
        await handle_events(client, client.take_events(), False)
        print(message.id.hex())
        return 0

    # a 'sealpost listen' (or any holder serving send.sock) on this profile sends it
    passcode = read_passcode()
    file = None if args.file is None else args.file.absolute()  # the listener's cwd differs
    answer = await hand_off(profile, passcode, SendRequest(args.contact, text, file))
    if answer is None:
        return await with_client(profile, body, passcode)
    if "id" not in answer:
        raise CliError(str(answer.get("error", "the hand-off failed")), int(answer.get("code", 1)))
    print(answer["id"])
    return 0


async def cmd_receive(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        events = await client.receive(wait=args.wait)
        failed = await handle_events(client, events, args.json, args.save_dir)
        return 1 if failed else 0

    return await with_client(profile, body)


async def cmd_listen(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        async def send(request: SendRequest) -> dict[str, Any]:
            """A 'sealpost send' from another process, made here (README: one process)."""
            try:
                if not conversation_is_group(client, request.to):
                    await client.lookup(request.to)
                message = await client.send(request.to, request.text, file=request.file)
            except Exception as exc:
                text, code = describe(exc)
                return {"error": text, "code": code}
            await handle_events(client, client.take_events(), args.json)
            return {"id": message.id.hex()}

        try:
            server: HandoffServer | None = await HandoffServer.start(client.store, send)
        except OSError as exc:  # e.g. a profile path too long for a Unix socket
            warn(f"other commands cannot send through this process: {one_line(exc)}")
            server = None
        failed = 0
        try:
            async for event in client.events():
                failed += await handle_events(client, [event], args.json, args.save_dir)
        finally:
            if server is not None:
                await server.close()
        return 1 if failed else 0

    return await with_client(profile, body)


async def cmd_save(args: argparse.Namespace, profile: Path) -> int:
    message_id = _message_id(args.message_id)

    async def body(client: Client) -> int:
        saved = await client.save_attachment(message_id, args.dir.absolute())
        print(one_line(saved))
        return 0

    return await with_client(profile, body)


def _message_id(text: str) -> bytes:
    try:
        message_id = bytes.fromhex(text)
    except ValueError:
        message_id = b""
    if len(message_id) != 16:
        raise CliError("a message id is 32 hex digits (as 'send' or --json shows it)", 2)
    return message_id


async def cmd_timer(args: argparse.Namespace, profile: Path) -> int:
    seconds = parse_duration(args.duration)

    async def body(client: Client) -> int:
        conversation_is_group(client, args.contact)
        await client.set_timer(args.contact, seconds)
        print(f"disappearing messages: {format_duration(seconds)}")
        return 0

    return await with_client(profile, body)


async def cmd_delete(args: argparse.Namespace, profile: Path) -> int:
    message_id = _message_id(args.message_id)

    async def body(client: Client) -> int:
        conversation_is_group(client, args.contact)
        await client.delete_for_everyone(args.contact, message_id)
        print("deleted for everyone")
        return 0

    return await with_client(profile, body)


async def cmd_history(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        for message in client.history(args.contact, args.limit):
            print_message(message, args.json)
        return 0

    return await with_client(profile, body, read_only=True)


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


async def cmd_demo(args: argparse.Namespace, profile: Path) -> int:
    from sealpost.cli.demo import run_demo

    return await run_demo()


COMMANDS: dict[str, Callable[[argparse.Namespace, Path], Coroutine[Any, Any, int]]] = {
    "init": cmd_init,
    "send": cmd_send,
    "receive": cmd_receive,
    "listen": cmd_listen,
    "save": cmd_save,
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


def run_client_command(args: argparse.Namespace) -> int:
    if args.json and args.command not in JSON_COMMANDS:
        print(f"sealpost: '{args.command}' has no --json output", file=sys.stderr)
        return 2
    profile = Path(args.profile or os.environ.get(PROFILE_ENV) or default_profile())
    try:
        return asyncio.run(COMMANDS[args.command](args, profile))
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the prompt's line
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (``sealpost history bob | head``): stop quietly,
        # and keep Python from failing again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        message, code = describe(exc)
        warn(message)
        if args.debug:
            import traceback

            traceback.print_exc()
        return code
