"""Authentication failures and hostile input: each gets its JSON error, none changes state
or takes the server down."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import httpx
import pytest
from helpers import Client, Device, ServerProcess, b64, envelopes_json, unb64, unique_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sealpost.protocol.signing import sign_websocket_challenge


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and isinstance(body["message"], str)


def test_replayed_request_is_rejected(registered: Callable[..., Client]) -> None:
    bob = registered()
    nonce = os.urandom(16)
    now = int(time.time())
    first = bob.request("GET", "/v1/keys/status", nonce=nonce, now=now)
    assert first.status_code == 200
    assert_error(bob.request("GET", "/v1/keys/status", nonce=nonce, now=now), 401, "replayed")


def test_stale_or_forged_requests_are_rejected(registered: Callable[..., Client]) -> None:
    bob = registered()
    assert bob.device is not None
    assert_error(
        bob.request("GET", "/v1/keys/status", now=int(time.time()) - 301), 401, "clock_skew"
    )
    assert_error(
        bob.request("GET", "/v1/keys/status", now=int(time.time()) + 301), 401, "clock_skew"
    )
    # signature by another key for bob's account and device
    impostor = Device.generate(bob.device.account, device_id=1)
    with Client(bob.url, impostor) as client:
        assert_error(client.request("GET", "/v1/messages"), 401, "unauthorized")
    # a signature for one path does not authorise another
    headers = dict(bob.request("GET", "/v1/keys/status").request.headers)
    replay_elsewhere = bob.http.get("/v1/messages", headers=headers)
    assert_error(replay_elsewhere, 401, "unauthorized")
    # unknown device, garbage headers
    with Client(bob.url, Device.generate()) as stranger:
        assert_error(stranger.request("GET", "/v1/messages"), 401, "unauthorized")
    assert_error(
        bob.http.get("/v1/messages", headers={"X-Sealpost-Account": "zz"}), 401, "unauthorized"
    )
    assert_error(bob.http.get("/v1/messages"), 401, "unauthorized")


BAD_BODIES: list[tuple[bytes, int, str]] = [
    (b"{not json", 400, "malformed_json"),
    (b"[1, 2]", 400, "malformed_json"),
    (b"\xff\xfe", 400, "malformed_json"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "malformed_json"),  # deep nesting
    (json.dumps({"messages": "x"}).encode(), 400, "invalid_request"),
    (json.dumps({"messages": []}).encode(), 400, "invalid_request"),
    (json.dumps({"messages": [1]}).encode(), 400, "invalid_request"),
    (
        json.dumps({"messages": [{"account_id": "00", "device_id": 1, "body": "AA=="}]}).encode(),
        400,
        "invalid_request",
    ),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
def test_malformed_send(
    registered: Callable[..., Client], body: bytes, status: int, code: str
) -> None:
    bob = registered()
    assert_error(bob.request("PUT", "/v1/messages", content=body, signed=False), status, code)
    assert bob.request("GET", "/v1/messages").json()["messages"] == []


def test_wrong_types_and_encodings_change_nothing(registered: Callable[..., Client]) -> None:
    bob = registered()
    assert bob.device is not None
    target = bob.device.account_id.hex()
    cases = [
        {"account_id": target, "device_id": "1", "body": "AA=="},
        {"account_id": target, "device_id": True, "body": "AA=="},
        {"account_id": target, "device_id": -1, "body": "AA=="},
        {"account_id": target, "device_id": 2**40, "body": "AA=="},
        {"account_id": target, "device_id": 1, "body": "not base64!"},
        {"account_id": target, "device_id": 1, "body": 12},
        {"account_id": target.upper()[:-1] + "g", "device_id": 1, "body": "AA=="},
        {"account_id": target, "device_id": 1},
    ]
    for case in cases:
        response = bob.request("PUT", "/v1/messages", json_body={"messages": [case]}, signed=False)
        assert_error(response, 400, "invalid_request")
    status = bob.request("GET", "/v1/keys/status").json()
    for body in [{"one_time_prekeys": "x"}, {"one_time_prekeys": [1]}, {"signed_prekey": 5}]:
        assert_error(bob.request("PUT", "/v1/keys", json_body=body), 400, "invalid_request")
    assert bob.request("GET", "/v1/keys/status").json() == status
    registration = Device.generate().registration("fine_name")
    for key, value in [("username", 7), ("account_key", "AAAA"), ("delivery_token", b64(b"short"))]:
        with Client(bob.url, Device.generate()) as client:
            body = {**registration, key: value}
            assert_error(
                client.request("POST", "/v1/accounts", json_body=body), 400, "invalid_request"
            )
    assert bob.request("GET", "/v1/messages").json()["messages"] == []


def test_size_limits(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(
        "--max-envelope", "1000", "--max-message-request", "4000", "--max-envelopes", "3"
    )
    with Client(server.url, Device.generate()) as bob:
        assert bob.register("bob").status_code == 201
        assert bob.device is not None
        me = bob.device.account_id
        big = bob.send_sealed([(me, 1, os.urandom(1001))])
        assert_error(big, 413, "too_large")
        many = envelopes_json([(me, d, b"x") for d in range(1, 5)])
        assert_error(
            bob.request("PUT", "/v1/messages", json_body=many, signed=False), 413, "too_large"
        )
        huge = bob.request("PUT", "/v1/messages", content=b" " * 5000, signed=False)
        assert_error(huge, 413, "too_large")
        assert bob.send_sealed([(me, 1, os.urandom(1000))]).status_code == 200
        assert len(bob.request("GET", "/v1/messages").json()["messages"]) == 1


def test_unknown_routes_and_methods_are_json(server: ServerProcess) -> None:
    with Client(server.url) as client:
        assert_error(client.http.get("/nope"), 404, "not_found")
        assert_error(client.http.delete("/v1/accounts"), 405, "method_not_allowed")
        assert_error(client.http.get(f"/v1/attachments/{'00' * 32}"), 404, "not_found")
        assert_error(client.http.get("/v1/attachments/../../etc/passwd"), 404, "not_found")
        assert_error(client.http.get("/v1/attachments/zz"), 400, "invalid_request")


def ws_close_code(server: ServerProcess, frames: list[str | bytes], device: Device | None) -> int:
    with connect(server.ws_url, open_timeout=10, close_timeout=2) as ws:
        challenge = json.loads(ws.recv(timeout=10))
        if device is not None:
            answer = sign_websocket_challenge(
                device.keys.signing_key, device.account_id, device.device_id, b"\x00" * 32
            )
            answer = sign_websocket_challenge(
                device.keys.signing_key,
                device.account_id,
                device.device_id,
                unb64(challenge["challenge"]),
            )
            ws.send(json.dumps(answer))
            assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
        for frame in frames:
            ws.send(frame)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
        assert ws.close_code is not None
        return ws.close_code


def test_websocket_bad_frames(server: ServerProcess, registered: Callable[..., Client]) -> None:
    bob = registered()
    assert bob.device is not None
    assert ws_close_code(server, ["not json"], None) == 4400
    assert ws_close_code(server, [json.dumps({"type": "auth"})], None) == 4400
    wrong = Device.generate(bob.device.account, device_id=1)
    bad_auth = sign_websocket_challenge(wrong.keys.signing_key, bob.device.account_id, 1, b"x" * 32)
    assert ws_close_code(server, [json.dumps(bad_auth)], None) == 4401
    assert ws_close_code(server, [b"\x00binary"], bob.device) == 4400
    assert ws_close_code(server, [json.dumps({"type": "ack", "id": "zz"})], bob.device) == 4400
    assert ws_close_code(server, ["x" * 500_000], bob.device) == 1009
    # the server is still fine
    assert bob.request("GET", "/v1/keys/status").status_code == 200


# A JSON integer past Python's 4300-digit str-to-int limit (json.loads raises ValueError).
HUGE = "1" * 5000


def _huge_in(doc: dict[str, object], key: str) -> bytes:
    """``doc`` as JSON with the value of ``key`` replaced by a 5000-digit integer."""
    marker = "__huge__"
    text = json.dumps({**doc, key: marker})
    return text.replace(f'"{marker}"', HUGE).encode()


def test_huge_json_integer_is_a_400_on_every_json_route(
    registered: Callable[..., Client],
) -> None:
    bob = registered()
    assert bob.device is not None
    me = bob.device.account_id.hex()
    fresh = Device.generate()
    linked = Device.generate(bob.device.account, device_id=2)
    envelope = {"account_id": me, "device_id": 1, "body": "AA=="}
    name = unique_name()
    registration = fresh.registration(name)
    cases = [
        ("POST", "/v1/accounts", _huge_in(registration, "username"), fresh),
        ("POST", "/v1/accounts", _huge_in(registration, "sealed_from_anyone"), fresh),
        ("POST", "/v1/devices", _huge_in(linked.device_json(), "certificate"), linked),
        ("PUT", "/v1/messages", _huge_in({"messages": [envelope]}, "messages"), None),
        (
            "PUT",
            "/v1/messages",
            json.dumps({"messages": [{**envelope, "device_id": "__"}]})
            .replace('"__"', HUGE)
            .encode(),
            None,
        ),
        ("PUT", "/v1/messages/multi", _huge_in({"recipients": [[me, 1]]}, "body"), None),
        ("PUT", "/v1/keys", _huge_in({}, "signed_prekey"), bob.device),
    ]
    for method, path, body, signer in cases:
        with Client(bob.url, signer) as client:
            response = client.request(method, path, content=body, signed=signer is not None)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] in {"malformed_json", "invalid_request"}
    assert bob.request("GET", "/v1/messages").json()["messages"] == []
    assert bob.lookup(name).status_code == 404


def test_huge_json_integer_on_the_sockets_is_a_4400(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    bob = registered()
    assert bob.device is not None
    send = f'{{"type": "send", "req": {HUGE}, "messages": []}}'
    auth = f'{{"type": "auth", "account": "{"00" * 16}", "device": {HUGE}, "signature": ""}}'
    assert ws_close_code(server, [auth], None) == 4400
    assert ws_close_code(server, [send], bob.device) == 4400
    sealed = server.ws_url.replace("/v1/stream", "/v1/sealed")
    with connect(sealed, open_timeout=10, close_timeout=2) as ws:
        ws.send(send)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4400


def test_hex_ids_with_whitespace_are_a_400(registered: Callable[..., Client]) -> None:
    bob = registered()
    short = "%20" + "00" * 31 + "%20"  # 64 characters once decoded, 31 bytes to fromhex
    assert_error(bob.http.get(f"/v1/attachments/{short}"), 400, "invalid_request")
    message = "%20" + "00" * 15 + "%20"
    assert_error(bob.request("DELETE", f"/v1/messages/{message}"), 400, "invalid_request")
    assert bob.request("GET", "/v1/keys/status").status_code == 200


def test_deep_json_on_the_link_socket_is_a_4400(server: ServerProcess) -> None:
    link = server.ws_url.replace("/v1/stream", "/v1/link")
    for frame in ["[" * 100_000 + "]" * 100_000, f'{{"type": "open", "kem": {HUGE}}}']:
        with connect(link, open_timeout=10, close_timeout=2) as ws:
            ws.send(frame)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 4400


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from([HUGE, "AA==", "00" * 16, " " + "00" * 15 + " ", "1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=25,
)
_FIELDS = [
    "username",
    "account_key",
    "certificate",
    "delivery_token",
    "sealed_from_anyone",
    "signed_prekey",
    "kem_last_resort",
    "one_time_prekeys",
    "kem_one_time_prekeys",
    "messages",
    "account_id",
    "device_id",
    "body",
    "shared",
    "recipients",
    "tokens",
    "revocation",
]
_JSON_ROUTES = [
    ("POST", "/v1/accounts"),
    ("POST", "/v1/devices"),
    ("DELETE", "/v1/devices/2"),
    ("PUT", "/v1/keys"),
    ("PUT", "/v1/messages"),
    ("PUT", "/v1/messages/multi"),
    ("PUT", f"/v1/link/{'00' * 16}"),
]
_fuzz_account: list[Client] = []


def _fuzz_client(server: ServerProcess) -> Client:
    if not _fuzz_account:
        client = Client(server.url, Device.generate())
        assert client.register(unique_name()).status_code == 201
        _fuzz_account.append(client)
    return _fuzz_account[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(_JSON_ROUTES),
    signed=st.booleans(),
    doc=_json_values | st.dictionaries(st.sampled_from(_FIELDS), _json_values, max_size=6),
    raw=st.sampled_from(["", HUGE, "[" * 5000, '{"a":' * 5000]),
)
def test_random_json_bodies_never_get_a_500(
    server: ServerProcess, route: tuple[str, str], signed: bool, doc: object, raw: str
) -> None:
    client = _fuzz_client(server)
    body = (raw if raw else json.dumps(doc)).encode()
    method, path = route
    response = client.request(method, path, content=body, signed=signed)
    assert response.status_code < 500, response.text
    answer = response.json()
    assert isinstance(answer.get("error"), str) or response.status_code < 300, answer


_FRAME_FIELDS = ["type", "req", "messages", "tokens", "body", "shared", "recipients", "id"]
_frame_docs = st.dictionaries(st.sampled_from(_FRAME_FIELDS), _json_values, max_size=5) | st.just(
    {}
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=_frame_docs,
    kind=st.sampled_from(["send", "send_multi", "ack", "auth", "nope"]),
    socket=st.sampled_from(["/v1/sealed", "/v1/stream"]),
)
def test_random_frames_never_close_a_socket_with_1011(
    server: ServerProcess, doc: dict[str, object], kind: str, socket: str
) -> None:
    """Each frame is answered (sent or error) or closes the socket with a 44xx code."""
    client = _fuzz_client(server)
    frame = json.dumps({"type": kind, **doc}).replace('"1"', HUGE)
    device = client.device if socket == "/v1/stream" else None
    url = server.ws_url.replace("/v1/stream", socket)
    with connect(url, open_timeout=10, close_timeout=2) as ws:
        if device is not None:
            challenge = json.loads(ws.recv(timeout=10))
            answer = sign_websocket_challenge(
                device.keys.signing_key,
                device.account_id,
                device.device_id,
                unb64(challenge["challenge"]),
            )
            ws.send(json.dumps(answer))
            assert json.loads(ws.recv(timeout=10)) == {"type": "ready"}
        ws.send(frame)
        try:
            while True:
                reply = json.loads(ws.recv(timeout=2))
                if reply.get("type") in ("error", "sent"):
                    assert reply["type"] != "error" or isinstance(reply["message"], str)
                    break
        except ConnectionClosed:
            assert ws.close_code is not None and 4400 <= ws.close_code < 4500, ws.close_code
        except TimeoutError:
            pass  # an ack of an unknown id: nothing to answer
