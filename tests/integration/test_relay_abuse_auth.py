"""Issue 14, items 1 and 8: forged signatures cost their sender, not the account they
name; and the server's log at its default level holds no client address."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable

import pytest
from helpers import TIMEOUT, Client, Device, ServerProcess, Stream
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sealpost.protocol.signing import sign_request, sign_websocket_challenge


def _forged(client: Client, path: str) -> int:
    """A request naming the client's account and device, signed by a stranger's key."""
    assert client.device is not None
    stranger = Device.generate(one_time=0, kem_one_time=0)
    headers = sign_request(
        stranger.keys.signing_key,
        client.device.account_id,
        client.device.device_id,
        "GET",
        path,
        b"",
        now=int(time.time()),
        nonce=os.urandom(16),
    )
    return client.http.get(path, headers=headers).status_code


def _forged_handshake(server: ServerProcess, victim: Device) -> int:
    stranger = Device.generate(one_time=0, kem_one_time=0)
    with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
        challenge = json.loads(ws.recv(timeout=TIMEOUT))
        answer = sign_websocket_challenge(
            stranger.keys.signing_key,
            victim.account_id,
            victim.device_id,
            base64.b64decode(challenge["challenge"]),
        )
        ws.send(json.dumps(answer))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def test_rate_limit_not_charged_for_bad_signatures(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server("--rate-per-account", "5", "--rate-per-address", "0")
    with Client(server.url, Device.generate()) as alice:
        assert alice.register("alice").status_code == 201
        assert alice.device is not None
        # a stranger sends many requests in alice's name: every one fails...
        for _ in range(12):
            assert _forged(alice, "/v1/keys/status") == 401
        for _ in range(6):
            assert _forged_handshake(server, alice.device) == 4401
        # ...and alice's own requests and stream still go through
        assert alice.request("GET", "/v1/keys/status").status_code == 200
        with Stream(server.ws_url, alice.device):
            pass
        # her own requests are what her limit counts
        statuses = [alice.request("GET", "/v1/keys/status").status_code for _ in range(6)]
        assert 429 in statuses


def test_failed_authentications_are_charged_to_the_address(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server("--rate-auth-failures-per-address", "4", "--rate-per-address", "0")
    with Client(server.url, Device.generate()) as alice:
        assert alice.register("alice").status_code == 201
        assert alice.device is not None
        assert [_forged(alice, "/v1/keys/status") for _ in range(4)] == [401] * 4
        # past its budget, the address is refused before any check, valid or not
        assert _forged(alice, "/v1/keys/status") == 429
        refused = alice.request("GET", "/v1/keys/status")
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert _forged_handshake(server, alice.device) == 4429
        # unsigned requests are no authentication attempts
        assert alice.lookup("alice").status_code == 200


def test_no_client_address_in_logs(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server()
    with Client(server.url, Device.generate()) as alice:
        assert alice.register("alice").status_code == 201
        assert alice.device is not None
        assert alice.request("GET", "/v1/keys/status").status_code == 200
        assert _forged(alice, "/v1/keys/status") == 401
        assert alice.http.get("/no/such/path").status_code == 404
        with Stream(server.ws_url, alice.device):
            pass
        sealed = server.url.replace("http://", "ws://", 1) + "/v1/sealed"
        with connect(sealed, open_timeout=TIMEOUT) as ws:
            ws.send("not json")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=TIMEOUT)
        link = server.url.replace("http://", "ws://", 1) + "/v1/link"
        with connect(link, open_timeout=TIMEOUT) as ws:
            ws.send(json.dumps({"type": "nonsense"}))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=TIMEOUT)
    server.stop()
    logged = "".join(p.read_text() for p in server.logs.glob("stderr.*.log"))
    assert "127.0.0.1" not in logged
    assert "WebSocket" not in logged
