"""Sealed delivery, push over the WebSocket, acknowledgement, and queue isolation."""

from __future__ import annotations

import os
from collections.abc import Callable

from helpers import (
    Client,
    Device,
    ServerProcess,
    envelopes_json,
    open_first_message,
    seal_first_message,
    server_public_key,
    unb64,
)


def test_sealed_send_is_pushed_and_ack_deletes(registered: Callable[..., Client]) -> None:
    alice, bob = registered(), registered()
    assert alice.device is not None and bob.device is not None
    envelope = seal_first_message(alice, bob.device, b"hello bob, sealed")
    with bob.stream() as stream:
        response = alice.send_sealed([(bob.device.account_id, 1, envelope)])
        assert response.status_code == 200, response.text
        assert response.json() == {"stored": 1}
        [frame] = stream.receive_messages(1)
        assert unb64(frame["body"]) == envelope
        sender, text = open_first_message(bob.device, envelope, server_public_key(bob))
        assert (sender, text) == (alice.device.account_id, b"hello bob, sealed")
        # still queued until acknowledged
        assert [m["id"] for m in bob.request("GET", "/v1/messages").json()["messages"]] == [
            frame["id"]
        ]
        stream.ack(frame["id"])
        wait_until_empty(bob)


def wait_until_empty(client: Client) -> None:
    from helpers import wait_for

    wait_for(
        lambda: client.request("GET", "/v1/messages").json()["messages"] == [],
        what="the queue to drain",
    )


def test_offline_device_gets_messages_in_order_on_reconnect(
    registered: Callable[..., Client],
) -> None:
    alice, bob = registered(), registered()
    assert bob.device is not None
    bodies = [os.urandom(40) for _ in range(5)]
    for body in bodies:
        assert alice.send_sealed([(bob.device.account_id, 1, body)]).status_code == 200
    with bob.stream() as stream:
        frames = stream.receive_messages(5)
        assert [unb64(f["body"]) for f in frames] == bodies
        stream.ack(frames[0]["id"])
        stream.ack(frames[1]["id"])
        # a message sent while connected is pushed at once, after the backlog
        assert alice.send_sealed([(bob.device.account_id, 1, b"live")]).status_code == 200
        assert unb64(stream.receive_messages(1)[0]["body"]) == b"live"
    from helpers import wait_for

    wait_for(
        lambda: len(bob.request("GET", "/v1/messages").json()["messages"]) == 4,
        what="two acks to commit",
    )
    with bob.stream() as stream:  # unacknowledged ones come again, in order
        frames = stream.receive_messages(4)
        assert [unb64(f["body"]) for f in frames] == [*bodies[2:], b"live"]


def test_fetch_and_delete_without_a_socket(registered: Callable[..., Client]) -> None:
    alice, bob = registered(), registered()
    assert bob.device is not None
    alice.send_sealed([(bob.device.account_id, 1, b"one")])
    alice.send_sealed([(bob.device.account_id, 1, b"two")])
    messages = bob.request("GET", "/v1/messages").json()["messages"]
    assert [unb64(m["body"]) for m in messages] == [b"one", b"two"]
    assert bob.request("DELETE", f"/v1/messages/{messages[0]['id']}").status_code == 204
    assert bob.request("DELETE", f"/v1/messages/{messages[0]['id']}").status_code == 404
    assert [m["id"] for m in bob.request("GET", "/v1/messages").json()["messages"]] == [
        messages[1]["id"]
    ]


def test_a_device_cannot_read_or_ack_another_devices_queue(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    alice, bob = registered(), registered()
    assert alice.device is not None and bob.device is not None
    bob2_device = Device.generate(bob.device.account, device_id=2)
    with Client(server.url, bob2_device) as bob2:
        assert bob2.add_device().status_code == 201
        sent = alice.send_sealed(
            [(bob.device.account_id, 1, b"for 1"), (bob.device.account_id, 2, b"for 2")]
        )
        assert sent.status_code == 200, sent.text
        [for_one] = bob.request("GET", "/v1/messages").json()["messages"]
        [for_two] = bob2.request("GET", "/v1/messages").json()["messages"]
        assert unb64(for_one["body"]) == b"for 1" and unb64(for_two["body"]) == b"for 2"
        # neither bob's other device nor another account can delete it
        assert bob2.request("DELETE", f"/v1/messages/{for_one['id']}").status_code == 404
        assert alice.request("DELETE", f"/v1/messages/{for_one['id']}").status_code == 404
        with bob2.stream() as stream:
            [pushed] = stream.receive_messages(1)
            assert pushed["id"] == for_two["id"]
            stream.ack(for_one["id"])  # acking someone else's message does nothing
        assert bob.request("GET", "/v1/messages").json()["messages"] == [for_one]


def test_mismatched_devices_are_refused_and_nothing_stored(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    alice, bob = registered(), registered()
    assert alice.device is not None and bob.device is not None
    bob2_device = Device.generate(bob.device.account, device_id=2)
    with Client(server.url, bob2_device) as bob2:
        assert bob2.add_device().status_code == 201
        bob_id = bob.device.account_id
        missing = alice.send_sealed([(bob_id, 1, b"x")])
        assert missing.status_code == 409
        detail = missing.json()["accounts"][bob_id.hex()]
        assert detail["missing"] == [2] and detail["extra"] == []
        assert [d["device_id"] for d in detail["devices"]] == [1, 2]
        extra = alice.send_sealed([(bob_id, 1, b"x"), (bob_id, 2, b"x"), (bob_id, 7, b"x")])
        assert extra.status_code == 409
        assert extra.json()["accounts"][bob_id.hex()]["extra"] == [7]
        assert bob.request("GET", "/v1/messages").json()["messages"] == []
        assert bob2.request("GET", "/v1/messages").json()["messages"] == []
        # authenticated copies to one's own other devices exempt the sending device
        own = bob.request("PUT", "/v1/messages", json_body=envelopes_json([(bob_id, 2, b"sync")]))
        assert own.status_code == 200, own.text
        assert unb64(bob2.request("GET", "/v1/messages").json()["messages"][0]["body"]) == b"sync"


def test_delivery_tokens(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--rate-sealed-per-address", "2")
    closed = Device.generate()
    with Client(server.url, closed) as carol, Client(server.url, Device.generate()) as dave:
        body = closed.registration("carol")
        body["sealed_from_anyone"] = False
        assert carol.request("POST", "/v1/accounts", json_body=body).status_code == 201
        assert dave.register("dave").status_code == 201
        assert dave.device is not None
        refused = dave.send_sealed([(closed.account_id, 1, b"x")])
        assert refused.status_code == 403
        wrong = dave.send_sealed(
            [(closed.account_id, 1, b"x")], {closed.account_id: os.urandom(32)}
        )
        assert wrong.status_code == 403
        right = dave.send_sealed(
            [(closed.account_id, 1, b"x")], {closed.account_id: closed.delivery_token}
        )
        assert right.status_code == 200
        # open accounts take sealed messages without a token, at a per-address rate
        codes = [
            dave.send_sealed([(dave.device.account_id, 1, b"y")]).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        limited = dave.send_sealed([(dave.device.account_id, 1, b"y")])
        assert limited.json()["error"] == "rate_limited" and "retry-after" in limited.headers
        # a token bypasses the anonymous rate limit
        with_token = dave.send_sealed(
            [(dave.device.account_id, 1, b"z")],
            {dave.device.account_id: dave.device.delivery_token},
        )
        assert with_token.status_code == 200
        assert len(carol.request("GET", "/v1/messages").json()["messages"]) == 1


def test_queue_depth_is_limited(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--max-queue-depth", "3")
    with Client(server.url, Device.generate()) as erin:
        assert erin.register("erin").status_code == 201
        assert erin.device is not None
        target = [(erin.device.account_id, 1, b"m")]
        codes = [erin.send_sealed(target).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 507]
        assert len(erin.request("GET", "/v1/messages").json()["messages"]) == 3
