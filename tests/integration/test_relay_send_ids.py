"""Send ids at the relay (a real server process): an envelope's ``send_id`` makes a resend
of a message still queued store nothing and answer as the first send did, over HTTP, on
``/v1/sealed`` and for multi-recipient sends; the queued message's id is the one derived
from the send id and the device; a malformed send id is refused and stores nothing; a send
without send ids is stored as before (once per send); ``sealpost_messages_stored_total``
counts what was stored anew, not the resends, on both backends."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import Client, Device, ServerProcess, b64, unique_name
from test_relay_websocket_send import recv, sealed_socket

from sealpost.protocol.group_sealed import seal_group
from sealpost.protocol.send_id import queued_message_id


def _sealed(sender: Client, recipient: Client, body: bytes, send_id: bytes | None) -> Any:
    assert recipient.device is not None
    item: dict[str, Any] = {
        "account_id": recipient.device.account_id.hex(),
        "device_id": 1,
        "body": b64(body),
    }
    if send_id is not None:
        item["send_id"] = b64(send_id)
    headers = {
        "X-Sealpost-Delivery-Token": f"{recipient.device.account_id.hex()}:"
        + b64(recipient.device.delivery_token)
    }
    return sender.request(
        "PUT", "/v1/messages", json_body={"messages": [item]}, signed=False, headers=headers
    )


def _queued_ids(client: Client) -> list[str]:
    response = client.request("GET", "/v1/messages")
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["messages"]]


def test_a_resent_envelope_is_queued_once_under_its_derived_id(
    registered: Callable[..., Client],
) -> None:
    alice, bob = registered(), registered()
    assert bob.device is not None
    send_id = os.urandom(16)
    for _ in range(3):
        response = _sealed(alice, bob, b"one envelope", send_id)
        assert response.status_code == 200, response.text
        assert response.json() == {"stored": 1}  # as the first time
    expected = queued_message_id(send_id, bob.device.account_id, 1).hex()
    assert _queued_ids(bob) == [expected]
    # another send id is another message; no send id at all: stored every time, as before
    assert _sealed(alice, bob, b"another", os.urandom(16)).status_code == 200
    for _ in range(2):
        assert _sealed(alice, bob, b"old client", None).json() == {"stored": 1}
    assert len(_queued_ids(bob)) == 4
    # once acknowledged, the same send id queues it again (the recipient drops it by the
    # message id inside the encryption)
    assert bob.request("DELETE", f"/v1/messages/{expected}").status_code == 204
    assert _sealed(alice, bob, b"one envelope", send_id).status_code == 200
    assert _queued_ids(bob)[-1] == expected


def test_a_malformed_send_id_is_refused_and_stores_nothing(
    registered: Callable[..., Client],
) -> None:
    alice, bob = registered(), registered()
    for bad in (os.urandom(15), os.urandom(17), b""):
        response = _sealed(alice, bob, b"x", bad)
        assert response.status_code == 400, response.text
        assert "send_id" in response.json()["message"]
    assert _queued_ids(bob) == []


def test_sealed_socket_and_multi_sends_are_idempotent(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    bob, carol = registered(), registered()
    assert bob.device is not None and carol.device is not None
    members = [bob.device, carol.device]
    tokens = {d.account_id.hex(): b64(d.delivery_token) for d in members}
    send_id, multi_id = os.urandom(16), os.urandom(16)
    frame = {
        "type": "send",
        "messages": [
            {"account_id": bob.device.account_id.hex(), "device_id": 1, "body": b64(b"ws")}
        ],
        "tokens": {bob.device.account_id.hex(): tokens[bob.device.account_id.hex()]},
    }
    multi = {
        "type": "send_multi",
        "body": b64(seal_group(b"to the group", os.urandom(32), os.urandom)),
        "recipients": [[d.account_id.hex(), 1] for d in members],
        "tokens": tokens,
        "send_id": b64(multi_id),
    }
    frame["messages"][0]["send_id"] = b64(send_id)
    with sealed_socket(server) as ws:
        for req in range(1, 5, 2):  # each sent twice: a resend on the same socket
            ws.send(json.dumps({**frame, "req": req}))
            ws.send(json.dumps({**multi, "req": req + 1}))
        answers = [recv(ws) for _ in range(4)]
    assert [a["stored"] for a in answers] == [1, 2, 1, 2]
    assert _queued_ids(bob) == [
        queued_message_id(send_id, bob.device.account_id, 1).hex(),
        queued_message_id(multi_id, bob.device.account_id, 1).hex(),
    ]
    assert _queued_ids(carol) == [queued_message_id(multi_id, carol.device.account_id, 1).hex()]


@pytest.fixture(params=["sqlite", "postgres"])
def backend_args(request: pytest.FixtureRequest) -> Iterator[tuple[str, ...]]:
    """A server's arguments for SQLite, or for a fresh PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield ()
        return
    from services import fresh_database

    with fresh_database() as dsn:
        yield ("--database", dsn)


def _stored_total(server: ServerProcess) -> int:
    with Client(server.url) as client:
        text = client.request("GET", "/metrics", signed=False).text
    found = re.search(r"^sealpost_messages_stored_total(?:{})? (\d+)$", text, re.MULTILINE)
    return 0 if found is None else int(found.group(1))


def test_the_stored_metric_counts_messages_stored_anew_not_resends(
    make_server: Callable[..., ServerProcess], backend_args: tuple[str, ...]
) -> None:
    """The answer's ``stored`` is the envelopes accepted, a resend's as the first's; the
    metric is what the queues gained, so stored less acknowledged stays what they hold."""
    server = make_server("--rate-per-address", "0", "--rate-sealed-per-address", "0", *backend_args)
    clients = [Client(server.url) for _ in range(3)]
    try:
        alice, bob, carol = clients
        for client in (bob, carol):
            client.device = Device.generate()
            assert client.register(unique_name("m")).status_code == 201
        assert bob.device is not None and carol.device is not None
        send_id = os.urandom(16)
        for _ in range(3):
            assert _sealed(alice, bob, b"one envelope", send_id).json() == {"stored": 1}
        assert _stored_total(server) == 1
        for _ in range(2):  # no send id: stored each time
            assert _sealed(alice, bob, b"old client", None).json() == {"stored": 1}
        assert _stored_total(server) == 3
        members = [bob.device, carol.device]
        multi = {
            "body": b64(seal_group(b"to the group", os.urandom(32), os.urandom)),
            "recipients": [[d.account_id.hex(), 1] for d in members],
            "tokens": {d.account_id.hex(): b64(d.delivery_token) for d in members},
            "send_id": b64(os.urandom(16)),
        }
        for _ in range(2):
            response = alice.request("PUT", "/v1/messages/multi", json_body=multi, signed=False)
            assert response.status_code == 200, response.text
            assert response.json() == {"stored": 2}
        assert _stored_total(server) == 5
        first = queued_message_id(send_id, bob.device.account_id, 1).hex()
        assert bob.request("DELETE", f"/v1/messages/{first}").status_code == 204
        assert _sealed(alice, bob, b"one envelope", send_id).json() == {"stored": 1}
        assert _stored_total(server) == 6  # acknowledged, then queued again: anew
        assert len(_queued_ids(bob)) == 4 and len(_queued_ids(carol)) == 1
    finally:
        for client in clients:
            client.close()
