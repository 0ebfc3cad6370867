"""``chat``: the Textual chat app (:mod:`sealpost.app`), imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from sealpost.cli.command import Command, no_arguments
from sealpost.cli.errors import CliError
from sealpost.client.store import Store

__all__ = ["COMMANDS"]


async def cmd_chat(args: argparse.Namespace, profile: Path) -> int:
    from sealpost.app import ChatApp  # Textual is loaded for the app only

    if not Store.exists(profile):
        raise CliError(f"no profile in {profile}: create one with 'sealpost init'", 1)
    await ChatApp(profile).run_async()
    return 0


COMMANDS = (
    Command(
        "chat",
        "the chat app: conversations, unread counts, files, groups (Textual)",
        no_arguments,
        cmd_chat,
    ),
)
