"""The client commands' arguments (README.md's usage section is written from this).

Two conveniences over plain :mod:`argparse`: options and positional words may come in any
order (``sealpost send bob --file F "caption"`` and ``sealpost send bob "caption" --file
F`` are the same), and the global options (``--profile``, ``--debug``, ``--json``) are
accepted after the command as well as before it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CLIENT_COMMANDS",
    "JSON_COMMANDS",
    "CommandParser",
    "add_client_commands",
    "add_global_options",
]


class CommandParser(argparse.ArgumentParser):
    """An :class:`~argparse.ArgumentParser` that lets positionals and options intermix
    (:meth:`~argparse.ArgumentParser.parse_known_intermixed_args`) where argparse can:
    not in a parser with sub-commands of its own."""

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        nested = any(isinstance(a, argparse._SubParsersAction) for a in self._actions)
        if self._intermixing or nested:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--profile``, ``--debug`` and ``--json``: on the top parser with their defaults,
    on each command's parser with no default, so that one given before the command is
    not reset by the command's parser."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--profile",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="the profile to use ($SEALPOST_PROFILE; default under the user's data dir)",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks on errors"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="JSON output, one object per line (commands that print data)",
    )


#: Commands that print data and so have a ``--json`` form.
JSON_COMMANDS = frozenset(
    {"receive", "listen", "group", "devices", "history", "contacts", "alarms", "audit", "whoami"}
)


def add_client_commands(sub: Any) -> None:
    def command(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        add_global_options(p, top=False)
        return p

    p = command(sub, "init", "create keys and register an account on a server")
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

    p = command(sub, "send", "send a message to a contact or a group (#name for a group)")
    p.add_argument("contact")
    p.add_argument("text", nargs="?", default="", help="the text, or - to read it from stdin")
    p.add_argument("--file", type=Path, metavar="PATH", help="attach a file (up to 100 MiB)")

    p = command(sub, "receive", "fetch, store and print what is queued for this device")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--save-dir", type=Path, metavar="DIR", help="save attachments here")

    p = command(sub, "listen", "stay connected and print messages as they arrive")
    p.add_argument("--save-dir", type=Path, metavar="DIR", help="save attachments here")

    p = command(sub, "save", "save a received message's file (one not saved, or saved again)")
    p.add_argument("message_id", help="the message's id (hex, as --json shows it)")
    p.add_argument(
        "--dir", type=Path, default=Path("."), metavar="DIR", help="where (default: here)"
    )

    p = command(sub, "group", "create and manage groups")
    gsub = p.add_subparsers(dest="group_command", required=True, metavar="ACTION")
    g = command(gsub, "create", "a new group with you as its admin")
    g.add_argument("name")
    g.add_argument("members", nargs="+", metavar="MEMBER")
    for action, text in (("add", "add members (admins)"), ("remove", "remove members (admins)")):
        g = command(gsub, action, text)
        g.add_argument("group")
        g.add_argument("members", nargs="+", metavar="MEMBER")
    g = command(gsub, "rename", "rename a group (admins)")
    g.add_argument("group")
    g.add_argument("name")
    g = command(gsub, "leave", "leave a group")
    g.add_argument("group")
    command(gsub, "list", "your groups")

    p = command(sub, "link", "link another device to this account")
    lsub = p.add_subparsers(dest="link_command", required=True, metavar="ACTION")
    g = command(lsub, "new", "on the NEW device: show a link code and wait")
    g.add_argument("--server", required=True, metavar="URL")
    g.add_argument("--name", required=True, metavar="DEVICE_NAME", help="e.g. laptop")
    g.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    g = command(lsub, "accept", "on an EXISTING device: provision the new one")
    g.add_argument("code", help="the link code the new device shows")
    g.add_argument(
        "--confirm-code",
        metavar="DIGITS",
        help="the confirmation code the new device shows (non-interactive use)",
    )

    p = command(sub, "devices", "this account's devices")
    dsub = p.add_subparsers(dest="devices_command", metavar="ACTION")
    g = command(dsub, "remove", "revoke a device (its certificate is revoked)")
    g.add_argument("device_id", type=int)

    p = command(sub, "timer", "disappearing messages for a conversation")
    p.add_argument("contact", help="a contact or a group")
    p.add_argument("duration", help="e.g. 30s, 10m, 1h, 1d, 1w, or off")

    p = command(sub, "delete", "delete a message you sent, for everyone")
    p.add_argument("contact", help="the conversation (a contact or a group)")
    p.add_argument("message_id", help="the id 'send' printed (hex)")

    p = command(sub, "history", "the conversation with a contact or a group")
    p.add_argument("contact")
    p.add_argument("--limit", type=int, default=1000)

    command(sub, "contacts", "your contacts and their verification status")

    p = command(sub, "safety-number", "the safety number to compare with a contact")
    p.add_argument("contact")
    p.add_argument("--no-qr", action="store_true", help="digits only")

    p = command(sub, "verify", "mark a contact's safety number as checked")
    p.add_argument("contact")
    p.add_argument("--yes", action="store_true", help="do not ask (you compared it already)")

    p = command(sub, "passcode", "manage the profile's passcode")
    passcode_sub = p.add_subparsers(dest="passcode_command", required=True, metavar="ACTION")
    command(passcode_sub, "change", "set a new passcode (the data is not re-encrypted)")

    p = command(sub, "alarms", "key-transparency alarms: what the server did that it must not")
    p.add_argument("--all", action="store_true", help="include dismissed alarms")
    p.add_argument(
        "--dismiss", nargs="+", metavar="ID", help="dismiss these alarms ('all' for every one)"
    )

    p = command(sub, "audit", "witness a server's key-transparency log (no profile needed)")
    p.add_argument("--server", required=True, metavar="URL")
    p.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="where the newest checked head is kept (default: beside the profile)",
    )
    p.add_argument("--log-key", metavar="B64", help="the log key to pin (default: first seen)")
    p.add_argument("--loop", type=float, metavar="SECONDS", help="check again every SECONDS")

    command(sub, "whoami", "this profile's account and server")

    command(sub, "demo", "a temporary server and two profiles exchanging messages")


CLIENT_COMMANDS = (
    "init",
    "send",
    "receive",
    "listen",
    "save",
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
