"""Issue 14, items 2 and 6: the disk cannot be filled without an account. A multi-recipient
send stores its body once; queues, senders and accounts have byte quotas; below the
free-disk watermark new data is refused with a typed 507 while reading still works."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable

from helpers import TIMEOUT, Client, Device, ServerProcess, Stream, b64, envelopes_json, unb64

from sealpost.protocol.group_sealed import seal_group


def _stored_bytes(server: ServerProcess) -> int:
    db = sqlite3.connect(server.data / "sealpost.db")
    try:
        (own,) = db.execute("SELECT COALESCE(SUM(length(body)), 0) FROM queue").fetchone()
        (shared,) = db.execute(
            "SELECT COALESCE(SUM(length(body)), 0) FROM shared_bodies"
        ).fetchone()
    finally:
        db.close()
    return int(own + shared)


def test_multi_send_stores_one_body(
    registered: Callable[..., Client], server: ServerProcess
) -> None:
    sender = Client(server.url)
    members = [registered() for _ in range(10)]
    body = seal_group(os.urandom(60_000), os.urandom(32), os.urandom)
    before = _stored_bytes(server)
    doc = {
        "body": b64(body),
        "recipients": [[m.device.account_id.hex(), 1] for m in members if m.device],
        "tokens": {
            m.device.account_id.hex(): b64(m.device.delivery_token) for m in members if m.device
        },
    }
    response = sender.request("PUT", "/v1/messages/multi", json_body=doc, signed=False)
    assert response.status_code == 200, response.text
    assert _stored_bytes(server) - before < 2 * len(body)  # once, not ten times
    for member in members:
        fetched = member.request("GET", "/v1/messages").json()["messages"]
        assert [unb64(m["body"]) for m in fetched] == [body]
        assert member.request("DELETE", f"/v1/messages/{fetched[0]['id']}").status_code == 204
    assert _stored_bytes(server) == before  # the last ack deleted it
    sender.close()


def test_disk_watermark_refuses_new_data(make_server: Callable[..., ServerProcess]) -> None:
    first = make_server(name="s")
    alice_device, bob_device = Device.generate(), Device.generate()
    with Client(first.url, alice_device) as alice, Client(first.url, bob_device) as bob:
        assert alice.register("alice").status_code == 201
        assert bob.register("bob").status_code == 201
        queued = alice.send_sealed([(bob_device.account_id, 1, b"before the disk filled")])
        assert queued.status_code == 200
    first.stop()
    # the same data directory, now "below" a watermark no disk can meet
    server = make_server("--min-free-disk", str(10**18), name="s")
    with (
        Client(server.url, alice_device) as alice,
        Client(server.url, bob_device) as bob,
        Client(server.url, Device.generate()) as carol,
    ):
        refused = [
            alice.send_sealed([(bob_device.account_id, 1, b"x")]),
            carol.register("carol"),
            alice.request("POST", "/v1/attachments?signature=trailer", content=b"blob"),
            alice.request("PUT", "/v1/keys", json_body={}),
        ]
        for response in refused:
            assert response.status_code == 507, response.text
            assert response.json()["error"] == "insufficient_storage"
            assert set(response.json()) == {"error", "message"}
        with Stream(server.ws_url, alice_device) as stream:  # a send on the socket likewise
            send = {"type": "send", "req": 1, **envelopes_json([(bob_device.account_id, 1, b"x")])}
            stream.ws.send(json.dumps(send))
            answer = stream.recv()
            while answer["type"] == "empty":
                answer = stream.recv(timeout=TIMEOUT)
            assert answer["type"] == "error" and answer["error"] == "insufficient_storage"
        # reading and acknowledging (which frees space) still work
        assert bob.lookup("alice").status_code == 200
        fetched = bob.request("GET", "/v1/messages").json()["messages"]
        assert [unb64(m["body"]) for m in fetched] == [b"before the disk filled"]
        assert bob.request("DELETE", f"/v1/messages/{fetched[0]['id']}").status_code == 204


def test_queue_byte_quota(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--max-queue-bytes", str(200_000), "--rate-sealed-per-address", "0")
    with Client(server.url, Device.generate()) as bob:
        assert bob.register("bob").status_code == 201
        assert bob.device is not None
        big = os.urandom(90_000)
        for _ in range(2):
            assert bob.send_sealed([(bob.device.account_id, 1, big)]).status_code == 200
        full = bob.send_sealed([(bob.device.account_id, 1, big)])
        assert full.status_code == 507 and full.json()["error"] == "queue_full"


def test_stranger_cannot_fill_queue(make_server: Callable[..., ServerProcess]) -> None:
    """Item 6: without a delivery token one address may queue only so much for one open
    account, far below max_queue_depth; contacts with the token, and other recipients,
    still get through."""
    server = make_server(
        "--sealed-quota-messages", "5", "--rate-sealed-per-address", "0", "--max-queue-depth", "50"
    )
    bob_device, carol_device = Device.generate(), Device.generate()
    with (
        Client(server.url, bob_device) as bob,
        Client(server.url, carol_device) as carol,
        Client(server.url) as stranger,
    ):
        assert bob.register("bob").status_code == 201
        assert carol.register("carol").status_code == 201
        to_bob = [(bob_device.account_id, 1, b"hello?")]
        assert [stranger.send_sealed(to_bob).status_code for _ in range(5)] == [200] * 5
        refused = stranger.send_sealed(to_bob)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        # bob's contact holds his token: not a stranger, not counted
        tokens = {bob_device.account_id: bob_device.delivery_token}
        assert stranger.send_sealed(to_bob, tokens).status_code == 200
        assert stranger.send_sealed([(carol_device.account_id, 1, b"hi")]).status_code == 200
        assert len(bob.request("GET", "/v1/messages").json()["messages"]) == 6


def test_sender_byte_quotas(make_server: Callable[..., ServerProcess]) -> None:
    """Item 2: bytes per address and recipient without a token, and per address in all."""
    server = make_server(
        *("--sealed-quota-bytes", "300000", "--sealed-bytes-per-address", "500000"),
        *("--rate-sealed-per-address", "0"),
    )
    bob_device, carol_device = Device.generate(), Device.generate()
    with (
        Client(server.url, bob_device) as bob,
        Client(server.url, carol_device) as carol,
        Client(server.url) as stranger,
    ):
        assert bob.register("bob").status_code == 201
        assert carol.register("carol").status_code == 201
        big = os.urandom(90_000)
        to_bob = [(bob_device.account_id, 1, big)]
        assert [stranger.send_sealed(to_bob).status_code for _ in range(4)] == [200] * 3 + [429]
        # with carol's token: no per-recipient quota, but the address's total (500 kB)
        tokens = {carol_device.account_id: carol_device.delivery_token}
        to_carol = [(carol_device.account_id, 1, big)]
        statuses = [stranger.send_sealed(to_carol, tokens).status_code for _ in range(4)]
        assert statuses == [200, 200, 429, 429]


def _fetch_bundle(client: Client, device: Device) -> dict[str, object]:
    response = client.request(
        "GET", f"/v1/keys/{device.account_id.hex()}/{device.device_id}", signed=False
    )
    assert response.status_code == 200, response.text
    doc: dict[str, object] = response.json()
    return doc


def test_prekey_drain_limited_per_target(make_server: Callable[..., ServerProcess]) -> None:
    """Item 4: fetching bundles hands out at most bundles_per_target one-time keys an hour;
    later bundles carry none but still start sessions. A connected device is told when
    its stock runs low."""
    server = make_server(
        *("--bundles-per-target", "3", "--bundles-per-address", "1000"),
        *("--rate-per-address", "0", "--prekey-refill-below", "8"),
    )
    bob_device = Device.generate(one_time=10, kem_one_time=10)
    with Client(server.url, bob_device) as bob, Client(server.url) as stranger:
        assert bob.register("bob").status_code == 201
        with Stream(server.ws_url, bob_device) as stream:
            assert stream.recv()["type"] == "empty"
            fetched = [_fetch_bundle(stranger, bob_device) for _ in range(20)]
            assert [f["one_time_prekey"] for f in fetched] == [True] * 3 + [False] * 17
            assert [f["kem_prekey"] for f in fetched] == ["one_time"] * 3 + ["last_resort"] * 17
            # 10 - 3 = 7 left, under 8: bob's stream is told
            assert stream.recv() == {"type": "prekeys_low"}
        stock = bob.request("GET", "/v1/keys/status").json()
        assert (stock["one_time_prekeys"], stock["kem_one_time_prekeys"]) == (7, 7)
        assert stock["refill"] is True


def test_prekey_fetches_limited_per_address(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--bundles-per-address", "4", "--rate-per-address", "0")
    bob_device = Device.generate()
    with Client(server.url, bob_device) as bob, Client(server.url) as stranger:
        assert bob.register("bob").status_code == 201
        for _ in range(4):
            _fetch_bundle(stranger, bob_device)
        path = f"/v1/keys/{bob_device.account_id.hex()}/1"
        refused = stranger.request("GET", path, signed=False)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
