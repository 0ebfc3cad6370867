"""Issue 14, item 3: connections and descriptors cannot be held or exhausted by a slow or
idle client (header and body deadlines, a connection cap, sealed sockets' idle timeout and
per-address cap, uploads authenticated before their body is stored)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import TIMEOUT, Client, Device, ServerProcess, wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sealpost.protocol.signing import DIGEST_HEADER, sign_request


@contextmanager
def raw_socket(server: ServerProcess) -> Iterator[socket.socket]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes; (closed in time, what it sent)."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_slow_headers_are_cut_off(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--header-timeout", "1")
    with raw_socket(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the end
        started = time.monotonic()
        closed, _ = closed_within(sock, 5)
        assert closed and time.monotonic() - started < 4
    with raw_socket(server) as sock:  # a connection that sends nothing at all
        closed, _ = closed_within(sock, 5)
        assert closed
    with raw_socket(server) as sock:  # a prompt request is answered
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        closed, answer = closed_within(sock, 5)
        assert closed and answer.startswith(b"HTTP/1.1 200")


def test_connection_cap_answers_busy(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--max-connections", "3", "--header-timeout", "30")
    with ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(raw_socket(server))
        time.sleep(0.2)
        with raw_socket(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            closed, answer = closed_within(sock, 5)
        assert closed
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert json.loads(body)["error"] == "busy"
    time.sleep(0.2)
    with raw_socket(server) as sock:  # the held ones closed: room again
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        closed, answer = closed_within(sock, 5)
        assert answer.startswith(b"HTTP/1.1 200")


def _sealed_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://", 1) + "/v1/sealed"


def _close_code(ws: ClientConnection, timeout: float) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def test_sealed_socket_idle_timeout(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--sealed-idle-timeout", "1")
    with connect(_sealed_url(server), open_timeout=TIMEOUT) as busy:
        for _ in range(4):  # frames keep a socket open past the timeout
            time.sleep(0.4)
            busy.send(json.dumps({"type": "send", "req": 1, "messages": []}))
            assert json.loads(busy.recv(timeout=TIMEOUT))["type"] == "error"
        started = time.monotonic()
        assert _close_code(busy, 5) == 4408  # then silence closes it
        assert time.monotonic() - started < 3


def test_sealed_sockets_capped_per_address(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--max-sockets-per-address", "2")
    with ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(connect(_sealed_url(server), open_timeout=TIMEOUT))
        with pytest.raises(InvalidStatus) as refused:  # refused before the upgrade
            connect(_sealed_url(server), open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 403
    time.sleep(0.3)
    with connect(_sealed_url(server), open_timeout=TIMEOUT) as again:  # room again
        again.send(json.dumps({"type": "send", "req": 1, "messages": []}))
        assert json.loads(again.recv(timeout=TIMEOUT))["type"] == "error"


def test_slow_body_is_cut_off(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--body-timeout", "1")
    with raw_socket(server) as sock:
        sock.sendall(
            b"PUT /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        started = time.monotonic()
        sock.settimeout(0.3)
        answer = b""
        for _ in range(20):  # one byte every 0.3 s
            try:
                sock.sendall(b" ")
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                break
        closed, rest = closed_within(sock, 5)
        answer += rest
    assert time.monotonic() - started < 4
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body) == {
        "error": "timeout",
        "message": "the request body did not arrive in time",
    }
    assert closed


def _parts(server: ServerProcess) -> list[Path]:
    return list((server.data / "blobs").glob("*.part"))


def test_upload_unauthenticated_body_not_stored(make_server: Callable[..., ServerProcess]) -> None:
    """A header-signed upload whose signature is forged is refused before its body: no
    ``.part`` file is ever written, and the answer comes while the body is still unsent."""
    server = make_server()
    device, stranger = Device.generate(), Device.generate()
    with Client(server.url, device) as alice:
        assert alice.register("alice").status_code == 201
    blob_digest = hashlib.sha256(b"z" * 10_000_000).hexdigest()
    headers = sign_request(
        stranger.keys.signing_key,  # not alice's key
        device.account_id,
        1,
        "POST",
        "/v1/attachments",
        b"z" * 10_000_000,
        now=int(time.time()),
        nonce=os.urandom(16),
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with raw_socket(server) as sock:
        sock.sendall(
            b"POST /v1/attachments HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
            + f"{DIGEST_HEADER}: {blob_digest}\r\n{head}\r\n".encode()
        )
        sock.sendall(b"z" * 200_000)  # a start of the body, the rest never comes
        sock.settimeout(5)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert _parts(server) == []
    assert list((server.data / "blobs").iterdir()) == []


def test_aborted_upload_leaves_no_part_file(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server()
    device = Device.generate()
    with Client(server.url, device) as alice:
        assert alice.register("alice").status_code == 201
    target = "/v1/attachments?signature=trailer"
    headers = sign_request(
        device.keys.signing_key,
        device.account_id,
        1,
        "POST",
        target,
        b"",
        now=int(time.time()),
        nonce=os.urandom(16),
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with raw_socket(server) as sock:
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n{head}\r\n".encode()
        )
        sock.sendall(b"y" * 1_000_000)
        wait_for(lambda: _parts(server), what="the upload to start")
    # the client went away mid-body: its partial file goes with it
    wait_for(lambda: not _parts(server), what="the .part file to be removed")
    assert list((server.data / "blobs").iterdir()) == []
