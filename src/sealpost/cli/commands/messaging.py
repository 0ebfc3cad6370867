"""Messaging commands: ``send``, ``receive``, ``listen``, ``save``, ``history``, ``timer``,
``delete``, and ``demo`` (a temporary server and two profiles exchanging messages)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sealpost.cli.command import Command, no_arguments
from sealpost.cli.errors import CliError, describe
from sealpost.cli.output import format_duration, parse_duration, print_message, progress_bar, warn
from sealpost.cli.passcode import read_passcode
from sealpost.cli.render import one_line
from sealpost.cli.session import conversation_is_group, handle_events, with_client
from sealpost.client.client import Client
from sealpost.client.errors import MAX_SEND_TEXT, MessageTooLarge
from sealpost.client.handoff import HandoffServer, SendRequest, hand_off

__all__ = ["COMMANDS", "message_id"]


def message_id(text: str) -> bytes:
    """A message id as ``send`` and ``--json`` show it (32 hex digits), or a usage error."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 16:
        raise CliError("a message id is 32 hex digits (as 'send' or --json shows it)", 2)
    return value


# ---------------------------------------------------------------------- send


def _send_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("contact")
    p.add_argument("text", nargs="?", default="", help="the text, or - to read it from stdin")
    p.add_argument("--file", type=Path, metavar="PATH", help="attach a file (up to 100 MiB)")


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


# ---------------------------------------------------------------------- receive, listen, save


def _receive_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")
    _save_dir_argument(p)


def _save_dir_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--save-dir", type=Path, metavar="DIR", help="save attachments here")


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


def _save_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("message_id", help="the message's id (hex, as --json shows it)")
    p.add_argument(
        "--dir", type=Path, default=Path("."), metavar="DIR", help="where (default: here)"
    )


async def cmd_save(args: argparse.Namespace, profile: Path) -> int:
    wanted = message_id(args.message_id)

    async def body(client: Client) -> int:
        saved = await client.save_attachment(wanted, args.dir.absolute())
        print(one_line(saved))
        return 0

    return await with_client(profile, body)


# ---------------------------------------------------------------------- the conversation


def _history_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("contact")
    p.add_argument("--limit", type=int, default=1000)


async def cmd_history(args: argparse.Namespace, profile: Path) -> int:
    async def body(client: Client) -> int:
        for message in client.history(args.contact, args.limit):
            print_message(message, args.json)
        return 0

    return await with_client(profile, body, read_only=True)


def _timer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("contact", help="a contact or a group")
    p.add_argument("duration", help="e.g. 30s, 10m, 1h, 1d, 1w, or off")


async def cmd_timer(args: argparse.Namespace, profile: Path) -> int:
    seconds = parse_duration(args.duration)

    async def body(client: Client) -> int:
        conversation_is_group(client, args.contact)
        await client.set_timer(args.contact, seconds)
        print(f"disappearing messages: {format_duration(seconds)}")
        return 0

    return await with_client(profile, body)


def _delete_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("contact", help="the conversation (a contact or a group)")
    p.add_argument("message_id", help="the id 'send' printed (hex)")


async def cmd_delete(args: argparse.Namespace, profile: Path) -> int:
    wanted = message_id(args.message_id)

    async def body(client: Client) -> int:
        conversation_is_group(client, args.contact)
        await client.delete_for_everyone(args.contact, wanted)
        print("deleted for everyone")
        return 0

    return await with_client(profile, body)


async def cmd_demo(args: argparse.Namespace, profile: Path) -> int:
    from sealpost.cli.demo import run_demo

    return await run_demo()


COMMANDS = (
    Command(
        "send",
        "send a message to a contact or a group (#name for a group)",
        _send_arguments,
        cmd_send,
    ),
    Command(
        "receive",
        "fetch, store and print what is queued for this device",
        _receive_arguments,
        cmd_receive,
        json=True,
    ),
    Command(
        "listen",
        "stay connected and print messages as they arrive",
        _save_dir_argument,
        cmd_listen,
        json=True,
    ),
    Command(
        "save",
        "save a received message's file (one not saved, or saved again)",
        _save_arguments,
        cmd_save,
    ),
    Command("timer", "disappearing messages for a conversation", _timer_arguments, cmd_timer),
    Command("delete", "delete a message you sent, for everyone", _delete_arguments, cmd_delete),
    Command(
        "history",
        "the conversation with a contact or a group",
        _history_arguments,
        cmd_history,
        json=True,
    ),
    Command(
        "demo", "a temporary server and two profiles exchanging messages", no_arguments, cmd_demo
    ),
)
