"""Issue 14, item 5: device-link channels cannot be held by someone without an account:
a cap per client address, and a short life until a device of the account fetches the
channel's key."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import ExitStack

import pytest
from helpers import TIMEOUT, Client, Device, ServerProcess, b64
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

KEM = os.urandom(1184)  # the relay only forwards it


def _open(stack: ExitStack, server: ServerProcess) -> tuple[ClientConnection, str]:
    url = server.url.replace("http://", "ws://", 1) + "/v1/link"
    ws = stack.enter_context(connect(url, open_timeout=TIMEOUT))
    ws.send(json.dumps({"type": "open", "kem": b64(KEM)}))
    doc = json.loads(ws.recv(timeout=TIMEOUT))
    assert doc["type"] == "channel"
    return ws, doc["id"]


def _close_code(ws: ClientConnection, timeout: float) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def test_link_channels_capped_per_address(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--link-channels-per-address", "2")
    with ExitStack() as stack:
        for _ in range(2):
            _open(stack, server)
        with pytest.raises(InvalidStatus) as refused:
            _open(stack, server)
        assert refused.value.response.status_code == 403
    time.sleep(0.3)
    with ExitStack() as stack:
        _open(stack, server)  # the first two closed: room again


def test_link_channel_lives_briefly_until_its_key_is_fetched(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server("--link-key-ttl", "1", "--link-ttl", "30")
    with Client(server.url, Device.generate()) as alice, ExitStack() as stack:
        assert alice.register("alice").status_code == 201
        unfetched, _ = _open(stack, server)
        started = time.monotonic()
        assert _close_code(unfetched, 5) == 4408
        assert time.monotonic() - started < 3
        fetched, channel = _open(stack, server)
        key = alice.request("GET", f"/v1/link/{channel}")
        assert key.status_code == 200 and key.json()["kem"] == b64(KEM)
        time.sleep(1.5)  # past link_key_ttl: still open, its key was fetched
        provision = alice.request("PUT", f"/v1/link/{channel}", json_body={"body": b64(b"p")})
        assert provision.status_code == 200, provision.text
        assert json.loads(fetched.recv(timeout=TIMEOUT)) == {"type": "provision", "body": b64(b"p")}
