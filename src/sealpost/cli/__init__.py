"""The ``sealpost`` command line: ``server`` runs a relay; the client commands (``init``,
``send``, ``receive``, ``listen``, ...) are in :mod:`sealpost.cli.client_cli` (their arguments in
:mod:`sealpost.cli.parser`).

Every setting of :class:`~sealpost.server.config.ServerConfig` is a flag (``--max-frame``),
an environment variable (``SEALPOST_MAX_FRAME``) and a key of the ``[server]`` table of the
``--config`` TOML file; flags win over the environment, which wins over the file. Errors are
one line on stderr and a non-zero exit status::

    sealpost server --data ./data --port 8765
    sealpost server --data /srv/shared --database postgresql://sealpost@db/sealpost \
        --redis redis://cache:6379/0            # one of several processes
    sealpost server migrate --database postgresql://sealpost@db/sealpost
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sealpost import __version__
from sealpost.cli.client_cli import run_client_command
from sealpost.cli.parser import (
    CLIENT_COMMANDS,
    CommandParser,
    add_client_commands,
    add_global_options,
)
from sealpost.server.config import (
    FIELD_TYPES,
    ConfigError,
    ServerConfig,
    env_name,
    field_doc,
    flag_name,
    load_config,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sealpost", description="sealpost messenger")
    parser.add_argument("--version", action="version", version=f"sealpost {__version__}")
    add_global_options(parser, top=True)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    server = sub.add_parser("server", help="run the relay server")
    server.add_argument(
        "action",
        nargs="?",
        choices=["migrate"],
        help="migrate: apply the database migrations (--database) and exit",
    )
    server.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML file with a [server] table ($SEALPOST_CONFIG)",
    )
    for f in dataclasses.fields(ServerConfig):
        kind = FIELD_TYPES[f.name]
        default = "required" if f.name == "data" else f"default {f.default!r}"
        server.add_argument(
            flag_name(f.name),
            dest=f.name,
            type=str if kind is Path else kind,
            default=None,
            metavar=kind.__name__.upper() if kind is not Path else "DIR",
            help=f"{field_doc(f.name)} (${env_name(f.name)}; {default})",
        )
    add_client_commands(sub)
    return parser


def _migrate(config: ServerConfig) -> int:
    if not config.database:
        print("sealpost: migrate needs --database (SQLite migrates itself)", file=sys.stderr)
        return 2
    import asyncio

    from sealpost.server.storage.pg_cluster import ClusterError, migrate

    try:
        applied = asyncio.run(migrate(config.database))
    except (OSError, ClusterError) as exc:
        print(f"sealpost: cannot migrate: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # asyncpg's errors: the database refused
        print(f"sealpost: cannot migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"applied migrations: {', '.join(map(str, applied)) or 'none (up to date)'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    if args.command == "server":
        flags = {name: getattr(args, name) for name in FIELD_TYPES}
        if args.action == "migrate" and flags["data"] is None and "SEALPOST_DATA" not in os.environ:
            flags["data"] = "."  # migrating needs no data directory
        try:
            config = load_config(config_file=args.config, environ=os.environ, flags=flags)
        except ConfigError as exc:
            print(f"sealpost: {exc}", file=sys.stderr)
            return 2
        if args.action == "migrate":
            return _migrate(config)
        from sealpost.server.run import StartupFailed, run_server
        from sealpost.server.server_key import ServerKeyError

        try:
            run_server(config)
        except (OSError, ServerKeyError, StartupFailed) as exc:
            print(f"sealpost: cannot start the server: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
    return 0
