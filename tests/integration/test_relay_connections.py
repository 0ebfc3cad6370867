"""Issue 14, item 3: connections and descriptors cannot be held or exhausted by a slow or
idle client (header and body deadlines, a connection cap, sealed sockets' idle timeout and
per-address cap, uploads authenticated before their body is stored)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

from helpers import ServerProcess


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
