"""``sealpost server``: run the relay (and ``server migrate``: apply PostgreSQL migrations).

Every setting of :class:`~sealpost.server.config.ServerConfig` is a flag (``--max-frame``),
an environment variable (``SEALPOST_MAX_FRAME``) and a key of the ``[server]`` table of the
``--config`` TOML file; flags win over the environment, which wins over the file::

    sealpost server --data ./data --port 8765
    sealpost server --data /srv/shared --database postgresql://sealpost@db/sealpost \\
        --redis redis://cache:6379/0            # one of several processes
    sealpost server migrate --database postgresql://sealpost@db/sealpost
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from sealpost.cli.command import Tool
from sealpost.cli.errors import CliError
from sealpost.server.config import (
    FIELD_TYPES,
    ConfigError,
    ServerConfig,
    env_name,
    field_doc,
    flag_name,
    load_config,
)

__all__ = ["TOOLS"]


def _arguments(server: argparse.ArgumentParser) -> None:
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


def _migrate(config: ServerConfig) -> int:
    if not config.database:
        raise CliError("migrate needs --database (SQLite migrates itself)", 2)
    import asyncio

    from sealpost.server.storage.pg_cluster import ClusterError, migrate

    try:
        applied = asyncio.run(migrate(config.database))
    except (OSError, ClusterError) as exc:
        raise CliError(f"cannot migrate: {exc}") from exc
    except Exception as exc:  # asyncpg's errors: the database refused
        raise CliError(f"cannot migrate: {type(exc).__name__}: {exc}") from exc
    print(f"applied migrations: {', '.join(map(str, applied)) or 'none (up to date)'}")
    return 0


def run_server_command(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in FIELD_TYPES}
    if args.action == "migrate" and flags["data"] is None and "SEALPOST_DATA" not in os.environ:
        flags["data"] = "."  # migrating needs no data directory
    try:
        config = load_config(config_file=args.config, environ=os.environ, flags=flags)
    except ConfigError as exc:
        raise CliError(str(exc), 2) from exc
    if args.action == "migrate":
        return _migrate(config)
    from sealpost.server.run import StartupFailed, Stopped, run_server
    from sealpost.server.server_key import ServerKeyError

    try:
        run_server(config)
    except (OSError, ServerKeyError, StartupFailed) as exc:
        raise CliError(f"cannot start the server: {exc}") from exc
    except Stopped as exc:
        raise CliError(f"the server stopped: {exc}") from exc
    return 0


TOOLS = (Tool("server", "run the relay server", _arguments, run_server_command),)
