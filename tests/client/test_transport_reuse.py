"""The transport's kept-alive HTTP connections (client/transport.py) against a server that
closes a kept-alive connection under the next request without answering it, as any HTTP
server does when its idle timer fires just as a client reuses the connection: a raw
asyncio server on a loopback port, answering each connection's first request and closing
on its second.

A safe request (GET) is sent once more on a new connection, signed anew (a fresh nonce:
the server may have seen the first); any other method is not resent and fails as
``ServerUnavailable``. And the client drops an idle connection well before the relay's
own keep-alive closes it, which is what made the race likely (both were 5 s)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from sealpost.client import transport as client_transport
from sealpost.client.errors import ServerUnavailable
from sealpost.client.transport import Identity, Transport
from sealpost.crypto.sign import SigningKey
from sealpost.protocol.signing import NONCE_HEADER
from sealpost.server import run as server_run


@dataclass
class Seen:
    """What the server read: (connection number, method, headers) per request."""

    requests: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return method, headers


@asynccontextmanager
async def closing_on_reuse() -> AsyncIterator[tuple[str, Seen]]:
    seen = Seen()
    count = 0
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        writers.append(writer)
        count += 1
        number = count
        served = 0
        while True:
            request = await _read_request(reader)
            if request is None:
                break
            seen.requests.append((number, *request))
            if served:  # a reused connection: close under the request, no answer
                break
            served += 1
            body = json.dumps({"ok": number}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        for writer in writers:  # handlers still reading when the client left
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


def _identity() -> Identity:
    return Identity(SigningKey.generate(os.urandom), b"\x01" * 16, 1)


def test_a_get_on_a_connection_closed_under_it_is_sent_again_signed_anew() -> None:
    async def scenario() -> tuple[list[object], Seen]:
        async with closing_on_reuse() as (url, seen), Transport(url, _identity()) as transport:
            first = await transport.request("GET", "/v1/keys/status")
            second = await transport.request("GET", "/v1/keys/status")
        return [first, second], seen

    answers, seen = asyncio.run(scenario())
    assert answers == [{"ok": 1}, {"ok": 2}]
    assert [(number, method) for number, method, _ in seen.requests] == [
        (1, "GET"),
        (1, "GET"),  # closed under it, unanswered
        (2, "GET"),  # the one resend, on a new connection
    ]
    nonces = [headers[NONCE_HEADER.lower()] for _, _, headers in seen.requests]
    assert nonces[1] != nonces[2] and len(set(nonces)) == 3


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_request_that_may_change_state_is_not_resent(method: str) -> None:
    async def scenario() -> Seen:
        async with closing_on_reuse() as (url, seen), Transport(url, _identity()) as transport:
            await transport.request("GET", "/v1/keys/status")
            with pytest.raises(ServerUnavailable, match="RemoteProtocolError"):
                await transport.request(method, "/v1/messages", body={"x": 1})
        return seen

    seen = asyncio.run(scenario())
    assert [(number, m) for number, m, _ in seen.requests] == [(1, "GET"), (1, method)]


def test_a_get_closed_under_it_twice_fails_after_one_resend() -> None:
    """One resend, not a loop: a server that closes every request's connection unanswered
    is unreachable."""

    async def scenario() -> Seen:
        seen = Seen()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await _read_request(reader)
            if request is not None:
                seen.requests.append((0, *request))
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            async with Transport(url, _identity()) as transport:
                with pytest.raises(ServerUnavailable):
                    await transport.request("GET", "/v1/keys/status")
        finally:
            server.close()
            await server.wait_closed()
        return seen

    assert [m for _, m, _ in asyncio.run(scenario()).requests] == ["GET", "GET"]


def test_the_client_drops_idle_connections_well_before_the_relay_does() -> None:
    """The relay closes an idle keep-alive connection after ``run.KEEP_ALIVE`` seconds,
    counted from when it wrote its answer; the client stops reusing one after
    ``transport.KEEP_ALIVE``, counted from when it read it. Seconds apart, so that a slow
    machine between the two clocks cannot put a reuse on a closing connection."""
    assert server_run.KEEP_ALIVE - client_transport.KEEP_ALIVE >= 2.0


def test_a_prekey_bundle_get_closed_under_it_is_not_resent() -> None:
    """``GET /v1/keys/{account}/{device}`` consumes one-time prekeys: the server may have
    served the first (one taken, its answer lost), so it is not sent again (which would
    take another, and charge its rate limit again) and fails as ``ServerUnavailable``."""
    bundle = "/v1/keys/" + "ab" * 16 + "/1"

    async def scenario() -> Seen:
        async with closing_on_reuse() as (url, seen), Transport(url, _identity()) as transport:
            await transport.request("GET", "/v1/keys/status")
            with pytest.raises(ServerUnavailable, match="RemoteProtocolError"):
                await transport.request("GET", bundle, signed=False)
        return seen

    seen = asyncio.run(scenario())
    assert [(number, m) for number, m, _ in seen.requests] == [(1, "GET"), (1, "GET")]
