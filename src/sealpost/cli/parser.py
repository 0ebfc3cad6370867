"""The whole command line, built from the commands' own declarations
(:mod:`sealpost.cli.commands`); README.md's command reference is written from it and
tests/cli/test_readme.py keeps the two the same.

:func:`build_parser` adds the tools (``server``) and then every client command, each with
the global options (:func:`~sealpost.cli.command.add_global_options`) and its own arguments.
"""

from __future__ import annotations

import argparse

from sealpost import __version__
from sealpost.cli.command import Command, CommandParser, Tool, add_action, add_global_options
from sealpost.cli.commands import COMMANDS, TOOLS

__all__ = ["CLIENT_COMMANDS", "JSON_COMMANDS", "build_parser", "command_named"]

#: The client commands' names.
CLIENT_COMMANDS = tuple(c.name for c in COMMANDS)

#: Commands that print data and so have a ``--json`` form.
JSON_COMMANDS = frozenset(c.name for c in COMMANDS if c.json)

_BY_NAME: dict[str, Command | Tool] = {t.name: t for t in TOOLS} | {c.name: c for c in COMMANDS}
if len(_BY_NAME) != len(TOOLS) + len(COMMANDS):
    raise RuntimeError("two commands have one name")


def command_named(name: str) -> Command | Tool:
    """The command ``args.command`` names (the parser only accepts those it has)."""
    return _BY_NAME[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sealpost", description="sealpost messenger")
    parser.add_argument("--version", action="version", version=f"sealpost {__version__}")
    add_global_options(parser, top=True)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    for tool in TOOLS:
        tool.arguments(sub.add_parser(tool.name, help=tool.help))
    for command in COMMANDS:
        command.arguments(add_action(sub, command.name, command.help))
    return parser
