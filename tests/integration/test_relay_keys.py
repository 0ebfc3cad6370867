"""Prekey bundles: verified end to end, one-time keys handed out exactly once."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from helpers import Client, Device, ServerProcess, b64, unb64

from sealpost.protocol import KemPreKeyKind, OneTimePreKeyPair, PreKeyBundle, verify_bundle


def fetch_bundle(client: Client, device: Device) -> dict[str, object]:
    response = client.request(
        "GET", f"/v1/keys/{device.account_id.hex()}/{device.device_id}", signed=False
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_bundle_consumes_one_time_prekeys_exactly_once(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    bob = registered(Device.generate(one_time=4, kem_one_time=2))
    assert bob.device is not None
    seen_otk: list[int] = []
    seen_kem: list[int] = []
    with Client(server.url) as alice, ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: fetch_bundle(alice, bob.device), range(6)))
    for result in results:
        bundle = PreKeyBundle.decode(unb64(str(result["bundle"])))
        verify_bundle(
            bundle, expected_account_key=bob.device.account.public_key().public_bytes_raw()
        )
        assert bundle.kem_prekey is not None
        if bundle.one_time_prekey is not None:
            assert result["one_time_prekey"] is True
            seen_otk.append(bundle.one_time_prekey.key_id)
        if bundle.kem_prekey.kind == KemPreKeyKind.ONE_TIME:
            assert result["kem_prekey"] == "one_time"
            seen_kem.append(bundle.kem_prekey.key_id)
        else:
            assert result["kem_prekey"] == "last_resort"
            assert bundle.kem_prekey.key_id == bob.device.kem_last_resort.key_id
    assert sorted(seen_otk) == sorted(bob.device.one_time)  # each once, none twice
    assert sorted(seen_kem) == sorted(bob.device.kem_one_time)
    # stock is now empty; the next bundle says so and still carries the last-resort key
    with Client(server.url) as alice:
        last = fetch_bundle(alice, bob.device)
    bundle = PreKeyBundle.decode(unb64(str(last["bundle"])))
    assert bundle.one_time_prekey is None and last["one_time_prekey"] is False
    status = bob.request("GET", "/v1/keys/status").json()
    assert status["one_time_prekeys"] == 0 and status["kem_one_time_prekeys"] == 0
    assert status["refill"] is True and status["refill_below"] == 20


def test_refill_and_rotate(registered: Callable[..., Client]) -> None:
    bob = registered(Device.generate(one_time=0, kem_one_time=0))
    device = bob.device
    assert device is not None
    device.one_time.clear()
    device.add_prekeys(25, 21, first_key_id=500)
    new_spk = device.keys.new_signed_prekey(2, now=int(time.time()), rng=os.urandom)
    response = bob.request(
        "PUT",
        "/v1/keys",
        json_body={
            "signed_prekey": b64(new_spk.public.encode()),
            "one_time_prekeys": [b64(k.public.encode()) for k in device.one_time.values()],
            "kem_one_time_prekeys": [b64(k.public.encode()) for k in device.kem_one_time.values()],
        },
    )
    assert response.status_code == 200, response.text
    stock = response.json()
    assert stock["one_time_prekeys"] == 25 and stock["kem_one_time_prekeys"] == 21
    assert stock["refill"] is False
    with Client(bob.url) as alice:
        bundle = PreKeyBundle.decode(unb64(str(fetch_bundle(alice, device)["bundle"])))
    assert bundle.signed_prekey.key_id == 2


def test_upload_with_foreign_signature_changes_nothing(registered: Callable[..., Client]) -> None:
    bob = registered()
    stranger = Device.generate()
    before = bob.request("GET", "/v1/keys/status").json()
    response = bob.request(
        "PUT",
        "/v1/keys",
        json_body={
            "one_time_prekeys": [
                b64(OneTimePreKeyPair.generate(900, rng=os.urandom).public.encode())
            ],
            "kem_one_time_prekeys": [
                b64(k.public.encode()) for k in stranger.kem_one_time.values()
            ],
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_key"
    assert bob.request("GET", "/v1/keys/status").json() == before


def test_prekey_stock_is_bounded(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server("--max-prekey-stock", "6", "--max-prekeys", "4")
    with Client(server.url, Device.generate(one_time=4, kem_one_time=1)) as bob:
        assert bob.register("stocky").status_code == 201
        device = bob.device
        assert device is not None
        device.one_time.clear()
        device.add_prekeys(5, 0, first_key_id=700)
        keys = [b64(k.public.encode()) for k in device.one_time.values()]
        too_many = bob.request("PUT", "/v1/keys", json_body={"one_time_prekeys": keys})
        assert too_many.status_code == 413
        over_stock = bob.request("PUT", "/v1/keys", json_body={"one_time_prekeys": keys[:3]})
        assert over_stock.status_code == 409
        assert over_stock.json()["error"] == "prekey_stock_full"
        assert bob.request("GET", "/v1/keys/status").json()["one_time_prekeys"] == 4


def test_unknown_device_bundle_is_404(server: ServerProcess) -> None:
    with Client(server.url) as client:
        response = client.request("GET", f"/v1/keys/{'ab' * 16}/1", signed=False)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        bad = client.request("GET", "/v1/keys/xyz/1", signed=False)
        assert bad.status_code == 400
