"""Every command of the ``sealpost`` command line, one module per group:

=====================  ===============================================================
:mod:`.profile`        ``init``, ``whoami``, ``passcode change``
:mod:`.messaging`      ``send``, ``receive``, ``listen``, ``save``, ``timer``, ``delete``,
                       ``history``, ``demo``
:mod:`.groups`         ``group create|add|remove|rename|leave|list``
:mod:`.devices`        ``link new|accept``, ``devices [remove]``
:mod:`.trust`          ``contacts``, ``safety-number``, ``verify``, ``alarms``, ``audit``
:mod:`.chat`           ``chat`` (the Textual app), ``search``
:mod:`.server`         ``server [migrate]`` (a :class:`~sealpost.cli.command.Tool`)
:mod:`.admin`          ``admin stats|accounts remove|purge|backup|restore|invite`` (a
                       ``Tool``: an operator's commands on a server's data)
=====================  ===============================================================

A new command is a :class:`~sealpost.cli.command.Command` (or ``Tool``) in the module of
its group, or a new module added to :data:`GROUPS` / :data:`TOOLS` here; the parser, the
``--json`` check and the README test (tests/cli/test_readme.py) pick it up from these lists.
"""

from __future__ import annotations

from sealpost.cli.command import Command, Tool
from sealpost.cli.commands import admin, chat, devices, groups, messaging, profile, server, trust

__all__ = ["COMMANDS", "GROUPS", "TOOLS"]

#: The client command modules, in the order ``sealpost --help`` lists them.
GROUPS = (profile, messaging, groups, devices, trust, chat)

#: Every client command (it opens a profile; errors through ERRORS).
COMMANDS: tuple[Command, ...] = tuple(c for group in GROUPS for c in group.COMMANDS)

#: Commands that open no profile and handle their own arguments.
TOOLS: tuple[Tool, ...] = server.TOOLS + admin.TOOLS
