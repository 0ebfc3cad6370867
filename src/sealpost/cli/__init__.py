"""The ``sealpost`` command line.

========================  ===========================================================
:mod:`.parser`            the command line, built from the commands' declarations
:mod:`.command`           what a command is (:class:`~.command.Command`, ``Tool``)
:mod:`.commands`          the commands, one module per group (profile, messaging,
                          groups, devices, trust and alarms, server)
:mod:`.session`           what client commands share: opening the profile, alarms,
                          handling the events a command brings back
:mod:`.output`            what is printed (messages, notices, JSON lines)
:mod:`.render`            peer text as data, never terminal control
:mod:`.passcode`          passcode prompts
:mod:`.errors`            the one table from an error to its sentence and exit status
========================  ===========================================================

The contract scripts rely on (names, flags, JSON fields, exit codes) is in README.md.
Every client command that opens a profile asks for its passcode at a prompt, or reads
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
from collections.abc import Sequence
from pathlib import Path

from sealpost.cli.command import Command
from sealpost.cli.errors import CliError, report
from sealpost.cli.parser import build_parser, command_named
from sealpost.cli.session import default_profile

__all__ = ["main"]

PROFILE_ENV = "SEALPOST_PROFILE"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = command_named(args.command)
    if not isinstance(command, Command):
        try:
            return command.main(args)
        except (CliError, KeyboardInterrupt) as exc:
            return report(exc)
    try:
        return _run(command, args)
    except (Exception, KeyboardInterrupt) as exc:
        return report(exc, debug=args.debug)


def _run(command: Command, args: argparse.Namespace) -> int:
    if args.json and not command.json:
        raise CliError(f"'{command.name}' has no --json output", 2)
    profile = Path(args.profile or os.environ.get(PROFILE_ENV) or default_profile())
    return asyncio.run(command.run(args, profile))
