"""``chat``: the Textual chat app (:mod:`sealpost.app`), imported only when it runs;
``search``: full-text search of the local history (FTS5 in the encrypted store)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sealpost.cli.command import Command, no_arguments
from sealpost.cli.errors import CliError
from sealpost.cli.output import print_json, print_message
from sealpost.cli.session import with_client
from sealpost.client import Client
from sealpost.client.services.search import HIT_END, HIT_START

__all__ = ["COMMANDS"]


async def cmd_chat(args: argparse.Namespace, profile: Path) -> int:
    from sealpost.app import ChatApp  # Textual is loaded for the app only

    # no profile there yet: the app offers to link this device to an existing account
    await ChatApp(profile).run_async()
    return 0


def _search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help='words that must all occur; "a phrase" in quotes')
    p.add_argument("--in", dest="conversation", metavar="NAME", help="one conversation only")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (newest first)")


async def cmd_search(args: argparse.Namespace, profile: Path) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1", 2)

    async def body(client: Client) -> int:
        hits = client.search(args.query, conversation=args.conversation, limit=args.limit)
        for hit in hits:
            if args.json:
                snippet = hit.snippet.replace(HIT_START, "").replace(HIT_END, "")
                print_json(hit.message.to_json() | {"snippet": snippet})
            else:
                print_message(hit.message, False)
        return 0 if hits else 1

    return await with_client(profile, body, read_only=True)


COMMANDS = (
    Command(
        "chat",
        "the chat app: conversations, unread counts, files, groups (Textual)",
        no_arguments,
        cmd_chat,
    ),
    Command(
        "search",
        "search the local history (words, or a phrase)",
        _search_arguments,
        cmd_search,
        json=True,
    ),
)
