"""Talking to a relay: signed HTTP requests, and opening the device's stream and the
sealed socket (:mod:`sealpost.client.sockets` holds the sockets and their frames).

Three channels, as docs/PROTOCOL.md describes them:

- HTTP (``httpx``) for registration, lookups, bundles, prekeys and certificates; every
  request that acts for the device is signed with its device signing key
  (:func:`sealpost.protocol.signing.sign_request`: timestamp, nonce, body digest);
- ``/v1/stream``, the device's own WebSocket: a signed challenge, then pushes in queue order
  that the client acks once they are stored locally;
- ``/v1/sealed``, an anonymous WebSocket for sealed sends. Nothing on it names the sender;
  sends are pipelined and answered in order, each only once the server has stored it.

Every failure becomes a :class:`~sealpost.client.errors.TransportError`: the server's JSON
error (:class:`ServerError`, with its stable code) or an unreachable server
(:class:`ServerUnavailable`). Messages never contain request bodies.

TLS: the HTTP client and the ``wss://`` sockets of every transport in the process share one
client context (:func:`tls_context`): the same trusted CAs on every channel to a server, and
the CA bundle read once (reading it costs tens of milliseconds of CPU; a profile's create
or link opens three transports, each of which read it before).

Idle HTTP connections are kept for :data:`KEEP_ALIVE` seconds, less than the relay's
(:data:`sealpost.server.run.KEEP_ALIVE`, uvicorn's 5): a connection reused just as the
server closes it for idleness fails without an answer. A safe request (``GET``, ``HEAD``)
that fails that way, on a connection closed before any answer, is sent once more, signed
anew; any other is not resent (the server may have acted on it) and fails as
:class:`ServerUnavailable`, as before. Nor is a prekey bundle's ``GET`` (it takes the
device's one-time prekeys: a resend after a served but unanswered one would take more).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from sealpost.client.corked import CorkedConnection
from sealpost.client.errors import ServerError, ServerUnavailable
from sealpost.client.sockets import (
    TIMEOUT,
    WINDOW,
    LinkChannel,
    Push,
    SealedSocket,
    Stream,
    b64,
    envelopes_json,
    unb64,
)
from sealpost.crypto.sign import SigningKey
from sealpost.entropy import Rng, system_rng
from sealpost.protocol.signing import (
    NONCE_HEADER,
    NONCE_LEN,
    SIGNATURE_LEN,
    TIMESTAMP_HEADER,
    TRAILER_QUERY,
    sign_request,
    trailer_message,
)

if TYPE_CHECKING:
    from sealpost.client.relay import RelayLink, RelaySealed, RelayStream, RelayTransport

__all__ = [
    "KEEP_ALIVE",
    "WINDOW",
    "Identity",
    "Push",
    "SealedSocket",
    "Stream",
    "Transport",
    "b64",
    "envelopes_json",
    "tls_context",
    "unb64",
]

#: WebSocket frames we accept from the server (a push carries at most a 96 KiB envelope).
MAX_FRAME = 1024 * 1024
#: Seconds an idle HTTP connection is kept for reuse: well under the relay's keep-alive.
KEEP_ALIVE = 2.0
#: Methods that change nothing on the server, so that one is resent when its connection
#: closed before any answer.
_SAFE = frozenset({"GET", "HEAD"})
#: The one GET that changes state: a prekey bundle's takes one-time prekeys (all of
#: ``/v1/keys/`` but the device's own ``status``), so it is never resent.
_BUNDLES = "/v1/keys/"
#: The failures of a connection that closed under a request before any answer.
_CLOSED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True, slots=True)
class Identity:
    """What signs this device's requests. Its repr shows no key."""

    signing_key: SigningKey
    account_id: bytes
    device_id: int

    def __repr__(self) -> str:
        return f"Identity(account_id={self.account_id.hex()}, device_id={self.device_id})"


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        doc = response.json()
        code, message = str(doc["error"]), str(doc["message"])
        extra = {k: v for k, v in doc.items() if k not in ("error", "message")}
    except (ValueError, KeyError, TypeError):
        code, message, extra = "http_error", f"HTTP {response.status_code}", {}
    raise ServerError(response.status_code, code, message, extra)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's TLS client context: certificates verified against the CAs httpx
    trusts (``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` if set, else certifi's bundle), host
    names checked. Built on first use and shared: a client context holds no per-connection
    state, so every transport's HTTP client and secure WebSockets use this one."""
    return httpx.create_ssl_context()


def _ws_url(url: str, path: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :] + path
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :] + path
    raise ServerUnavailable(f"not an http(s) server URL: {url}")


class Transport:
    """HTTP access to one server, optionally acting as one device: the
    :class:`~sealpost.client.relay.RelayTransport` that talks to a real relay."""

    def __init__(
        self,
        url: str,
        identity: Identity | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: Rng = system_rng,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.identity = identity
        self._clock = clock
        self._rng = rng
        #: The TLS context of the HTTP client and the secure WebSockets (an ``http://``
        #: server uses none); by default the process's :func:`tls_context`.
        self.tls = tls_context() if tls is None else tls
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=TIMEOUT,
            verify=self.tls,
            limits=httpx.Limits(keepalive_expiry=KEEP_ALIVE),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def ws_url(self, path: str) -> str:
        return _ws_url(self.url, path)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        signed: bool = True,
        headers: Mapping[str, str] | None = None,
        signer: Identity | None = None,
    ) -> Any:
        """One JSON request; returns the decoded answer (``None`` for 204)."""
        raw = b"" if body is None else json.dumps(body).encode()
        base_headers = dict(headers or {})
        if body is not None:
            base_headers["Content-Type"] = "application/json"
        identity = signer or self.identity
        if signed and identity is None:
            raise RuntimeError("this request must be signed, and no device is set")
        safe = method in _SAFE and not (path.startswith(_BUNDLES) and path != "/v1/keys/status")
        tries = 2 if safe else 1
        for attempt in range(tries):
            all_headers = dict(base_headers)
            if identity is not None and signed:
                all_headers.update(
                    sign_request(
                        identity.signing_key,
                        identity.account_id,
                        identity.device_id,
                        method,
                        path,
                        raw,
                        now=int(self._clock()),
                        nonce=self._rng(NONCE_LEN),
                    )
                )
            try:
                response = await self._http.request(method, path, content=raw, headers=all_headers)
                break
            except httpx.HTTPError as exc:
                if isinstance(exc, _CLOSED) and attempt + 1 < tries:
                    continue  # closed under us before any answer: once more, signed anew
                raise ServerUnavailable(f"cannot reach {self.url}: {type(exc).__name__}") from None
        _raise_for(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(response.status_code, "bad_response", "not JSON") from None

    async def post_streamed(
        self, path: str, content: AsyncIterator[bytes], *, length: int
    ) -> tuple[Any, bytes]:
        """A signed POST whose body streams from ``content`` (exactly ``length`` bytes) in
        one pass (attachments): the headers are signed as for an empty body, and the
        signature over the body's SHA-256 follows the body (``?signature=trailer``, see
        :mod:`sealpost.protocol.signing`). Returns the decoded JSON answer and
        the SHA-256 of what was sent."""
        if self.identity is None:
            raise RuntimeError("this request must be signed, and no device is set")
        identity = self.identity
        target = f"{path}?{TRAILER_QUERY}"
        headers = sign_request(
            identity.signing_key,
            identity.account_id,
            identity.device_id,
            "POST",
            target,
            b"",
            now=int(self._clock()),
            nonce=self._rng(NONCE_LEN),
        )
        timestamp, nonce = headers[TIMESTAMP_HEADER], headers[NONCE_HEADER]
        headers["Content-Length"] = str(length + SIGNATURE_LEN)
        headers["Content-Type"] = "application/octet-stream"
        digest = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            async for piece in content:
                digest.update(piece)
                yield piece
            message = trailer_message("POST", target, timestamp, nonce, digest.digest())
            yield identity.signing_key.sign(message)

        try:
            response = await self._http.post(
                target, content=body(), headers=headers, timeout=httpx.Timeout(TIMEOUT, read=120)
            )
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"cannot reach {self.url}: {type(exc).__name__}") from None
        _raise_for(response)
        try:
            return response.json(), digest.digest()
        except ValueError:
            raise ServerError(response.status_code, "bad_response", "not JSON") from None

    @contextlib.asynccontextmanager
    async def get_streamed(self, path: str) -> AsyncIterator[httpx.Response]:
        """An unsigned GET whose body the caller reads from ``response.aiter_bytes()``; an
        error answer raises :class:`ServerError` before anything is yielded."""
        try:
            async with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                yield response
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"cannot reach {self.url}: {type(exc).__name__}") from None

    # -- the WebSockets

    async def _connect(self, path: str) -> ClientConnection:
        url = self.ws_url(path)
        try:
            return await connect(
                url,
                ssl=self.tls if url.startswith("wss://") else None,
                open_timeout=TIMEOUT,
                close_timeout=2,
                max_size=MAX_FRAME,
                compression=None,  # never compress what an attacker may partly choose
                create_connection=CorkedConnection,  # a burst of frames: one write
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise ServerUnavailable(f"cannot reach {self.url}: {type(exc).__name__}") from None

    async def open_stream(self) -> Stream:
        if self.identity is None:
            raise RuntimeError("a stream needs a device identity")
        ws = await self._connect("/v1/stream")
        try:
            stream = Stream(ws)
            await stream.authenticate(self.identity)
        except BaseException:
            await ws.close()
            raise
        return stream

    async def open_sealed(self) -> SealedSocket:
        return SealedSocket(await self._connect("/v1/sealed"))

    async def open_link(self, kem_public: bytes) -> LinkChannel:
        """Open a link channel (``/v1/link``) for a new device; see :class:`LinkChannel`."""
        ws = await self._connect("/v1/link")
        try:
            await ws.send(json.dumps({"type": "open", "kem": b64(kem_public)}))
            doc = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            if not isinstance(doc, dict) or doc.get("type") != "channel":
                raise ServerError(0, "bad_response", "the server did not open a link channel")
            channel = bytes.fromhex(str(doc.get("id")))
            if len(channel) != 16:
                raise ServerError(0, "bad_response", "malformed link channel id")
        except (ConnectionClosed, TimeoutError, ValueError):
            await ws.close()
            raise ServerUnavailable("the server did not open a link channel") from None
        except BaseException:
            await ws.close()
            raise
        return LinkChannel(ws, channel)


if TYPE_CHECKING:  # mypy checks that these are the relay the services expect

    def _conforms(
        transport: Transport, stream: Stream, sealed: SealedSocket, link: LinkChannel
    ) -> tuple[RelayTransport, RelayStream, RelaySealed, RelayLink]:
        return transport, stream, sealed, link
