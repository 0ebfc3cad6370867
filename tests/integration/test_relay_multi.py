"""Multi-recipient sends (``PUT /v1/messages/multi``): a group-sealed body stored as it is
for every named device, the legacy per-device-wrap form, and bad input that stores
nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from helpers import Client, b64, unb64

from sealpost._errors import InvalidMessage
from sealpost.crypto.dh import DhPrivateKey
from sealpost.protocol.group_sealed import open_group, seal_group
from sealpost.protocol.sealed_multi import open_multi, seal_multi


def _send_multi(sender: Client, doc: dict[str, Any], recipients: list[Client]) -> Any:
    doc = {
        **doc,
        "tokens": {
            r.device.account_id.hex(): b64(r.device.delivery_token)
            for r in recipients
            if r.device is not None
        },
    }
    return sender.request("PUT", "/v1/messages/multi", json_body=doc, signed=False)


def _queued(client: Client) -> list[bytes]:
    response = client.request("GET", "/v1/messages")
    assert response.status_code == 200, response.text
    return [unb64(m["body"]) for m in response.json()["messages"]]


def test_group_sealed_body_is_stored_as_is_for_every_device(
    registered: Callable[..., Client],
) -> None:
    alice, bob, carol, dave = registered(), registered(), registered(), registered()
    members = [bob, carol, dave]
    key = os.urandom(32)
    body = seal_group(b"sender certificate and sender-key message", key, os.urandom)
    doc = {
        "body": b64(body),
        "recipients": [[m.device.account_id.hex(), 1] for m in members if m.device],
    }
    response = _send_multi(alice, doc, members)
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 3}
    for member in members:
        assert _queued(member) == [body]
        assert open_group(_queued(member)[0], key) == b"sender certificate and sender-key message"
    assert _queued(alice) == []


def test_legacy_wrapped_form_still_stores_a_wrap_per_device(
    registered: Callable[..., Client],
) -> None:
    alice, bob, carol = registered(), registered(), registered()
    members = [bob, carol]
    keys = [m.device.keys.identity_key for m in members if m.device]
    shared, wraps = seal_multi(b"inner", [k.public_key() for k in keys], os.urandom)
    doc = {
        "shared": b64(shared),
        "recipients": [
            [m.device.account_id.hex(), 1, b64(w)]
            for m, w in zip(members, wraps, strict=True)
            if m.device
        ],
    }
    response = _send_multi(alice, doc, members)
    assert response.status_code == 200, response.text
    for member, key in zip(members, keys, strict=True):
        [stored] = _queued(member)
        assert open_multi(stored, key) == b"inner"
    # a device that was not wrapped for cannot open it
    with pytest.raises(InvalidMessage):
        open_multi(_queued(bob)[0], DhPrivateKey.generate(os.urandom))


def test_bad_multi_sends_store_nothing(registered: Callable[..., Client]) -> None:
    alice, bob, carol = registered(), registered(), registered()
    assert bob.device is not None and carol.device is not None
    good = seal_group(b"inner", os.urandom(32), os.urandom)
    bob_hex, carol_hex = bob.device.account_id.hex(), carol.device.account_id.hex()
    cases: list[tuple[dict[str, Any], int]] = [
        ({"body": b64(b"\x01\x21" + good[2:]), "recipients": [[bob_hex, 1]]}, 400),
        ({"body": b64(good[:20]), "recipients": [[bob_hex, 1]]}, 400),
        ({"body": b64(good), "recipients": [[bob_hex, 1, b64(bytes(48))]]}, 400),
        ({"body": b64(good), "recipients": [[bob_hex]]}, 400),
        ({"body": b64(good), "recipients": []}, 400),
        ({"body": b64(good), "recipients": [[bob_hex, 1], [carol_hex, "1"]]}, 400),
        ({"body": b64(good), "recipients": [[bob_hex, 1], [carol_hex, True]]}, 400),
        ({"body": b64(good), "recipients": [[bob_hex, 1], [carol_hex, -1]]}, 400),
        ({"body": b64(good), "recipients": [[bob_hex, 1], [bob_hex, 1]]}, 400),
        ({"body": b64(good), "recipients": [[bob_hex[:-2], 1]]}, 400),
        ({"body": "not base64!", "recipients": [[bob_hex, 1]]}, 400),
        ({"body": 7, "recipients": [[bob_hex, 1]]}, 400),
        ({"shared": b64(good[2:] + bytes(48)), "recipients": [[bob_hex, 1]]}, 400),
        (
            {
                "body": b64(seal_group(bytes(100 * 1024), os.urandom(32), os.urandom)),
                "recipients": [[bob_hex, 1]],
            },
            413,
        ),
    ]
    for doc, status in cases:
        response = _send_multi(alice, doc, [bob, carol])
        assert response.status_code == status, (doc, response.text)
        assert "error" in response.json()
    assert _queued(bob) == [] and _queued(carol) == []
