"""Running the server under uvicorn (uvloop, httptools, websockets).

The listening socket is bound here, before uvicorn starts, so ``port = 0`` works and the
URL printed on stdout (``sealpost server listening on http://HOST:PORT``) is the real one;
tests and scripts read that line. Uvicorn's access log is off, and its own logger
(``uvicorn.error``, which also writes a line with the client's address for every WebSocket
accepted or closed) logs only warnings and errors unless ``log_level`` is ``debug``: it would
write client addresses and request paths (usernames, account ids) to the log, and the
server promises to log nothing that identifies who talks to whom. At ``debug`` that promise
does not hold (docs/OPERATIONS.md says so): it is for a developer's own machine.

Connections are limited by :mod:`.connections` (header deadline, connection cap);
uvicorn's keep-alive timeout closes idle ones.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import uvicorn

from sealpost.crypto.sign import SigningKey
from sealpost.entropy import system_clock, system_rng
from sealpost.server.app import create_app
from sealpost.server.config import ServerConfig
from sealpost.server.connections import corked, limited_protocol
from sealpost.server.fanout.base import Fanout
from sealpost.server.fanout.local import LocalFanout
from sealpost.server.links import LinkChannels, LocalLinks
from sealpost.server.ratelimit import Limiters, LocalLimiters
from sealpost.server.server_key import load_or_create_server_key
from sealpost.server.storage.base import Storage
from sealpost.server.storage.sqlite import SqliteStorage
from sealpost.server.ws_protocol import websocket_protocol

__all__ = [
    "KEEP_ALIVE",
    "StartupFailed",
    "Stopped",
    "bind_socket",
    "make_fanout",
    "make_limiters",
    "make_links",
    "make_storage",
    "plaintext_warning",
    "run_server",
    "url_of",
]


class StartupFailed(Exception):
    """The server could not start: its storage did not open, or a part its settings ask
    for is not installed (the reason is the message, one line)."""


class Stopped(Exception):
    """The server stopped by itself: its storage serves no more (the reason is the
    message), as when another process took over its PostgreSQL database."""


#: The modules of the ``postgres`` extra (``--database``, ``--redis``).
_EXTRA_MODULES: Final = frozenset({"asyncpg", "redis"})


@contextlib.contextmanager
def _extra(setting: str) -> Iterator[None]:
    """An import of the ``postgres`` extra that fails becomes :class:`StartupFailed` saying
    what to install (any other import error is a broken installation: left as it is)."""
    try:
        yield
    except ImportError as exc:
        module = (exc.name or "").partition(".")[0]
        if module not in _EXTRA_MODULES:
            raise
        raise StartupFailed(
            f"{setting} needs {module}, which is not installed: pip install 'sealpost[postgres]'"
        ) from None


def make_storage(config: ServerConfig, server_key: SigningKey, log_key: SigningKey) -> Storage:
    """PostgreSQL when ``database`` is set (alone on it unless ``redis`` is set too; it
    refuses to open if the database's other processes serve other keys than ``server_key``
    and ``log_key``: :mod:`.storage.pg_keys`), else the SQLite file in the data directory."""
    if config.database:
        with _extra("--database"):
            from sealpost.server.storage.pg_keys import DeploymentKeys
            from sealpost.server.storage.postgres import PostgresStorage

        keys = DeploymentKeys(
            server_key=server_key.public_key().public_bytes_raw(),
            log_key=log_key.public_key().public_bytes_raw(),
        )
        return PostgresStorage(config.database, solo=not config.redis, keys=keys)
    return SqliteStorage(config.data / "sealpost.db")


def make_fanout(config: ServerConfig) -> Fanout:
    if config.redis:
        with _extra("--redis"):
            from sealpost.server.fanout.redis import RedisFanout

        return RedisFanout(config.redis, poll_interval=config.poll_interval)
    return LocalFanout()


def make_links(config: ServerConfig, storage: Storage, fanout: Fanout) -> LinkChannels:
    """Device-link channels in the database, woken through Redis, when several processes
    share it (PostgreSQL with Redis: the three requests of a link may reach three of
    them); else in this process's memory."""
    if config.database and config.redis:
        from sealpost.server.links.shared import SharedLinks
        from sealpost.server.storage.postgres import PostgresStorage

        if not isinstance(storage, PostgresStorage):
            raise TypeError("shared link channels need the PostgreSQL storage")
        return SharedLinks(storage, fanout, key_ttl=config.link_key_ttl, ttl=config.link_ttl)
    return LocalLinks(key_ttl=config.link_key_ttl, ttl=config.link_ttl)


def make_limiters(config: ServerConfig, server_key: SigningKey) -> Limiters:
    """With Redis, rate limits shared by every process (keyed by an HMAC under a secret
    derived from the server key, which the processes share); else this process's own."""
    if config.redis:
        with _extra("--redis"):
            from sealpost.server.ratelimit_redis import RedisLimiters, limiter_secret

        return RedisLimiters(config.redis, secret=limiter_secret(server_key), clock=time.monotonic)
    return LocalLimiters(clock=time.monotonic)


log = logging.getLogger("sealpost.server")

#: The garbage collector's generation thresholds. Python's default (700, 10, 10) runs a
#: collection every 700 net allocations; a busy relay allocates dozens of objects per frame
#: and keeps many alive for each connection, so with 1000 devices connected a fifth of its
#: time went to collections that found nothing (bench/relay.py, N = 1000: 6,300 -> 8,000
#: msgs/s). Reference counting frees almost everything here; the collector is only for
#: cycles, which are rare, so it runs about thirty times less often.
GC_THRESHOLDS = (20_000, 20, 20)
#: Seconds an idle HTTP keep-alive connection is kept open (uvicorn's default, stated here
#: because clients must keep theirs shorter: sealpost.client.transport.KEEP_ALIVE).
KEEP_ALIVE = 5


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket, *, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


class _Server(uvicorn.Server):
    """Uvicorn's server, which prints its URL once listening and shuts down (as on
    SIGTERM) within a tenth of a second of its storage saying it serves no more."""

    def __init__(self, config: uvicorn.Config, url: str, storage: Storage) -> None:
        super().__init__(config)
        self._url = url
        self._storage = storage
        self.stopped: str | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Uvicorn's, but a failed start-up returns instead of ``sys.exit(3)``, so that
        :func:`run_server` raises :class:`StartupFailed` with the reason."""
        try:
            await super().startup(sockets)
        except SystemExit:
            self.should_exit = True
            return
        if self.started:
            print(f"sealpost server listening on {self._url}", flush=True)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        self.stopped = self._storage.stopped()
        return self.stopped is not None


class _SaidByCaller(logging.Filter):
    """Drops uvicorn's "Application startup failed. Exiting.": :func:`run_server` raises
    :class:`StartupFailed` instead, whose message says why (``sealpost server`` prints it,
    one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Application startup failed. Exiting."


def _log_config(level: str) -> dict[str, Any]:
    uvicorn_level = _uvicorn_level(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "filters": {"said_by_caller": {"()": _SaidByCaller}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": uvicorn_level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "uvicorn.error": {"filters": ["said_by_caller"]},
            "sealpost": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }


def _uvicorn_level(level: str) -> str:
    """Uvicorn logs client addresses at INFO (``127.0.0.1:PORT - "WebSocket /v1/sealed"
    [accepted]``); its warnings and errors carry none. So below ``debug`` it logs from
    ``warning`` up."""
    if level in ("debug", "error"):
        return level
    return "warning"


def plaintext_warning(config: ServerConfig) -> str | None:
    """What to say when the server would listen beyond this machine without TLS."""
    if config.tls:
        return None
    try:
        loopback = ipaddress.ip_address(config.host).is_loopback
    except ValueError:
        loopback = config.host == "localhost"
    if loopback:
        return None
    return (
        f"listening on {config.host} without TLS: anyone on the network path sees every "
        "request (which accounts exist and are looked up, who connects when) and can "
        "answer in the server's place, so clients would pin a stranger's keys at init. "
        "Put a TLS reverse proxy in front and listen on 127.0.0.1 (docs/OPERATIONS.md, "
        '"TLS"), or pass --tls-cert and --tls-key.'
    )


def run_server(config: ServerConfig, *, wrap: Callable[[Any], Any] | None = None) -> None:
    """Run until SIGINT/SIGTERM, or until the storage serves no more (raises
    :class:`Stopped`: another process took over its database). Raises ``OSError`` if the
    address cannot be bound, :class:`~.server_key.ServerKeyError` if a key file is
    unusable, :class:`StartupFailed` if the storage does not open (the database is another
    server's alone, serves other keys, has a newer schema; the reason said once, in its
    message). ``wrap`` wraps the ASGI application (the hostile-server tests put an operator
    who misbehaves in front of it; ``sealpost server`` never passes one)."""
    config.data.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data, 0o700)
    server_key = load_or_create_server_key(config.data / "server_key", system_rng)
    log_key = load_or_create_server_key(config.data / "log_key", system_rng)
    storage = make_storage(config, server_key, log_key)
    fanout = make_fanout(config)
    app = inner = create_app(
        config,
        storage=storage,
        fanout=fanout,
        server_key=server_key,
        log_key=log_key,
        clock=system_clock,
        rng=system_rng,
        monotonic=time.monotonic,
        limiters=make_limiters(config, server_key),
        links=make_links(config, storage, fanout),
    )
    if wrap is not None:
        app = wrap(app)
    sock = bind_socket(config.host, config.port)
    url = url_of(sock, tls=config.tls)
    warning = plaintext_warning(config)
    if warning is not None:
        print(f"sealpost: warning: {warning}", file=sys.stderr, flush=True)
    uv_config = uvicorn.Config(
        app,
        log_config=_log_config(config.log_level),
        log_level=_uvicorn_level(config.log_level),
        lifespan="on",  # a lifespan that fails stops the server, never serves without storage
        access_log=False,
        http=limited_protocol(
            header_timeout=config.header_timeout, max_connections=config.max_connections
        ),
        ws=corked(websocket_protocol()),
        ws_max_size=config.max_frame,
        ws_per_message_deflate=False,
        proxy_headers=bool(config.forwarded_allow_ips),
        forwarded_allow_ips=config.forwarded_allow_ips or None,
        ssl_certfile=config.tls_cert or None,
        ssl_keyfile=config.tls_key or None,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=5,
    )
    server = _Server(uv_config, url, storage)
    gc.freeze()  # what start-up made (modules, the app) lives for good: never walk it again
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        server.run(sockets=[sock])  # sets up uvloop when installed
    finally:
        sock.close()
    if not server.started:
        failure = getattr(inner.state, "startup_error", None)
        raise StartupFailed(str(failure or "see the log above"))
    if server.stopped is not None:
        raise Stopped(server.stopped)
