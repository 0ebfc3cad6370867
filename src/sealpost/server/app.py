"""The ASGI application: routes, error handling, metrics and the purge loop.

:func:`create_app` receives every dependency (config, storage, fanout, server key, clock,
RNG) and wires the handlers; nothing is global. Each HTTP endpoint is wrapped once so that

- the per-address rate limit is applied first, then (for ``POST`` and ``PUT``) the
  free-disk watermark (:mod:`.diskspace`);
- an :class:`~sealpost.server.errors.ApiError` becomes its JSON answer, and any other
  exception a logged ``500 internal`` (no request data in the log line) — no input can take
  the server down or leak a traceback to the client;
- a count and a latency are recorded under the route template, never the path sent.

The lifespan opens storage and the blob store, runs the purge of expired messages, nonces
and attachments (and of stale partial uploads) every ``purge_interval`` seconds, watches
for accounts that ``sealpost admin`` removed (:func:`_removals_loop`), and closes
everything on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from sealpost import __version__
from sealpost.crypto.sign import SigningKey
from sealpost.entropy import Rng
from sealpost.server.authn import Authenticator, rate_limited
from sealpost.server.blobs import DirectoryBlobStore
from sealpost.server.codec import json_response
from sealpost.server.config import ServerConfig
from sealpost.server.context import Context
from sealpost.server.diskspace import DiskSpace
from sealpost.server.errors import ApiError, error_response
from sealpost.server.fanout.base import Fanout
from sealpost.server.handlers.accounts import AccountsApi
from sealpost.server.handlers.attachments import AttachmentsApi
from sealpost.server.handlers.certificates import CertificatesApi
from sealpost.server.handlers.keys import KeysApi
from sealpost.server.handlers.link import LinkApi
from sealpost.server.handlers.log import LogApi, LogService
from sealpost.server.handlers.messages import MessagesApi
from sealpost.server.limits import Limits
from sealpost.server.links import LinkChannels, LocalLinks
from sealpost.server.metrics import Metrics
from sealpost.server.openapi import openapi_document
from sealpost.server.ratelimit import Limiters, LocalLimiters
from sealpost.server.requests import BODY_TIMEOUT, client_address
from sealpost.server.routes import OPERATIONS
from sealpost.server.schema import Health
from sealpost.server.storage.base import Storage, StorageUnavailable
from sealpost.server.stream import StreamEndpoint

__all__ = ["create_app"]

log = logging.getLogger("sealpost.server")

Endpoint = Callable[[Request], Awaitable[Response]]

#: Methods that store new data: refused below the free-disk watermark (DELETE frees).
_WRITES = frozenset({"POST", "PUT"})


def _wrap(ctx: Context, template: str, endpoint: Endpoint) -> Endpoint:
    async def handle(request: Request) -> Response:
        start = time.perf_counter()
        try:
            wait = await ctx.per_address.take(client_address(request))
            if wait:
                raise rate_limited(wait)
            if request.method in _WRITES:
                ctx.disk.check()
                request.scope[BODY_TIMEOUT] = ctx.config.body_timeout
            response = await endpoint(request)
        except ApiError as exc:
            response = exc.response()
        except StorageUnavailable:  # the database went away: try again (it reconnects)
            response = error_response(503, "unavailable", "storage is unavailable; retry")
        except Exception:
            log.exception("internal error in %s %s", request.method, template)
            response = error_response(500, "internal", "internal server error")
        labels = {"route": template, "method": request.method}
        ctx.metrics.inc(
            "sealpost_http_requests_total",
            "HTTP requests by route template and status",
            status=str(response.status_code),
            **labels,
        )
        ctx.metrics.observe(
            "sealpost_http_request_seconds",
            "HTTP request latency by route template",
            time.perf_counter() - start,
            **labels,
        )
        return response

    return handle


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        return error_response(405, "method_not_allowed", "method not allowed on this path")
    return error_response(404, "not_found", "no such endpoint")


#: Seconds between checks for accounts removed by ``sealpost admin`` (another process).
REMOVALS_INTERVAL = 1.0


async def _removals_loop(ctx: Context, close_account: Callable[[bytes], None]) -> None:
    """Learn of accounts removed by ``sealpost admin`` (a process of its own, on the
    data directory or the database): forget what this process kept of each and close
    its devices' streams. The leader writes the audit line of each removal to the
    server's log, once: the public log index of its deletion entry, never a name."""
    seen = -1
    while True:
        try:
            if seen < 0:  # at start: what was removed before is not in memory
                removals = await ctx.storage.removals(after=-1)
                seen = max((r.seq for r in removals), default=0)
                removals = [r for r in removals if not r.audited]
            else:
                removals = await ctx.storage.removals(after=seen)
                for removal in removals:
                    await ctx.storage.forget_account(removal.account_id)
                    close_account(removal.account_id)
                    seen = max(seen, removal.seq)
            pending = [r for r in removals if not r.audited]
            if pending and ctx.storage.leader():
                for removal in pending:
                    cause = "an operator" if removal.cause == 1 else "the account itself"
                    log.warning(
                        "audit: %s removed an account (key-transparency log entry %d, its"
                        " deletion); its username is held until %s",
                        cause,
                        removal.log_index,
                        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(removal.free_at)),
                    )
                await ctx.storage.mark_audited(max(r.seq for r in pending))
        except StorageUnavailable:
            pass
        except Exception:
            log.exception("checking for removed accounts failed")
        await asyncio.sleep(REMOVALS_INTERVAL)


async def _purge_loop(ctx: Context) -> None:
    while True:
        await asyncio.sleep(ctx.config.purge_interval)
        if not ctx.storage.leader():  # with several processes, one purges
            continue
        try:
            result = await ctx.storage.purge(ctx.clock())
            for blob_id in result.attachments:
                await ctx.blobs.delete(blob_id)
            if result.messages or result.attachments:
                log.info(
                    "purged %d expired messages and %d attachments",
                    result.messages,
                    len(result.attachments),
                )
        except Exception:
            log.exception("purge failed")
        try:  # the parts of uploads a crashed process left; no database needed
            parts = await ctx.blobs.purge_parts()
            if parts:
                log.info("removed %d stale partial uploads", parts)
        except Exception as exc:  # said without its file name: that holds an upload's id
            log.warning("removing stale partial uploads failed: %s", type(exc).__name__)


class _App(Starlette):
    """Starlette, with the two sockets that stay open for hours (``/v1/stream`` and
    ``/v1/sealed``) handed straight to their endpoints. A connection keeps alive every
    frame of the call chain that reached its handler: Starlette's error and exception
    middleware and its router hold about 4 KiB of closures and coroutines a socket, which
    at tens of thousands of devices is a good part of the server's memory. The endpoints
    catch their own failures (:meth:`StreamEndpoint._run`), so nothing is lost by it."""

    def __init__(
        self, sockets: Mapping[str, Callable[[WebSocket], Awaitable[None]]], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._sockets = sockets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            endpoint = self._sockets.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await endpoint(WebSocket(scope, receive=receive, send=send))
                return
        elif scope["type"] == "lifespan":
            send = self._stated(send)
        await super().__call__(scope, receive, send)

    def _stated(self, send: Send) -> Send:
        """The lifespan's messages, but for a start-up failure the lifespan stated
        (``state.startup_error``), which goes without Starlette's traceback: the reason is
        said once, by whoever called :func:`~.run.run_server` (``sealpost server``: one
        line, ``cannot start the server: ...``); ``--log-level debug`` logs the traceback."""

        async def forward(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "lifespan.startup.failed" and getattr(
                self.state, "startup_error", None
            ):
                message = {"type": message["type"], "message": ""}
            await send(message)

        return forward


def create_app(
    config: ServerConfig,
    *,
    storage: Storage,
    fanout: Fanout,
    server_key: SigningKey,
    log_key: SigningKey,
    clock: Callable[[], int],
    rng: Rng,
    monotonic: Callable[[], float] = time.monotonic,
    limiters: Limiters | None = None,
    links: LinkChannels | None = None,
) -> Starlette:
    """The application; ``limiters`` are this process's own unless given (with Redis,
    :class:`~.ratelimit_redis.RedisLimiters`: shared by every process), and so are the
    device-link channels ``links`` (with several processes on one database,
    :class:`~.links.shared.SharedLinks`)."""
    if limiters is None:
        limiters = LocalLimiters(clock=monotonic)
    if links is None:
        links = LocalLinks(key_ttl=config.link_key_ttl, ttl=config.link_ttl)
    ctx = Context(
        config=config,
        storage=storage,
        fanout=fanout,
        blobs=DirectoryBlobStore(config.data / "blobs", upload_timeout=config.upload_timeout),
        server_key=server_key,
        metrics=Metrics(),
        clock=clock,
        rng=rng,
        per_account=limiters.limiter("per_account", config.rate_per_account),
        per_address=limiters.limiter("per_address", config.rate_per_address),
        sealed_per_address=limiters.limiter("sealed_per_address", config.rate_sealed_per_address),
        limits=Limits.from_config(config, limiters),
        disk=DiskSpace(config.data, min_free=config.min_free_disk, clock=monotonic),
    )
    ctx.metrics.gauge(
        "sealpost_websocket_connected", "devices connected now", lambda: fanout.connected()
    )
    ctx.metrics.gauge(
        "sealpost_leader",
        "1 if this process leads (signs tree heads, purges expired data), else 0",
        lambda: float(storage.leader()),
    )
    auth = Authenticator(ctx)
    revoke: list[Callable[[tuple[bytes, int]], None]] = []

    def on_revoke(address: tuple[bytes, int]) -> None:
        for close in revoke:
            close(address)

    log_service = LogService(storage, log_key, interval=config.log_head_interval)
    ctx.metrics.gauge(
        "sealpost_log_signer_last_pass_timestamp_seconds",
        "when the tree-head signer last checked the log (Unix time; 0: never)",
        lambda: log_service.last_pass,
    )
    ctx.metrics.gauge(
        "sealpost_log_signer_failures",
        "passes of the tree-head signer that failed since start",
        lambda: log_service.failures,
    )
    log_api = LogApi(ctx, log_service)
    accounts = AccountsApi(ctx, auth, log_service, on_revoke)
    link = LinkApi(ctx, auth, links)
    messages = MessagesApi(ctx, auth)
    stream = StreamEndpoint(ctx, messages)
    keys = KeysApi(ctx, auth, on_low_stock=stream.prekeys_low)
    certificates = CertificatesApi(ctx, auth)
    attachments = AttachmentsApi(ctx, auth)
    document = openapi_document(__version__)

    async def healthz(request: Request) -> Response:
        try:
            await storage.account_by_username("")  # storage answers
        except StorageUnavailable:
            database = False
        else:
            database = True
        fanout_ok = await fanout.reachable()
        return json_response(
            Health(
                status="ok" if database and fanout_ok else "degraded",
                database=database,
                fanout=fanout_ok,
            ),
            200 if database else 503,
        )

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(ctx.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    handlers: dict[str, Endpoint] = {
        "healthz": healthz,
        "metrics": metrics,
        "openapi": openapi,
        "accounts.register": accounts.register,
        "accounts.lookup": accounts.lookup,
        "accounts.add_device": accounts.add_device,
        "accounts.remove_device": accounts.remove_device,
        "link.key": link.key,
        "link.provision": link.provision,
        "messages.send_multi": messages.send_multi,
        "keys.upload": keys.upload,
        "keys.status": keys.status,
        "keys.bundle": keys.bundle,
        "messages.send": messages.send,
        "messages.fetch": messages.fetch,
        "messages.ack": messages.ack,
        "certificates.sender": certificates.sender,
        "certificates.server": certificates.server,
        "attachments.upload": attachments.upload,
        "attachments.download": attachments.download,
        "log.key": log_api.key,
        "log.head": log_api.head,
        "log.consistency": log_api.consistency,
        "log.inclusion": log_api.inclusion,
        "log.account": log_api.account,
    }
    if set(handlers) != {op.handler for op in OPERATIONS}:  # a route without its declaration
        raise RuntimeError("the handlers and sealpost.server.routes.OPERATIONS disagree")
    # Routes in table order: a literal path (/v1/messages/multi, /v1/keys/status) comes
    # before a template it would match.
    routes: list[Route | WebSocketRoute] = [
        Route(op.path, _wrap(ctx, op.path, handlers[op.handler]), methods=[op.method])
        for op in OPERATIONS
    ]
    revoke.append(stream.revoke)
    sockets = {"/v1/stream": stream.handle, "/v1/sealed": stream.handle_sealed}
    routes += [WebSocketRoute(path, endpoint) for path, endpoint in sockets.items()]
    routes.append(WebSocketRoute("/v1/link", link.handle))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await storage.open()
        except Exception as exc:
            # Said once, plainly (another process holds the database, a newer schema, no
            # database at that URL); the reason never holds the URL's password.
            app.state.startup_error = f"{type(exc).__name__}: {exc}"
            log.debug("cannot start: %s", app.state.startup_error, exc_info=exc)
            raise
        await fanout.open()
        await limiters.open()
        await ctx.blobs.open()
        purge = asyncio.create_task(_purge_loop(ctx))
        sequencer = asyncio.create_task(log_service.run())
        removals = asyncio.create_task(_removals_loop(ctx, stream.revoke_account))
        try:
            yield
        finally:
            for task in (purge, sequencer, removals):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await limiters.close()
            await fanout.close()
            await storage.close()

    app = _App(
        sockets,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _not_found},
    )
    app.state.context = ctx
    return app
