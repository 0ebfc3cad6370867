"""``sealpost admin``: an operator's commands, on the server's data directory (``--data``)
or database (``--database``), while the server runs (:mod:`sealpost.server.admin` does
the work)::

    sealpost admin --data /var/lib/sealpost stats [--json]
    sealpost admin --data DIR accounts remove USERNAME [--quarantine 30d] [--yes]
    sealpost admin --data DIR purge
    sealpost admin --data DIR backup --out FILE.tar
    sealpost admin restore FILE.tar --into NEW_DIR
    sealpost admin --data DIR invite create [--uses N] [--expires 7d]
    sealpost admin --data DIR invite list [--json]
    sealpost admin --data DIR invite revoke ID

``--data``, ``--database`` and ``--config`` are read as ``sealpost server`` reads them (and
from ``SEALPOST_DATA``, ``SEALPOST_DATABASE``, ``SEALPOST_CONFIG``), so the same unit
file's environment serves both. Errors are one line on stderr: exit 2 for a wrong
command line, 1 for anything else. A :class:`~sealpost.cli.command.Tool`: it opens no
profile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from sealpost.cli.command import Tool
from sealpost.cli.output import parse_duration, print_json
from sealpost.entropy import system_rng
from sealpost.server.config import ConfigError, ServerConfig, load_config

__all__ = ["TOOLS"]


def _location(parser: argparse.ArgumentParser, *, top: bool) -> None:
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--data", default=default(None), metavar="DIR", help="the server's data directory"
    )
    parser.add_argument(
        "--database",
        default=default(None),
        metavar="URL",
        help="the server's PostgreSQL URL (keys and blobs stay in --data)",
    )
    parser.add_argument(
        "--config", type=Path, default=default(None), metavar="FILE", help="the server's TOML"
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="JSON output")


def _arguments(admin: argparse.ArgumentParser) -> None:
    _location(admin, top=True)
    actions = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")

    def command(parent: Any, name: str, text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=text)
        _location(p, top=False)
        return p

    command(actions, "stats", "accounts, devices, queues, blobs, log size (nothing identifying)")
    accounts = command(actions, "accounts", "manage accounts")
    accounts_sub = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    p = command(accounts_sub, "remove", "remove an account and everything it has here")
    p.add_argument("username")
    p.add_argument(
        "--quarantine",
        metavar="DURATION",
        help="how long its username stays unregistrable (default: the server's "
        "username_quarantine, 30d)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask")
    command(actions, "purge", "delete expired messages, nonces and attachments now")
    p = command(actions, "backup", "a consistent copy of the server's state, while it runs")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="a new .tar file")
    p = command(actions, "restore", "unpack a backup into a new data directory")
    p.add_argument("archive", type=Path, metavar="FILE")
    p.add_argument("--into", type=Path, required=True, metavar="DIR", help="a new directory")
    invite = command(actions, "invite", "invite codes (registration = invite)")
    invite_sub = invite.add_subparsers(dest="invite_command", required=True, metavar="ACTION")
    p = command(invite_sub, "create", "a new invite code (shown once)")
    p.add_argument("--uses", type=int, default=1, metavar="N", help="registrations (default 1)")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 7d (default: never)")
    command(invite_sub, "list", "every invite, without its code")
    p = command(invite_sub, "revoke", "no one may register with it any more")
    p.add_argument("invite_id", metavar="ID")


class _Refused(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace) -> ServerConfig:
    flags = {"data": args.data, "database": args.database}
    try:
        return load_config(config_file=args.config, environ=os.environ, flags=flags)
    except ConfigError as exc:
        raise _Refused(str(exc), 2) from None


def _when(seconds: int | None) -> str:
    if not seconds:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _duration(text: str | None, default: int) -> int:
    from sealpost.cli.errors import CliError

    if text is None:
        return default
    try:
        return parse_duration(text)
    except CliError as exc:
        raise _Refused(str(exc), 2) from None


async def _run(args: argparse.Namespace) -> int:
    from sealpost.server import admin

    action = args.admin_command
    if action == "restore":
        manifest = admin.restore(args.archive, args.into)
        if args.json:
            print_json(manifest)
        else:
            print(f"restored a backup of {_when(manifest.get('created'))} into {args.into}")
            if manifest.get("database") == "postgresql":
                print("the database is not in it: pg_restore the pg_dump made with it")
        return 0
    config = _config(args)
    if action == "stats":
        found = await admin.stats(config)
        doc = found.to_json()
        if args.json:
            print_json(doc)
        else:
            oldest = doc["oldest_queued"]
            age = "none" if oldest is None else f"{max(0, int(time.time()) - oldest)} s ago"
            for name, value in doc.items():
                if name != "oldest_queued":
                    print(f"{name.replace('_', ' ')}: {value}")
            print(f"oldest queued message: {age}")
        return 0
    if action == "accounts":
        name = args.username
        if not args.yes:
            if not sys.stdin.isatty():
                raise _Refused("this removes the account for good: confirm with --yes", 2)
            answer = input(f"Remove the account {name!r} and everything it has here? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing removed")
                return 1
        quarantine = _duration(args.quarantine, config.username_quarantine)
        removed = await admin.remove_account(config, name, quarantine=quarantine)
        doc = {
            "removed": name.lower(),
            "devices": removed.devices,
            "queued_messages": removed.queued,
            "attachments": len(removed.attachments),
            "log_index": removed.log_index,
            "free_at": removed.free_at,
        }
        if args.json:
            print_json(doc)
        else:
            print(
                f"removed {name.lower()}: {removed.devices} devices, {removed.queued} queued "
                f"messages, {len(removed.attachments)} attachments; its deletion is log entry "
                f"{removed.log_index}; the name is free again after {_when(removed.free_at)}"
            )
        return 0
    if action == "purge":
        result = await admin.purge(config)
        doc = {
            "messages": result.messages,
            "nonces": result.nonces,
            "attachments": len(result.attachments),
        }
        if args.json:
            print_json(doc)
        else:
            print(
                f"purged {result.messages} expired messages, {result.nonces} nonces and "
                f"{len(result.attachments)} attachments"
            )
        return 0
    if action == "backup":
        manifest = admin.backup(config, args.out)
        if args.json:
            print_json(manifest)
        else:
            print(f"backed up to {args.out}: {manifest['blobs']} blobs")
            if config.database:
                print(
                    "the PostgreSQL database is not in it: run pg_dump -Fc "
                    "(docs/OPERATIONS.md, Backups) and keep both"
                )
        return 0
    if action == "invite":
        if args.invite_command == "create":
            expires = _duration(args.expires, 0)
            code, record = await admin.create_invite(
                config, uses=args.uses, expires_in=expires, rng=system_rng
            )
            if args.json:
                print_json(
                    {
                        "code": code,
                        "id": record.invite_id,
                        "uses": record.uses_left,
                        "expires_at": record.expires_at,
                    }
                )
            else:
                print(code)
                print(
                    f"invite {record.invite_id}: {record.uses_left} registration(s), expires "
                    f"{_when(record.expires_at)}; the code is shown only now",
                    file=sys.stderr,
                )
            return 0
        if args.invite_command == "list":
            now = int(time.time())
            for item in await admin.invites(config):
                state = (
                    "revoked"
                    if item.revoked
                    else "used up"
                    if item.uses_left <= 0
                    else "expired"
                    if not item.usable(now)
                    else "usable"
                )
                if args.json:
                    print_json(
                        {
                            "id": item.invite_id,
                            "uses_left": item.uses_left,
                            "uses": item.uses,
                            "created": item.created,
                            "expires_at": item.expires_at,
                            "state": state,
                        }
                    )
                else:
                    print(
                        f"{item.invite_id}  {state}, {item.uses_left} left, {item.uses} used, "
                        f"expires {_when(item.expires_at)}"
                    )
            return 0
        await admin.revoke_invite(config, args.invite_id)
        print(f"invite {args.invite_id} revoked")
        return 0
    raise _Refused(f"unknown action {action}", 2)


def run_admin_command(args: argparse.Namespace) -> int:
    from sealpost.server.admin import AdminError

    try:
        return asyncio.run(_run(args))
    except _Refused as exc:
        print(f"sealpost admin: {exc}", file=sys.stderr)
        return exc.code
    except AdminError as exc:
        print(f"sealpost admin: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


TOOLS = (
    Tool(
        "admin",
        "operate a server: stats, accounts, backups, invites",
        _arguments,
        run_admin_command,
    ),
)
