"""What a command is: its name and help, the arguments it declares, and what runs it.

Every command module under :mod:`sealpost.cli.commands` lists its commands as
:class:`Command` (client commands: they open a profile, run in :func:`asyncio.run`, and their
errors go through :data:`sealpost.cli.errors.ERRORS`) or :class:`Tool` (commands that need no
profile and run by themselves, such as ``server``). :mod:`sealpost.cli.parser` builds the
command line from those lists, so adding a command is one entry in one module::

    def _arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("contact")

    async def cmd_ping(args: argparse.Namespace, profile: Path) -> int:
        ...

    COMMANDS = (Command("ping", "say hello", _arguments, cmd_ping),)

Two conveniences over plain :mod:`argparse`: options and positional words may come in any
order (``sealpost send bob --file F "caption"`` and ``sealpost send bob "caption" --file
F`` are the same), and the global options (``--profile``, ``--debug``, ``--json``) are
accepted after the command (and after a sub-action: ``group list --json``) as well as
before it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ClientRun",
    "Command",
    "CommandParser",
    "Tool",
    "add_action",
    "add_global_options",
    "no_arguments",
]

#: A client command's body: the parsed arguments and the profile directory in, the exit
#: status out. It raises to fail; :func:`sealpost.cli.errors.describe` says what the user reads.
ClientRun = Callable[[argparse.Namespace, Path], Coroutine[Any, Any, int]]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a command that takes nothing but the global options."""


@dataclass(frozen=True, slots=True)
class Command:
    """A client command. ``json``: it prints data, so it has a ``--json`` form (any other
    command refuses ``--json`` with exit status 2)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: ClientRun
    json: bool = False


@dataclass(frozen=True, slots=True)
class Tool:
    """A command that opens no profile and handles its own arguments (``server``). ``main``
    returns the exit status; a :class:`~sealpost.cli.errors.CliError` it raises is shown
    like any client command's error; anything else is a bug and shows its traceback."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]


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


def add_action(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A parser for the command or sub-action ``name`` under ``sub`` (what
    ``add_subparsers`` returned) that takes the global options too."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    add_global_options(parser, top=False)
    return parser
