"""Sends over the WebSockets: sealed on /v1/sealed, own-device copies on /v1/stream;
pipelining keeps order; a second connection of a device replaces the first."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from helpers import TIMEOUT, Client, Device, ServerProcess, b64, unb64
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


def send_frame(
    req: int, envelopes: list[tuple[bytes, int, bytes]], tokens: dict[bytes, bytes] | None = None
) -> str:
    doc: dict[str, Any] = {
        "type": "send",
        "req": req,
        "messages": [
            {"account_id": a.hex(), "device_id": d, "body": b64(body)} for a, d, body in envelopes
        ],
    }
    if tokens is not None:
        doc["tokens"] = {a.hex(): b64(t) for a, t in tokens.items()}
    return json.dumps(doc)


def sealed_socket(server: ServerProcess) -> ClientConnection:
    return connect(
        server.ws_url.replace("/v1/stream", "/v1/sealed"), open_timeout=TIMEOUT, close_timeout=2
    )


def recv(ws: ClientConnection) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return doc


def test_sealed_socket_pipelines_sends_in_order(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    bob = registered()
    assert bob.device is not None
    token = {bob.device.account_id: bob.device.delivery_token}
    bodies = [f"envelope {i:03d}".encode() for i in range(50)]
    with sealed_socket(server) as ws:
        for i, body in enumerate(bodies):
            ws.send(send_frame(i, [(bob.device.account_id, 1, body)], token))
        answers = [recv(ws) for _ in bodies]
    assert answers == [{"type": "sent", "req": i, "stored": 1} for i in range(len(bodies))]
    with bob.stream() as stream:
        frames = stream.receive_messages(len(bodies))
    assert [unb64(f["body"]) for f in frames] == bodies


def test_pipelined_sealed_sends_and_refusals_are_answered_in_order(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    """Sends taken as the socket's frames are parsed (every check answered from memory)
    and those its handler takes (a recipient it must read, a frame that does not decode,
    a refusal once stored) interleave on one pipelined socket: every answer comes in the
    order of the sends, and only the good ones are stored, in order."""
    bob = registered()
    assert bob.device is not None
    account = bob.device.account_id
    token = {account: bob.device.delivery_token}
    stranger = bytes(16)  # no such account
    with sealed_socket(server) as ws:
        ws.send(send_frame(100, [(account, 1, b"warm")], token))  # its record now in memory
        assert recv(ws) == {"type": "sent", "req": 100, "stored": 1}
        frames = [
            send_frame(0, [(account, 1, b"good 0")], token),
            send_frame(1, [(account, 1, b"bad token")], {account: b"\x01" * 32}),
            send_frame(2, [(account, 1, b"good 2")], token),
            send_frame(3, [(account, 2, b"no such device")], token),
            send_frame(4, [(account, 1, b"good 4")], token),
            json.dumps({"type": "send", "req": 5, "messages": []}),
            send_frame(6, [(account, 1, b"good 6")], token),
            send_frame(7, [(stranger, 1, b"nobody")], {stranger: b"\x02" * 32}),
            send_frame(8, [(account, 1, b"good 8")], token),
        ]
        for frame in frames:
            ws.send(frame)
        answers = [recv(ws) for _ in frames]
    assert [a["req"] for a in answers] == list(range(len(frames)))
    assert [a.get("error", a["type"]) for a in answers] == [
        "sent",
        "forbidden",
        "sent",
        "mismatched_devices",
        "sent",
        "invalid_request",
        "sent",
        "not_found",
        "sent",
    ]
    with bob.stream() as stream:
        pushed = stream.receive_messages(6)
    stored = [b"warm", b"good 0", b"good 2", b"good 4", b"good 6", b"good 8"]
    assert [unb64(f["body"]) for f in pushed] == stored


def test_sealed_socket_errors_are_answered_and_store_nothing(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    bob = registered()
    assert bob.device is not None
    account = bob.device.account_id
    with sealed_socket(server) as ws:
        ws.send(send_frame(1, [(account, 1, b"x")], {account: b"\x01" * 32}))
        assert recv(ws) | {"message": ""} == {
            "type": "error",
            "req": 1,
            "error": "forbidden",
            "message": "",
        }
        ws.send(send_frame(2, [(account, 2, b"x")], {account: bob.device.delivery_token}))
        mismatch = recv(ws)
        assert mismatch["error"] == "mismatched_devices" and mismatch["req"] == 2
        assert mismatch["accounts"][account.hex()]["missing"] == [1]
        assert mismatch["accounts"][account.hex()]["extra"] == [2]
        ws.send(json.dumps({"type": "send", "req": 3, "messages": []}))
        assert recv(ws)["error"] == "invalid_request"
        ws.send(send_frame(4, [(account, 1, b"x")], None).replace('"req": 4', '"req": "4"'))
        with pytest.raises(ConnectionClosed):
            recv(ws)
        assert ws.close_code == 4400
    assert bob.request("GET", "/v1/messages").json()["messages"] == []


def test_acks_are_refused_on_the_sealed_socket(server: ServerProcess) -> None:
    with sealed_socket(server) as ws:
        ws.send(json.dumps({"type": "ack", "id": "00" * 16}))
        with pytest.raises(ConnectionClosed):
            recv(ws)
        assert ws.close_code == 4400


def test_own_device_copies_go_over_the_authenticated_stream(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    alice = registered()
    assert alice.device is not None
    second = Device.generate(alice.device.account, device_id=2)
    linked = Client(server.url, second)
    try:
        assert linked.add_device().status_code == 201
        with alice.stream() as first_stream:
            # device 1 is exempt from its own account's list: naming device 2 is complete
            first_stream.ws.send(send_frame(7, [(alice.device.account_id, 2, b"copy")]))
            assert json.loads(first_stream.ws.recv(timeout=TIMEOUT)) == {"type": "empty"}
            assert json.loads(first_stream.ws.recv(timeout=TIMEOUT)) == {
                "type": "sent",
                "req": 7,
                "stored": 1,
            }
        with linked.stream() as second_stream:
            [frame] = second_stream.receive_messages(1)
            assert unb64(frame["body"]) == b"copy"
    finally:
        linked.close()


def test_a_second_connection_replaces_the_first(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    alice, bob = registered(), registered()
    assert bob.device is not None
    with bob.stream() as old, bob.stream() as new:
        with pytest.raises(ConnectionClosed):
            while True:
                assert json.loads(old.ws.recv(timeout=TIMEOUT)) == {"type": "empty"}
        assert old.ws.close_code == 4409
        response = alice.send_sealed(
            [(bob.device.account_id, 1, b"only to the new one")],
            {bob.device.account_id: bob.device.delivery_token},
        )
        assert response.status_code == 200
        [frame] = new.receive_messages(1)
        assert unb64(frame["body"]) == b"only to the new one"


def test_empty_marks_the_end_of_the_backlog(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    alice, bob = registered(), registered()
    assert bob.device is not None
    for i in range(3):
        alice.send_sealed(
            [(bob.device.account_id, 1, b"queued %d" % i)],
            {bob.device.account_id: bob.device.delivery_token},
        )
    with bob.stream() as stream:
        kinds = [stream.recv()["type"] for _ in range(4)]
        assert kinds == ["message", "message", "message", "empty"]
        alice.send_sealed(
            [(bob.device.account_id, 1, b"later")],
            {bob.device.account_id: bob.device.delivery_token},
        )
        assert [stream.recv()["type"] for _ in range(2)] == ["message", "empty"]


def test_a_reader_that_stalls_gets_every_push_once_in_order(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    """Pushes that fill the socket's buffers while the client reads nothing (the server's
    transport pauses) wait for it and then go out in queue order, none lost or doubled,
    whichever way each frame was written (at once, or through a waiting ASGI send)."""
    bob = registered()
    assert bob.device is not None
    token = {bob.device.account_id: bob.device.delivery_token}
    bodies = [b"%03d" % i + bytes([i]) * 60_000 for i in range(120)]  # 7 MB in all
    with bob.stream() as stream:
        assert stream.recv()["type"] == "empty"
        with sealed_socket(server) as ws:
            for i, body in enumerate(bodies):
                ws.send(send_frame(i, [(bob.device.account_id, 1, body)], token))
            assert [recv(ws)["req"] for _ in bodies] == list(range(len(bodies)))
        frames = stream.receive_messages(len(bodies))
        assert [unb64(f["body"]) for f in frames] == bodies
        assert len({f["id"] for f in frames}) == len(bodies)
