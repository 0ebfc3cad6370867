"""The frames the client writes by hand (client/sockets.py): a ``send`` and an ``ack``
are the JSON of docs/PROTOCOL.md, exactly the documents ``json.dumps`` made before, and
they are accepted by the server's own frame decoder."""

from __future__ import annotations

import json
import os

import msgspec
import pytest

from sealpost.client.errors import ServerError
from sealpost.client.sockets import _ack_frame, _send_frame, b64, unb64
from sealpost.server.frames import AckFrame, SendFrame


def test_a_send_frame_is_the_documented_json_with_and_without_tokens() -> None:
    a, b = os.urandom(16), os.urandom(16)
    messages = [(a, 1, os.urandom(700)), (b, 7, b"x")]
    docs = [
        {"account_id": account.hex(), "device_id": device, "body": b64(body)}
        for account, device, body in messages
    ]
    assert json.loads(_send_frame(9, messages, {})) == {
        "type": "send",
        "req": 9,
        "messages": docs,
    }
    tokens = {a: os.urandom(32), b: os.urandom(32)}
    frame = _send_frame(2**40, messages, tokens)
    assert json.loads(frame) == {
        "type": "send",
        "req": 2**40,
        "messages": docs,
        "tokens": {account.hex(): b64(t) for account, t in tokens.items()},
    }
    decoded = msgspec.json.decode(frame, type=SendFrame)  # what the server reads
    assert [m.body for m in decoded.messages] == [body for _, _, body in messages]


def test_an_ack_frame_is_the_documented_json() -> None:
    server_id = os.urandom(16)
    frame = _ack_frame(server_id)
    assert json.loads(frame) == {"type": "ack", "id": server_id.hex()}
    assert msgspec.json.decode(frame, type=AckFrame).id == server_id.hex()


def test_base64_from_the_server_is_read_strictly() -> None:
    body = os.urandom(1700)
    assert unb64(b64(body)) == body and unb64("") == b""
    for bad in ("YQ", "Y Q==", "YQ==YQ==", "=YQ=", "YQ===", "YQ==\n", "é", None, 5):
        with pytest.raises(ServerError) as caught:
            unb64(bad)
        assert caught.value.code == "bad_response"
