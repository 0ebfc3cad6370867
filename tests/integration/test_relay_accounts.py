"""Registration, lookup and device addition against a real server."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

from helpers import Client, Device, ServerProcess, b64, unique_name

from sealpost.protocol import AccountIdentity, DeviceCertificate, verify_certificate


def test_register_and_look_up(server: ServerProcess) -> None:
    name = unique_name("Alice")
    with Client(server.url, Device.generate()) as alice:
        response = alice.register(name)
        assert response.status_code == 201, response.text
        assert response.json() == {"account_id": alice.device.account_id.hex(), "device_id": 1}
        found = alice.lookup(name.upper())
        assert found.status_code == 200
        body = found.json()
        assert body["account_id"] == alice.device.account_id.hex()
        assert body["username"] == name
        account_key = base64.b64decode(body["account_key"])
        [device] = body["devices"]
        cert = DeviceCertificate.decode(base64.b64decode(device["certificate"]))
        verify_certificate(cert, expected_account_key=account_key)
        assert cert.device_id == device["device_id"] == 1


def test_username_is_unique_case_insensitively(server: ServerProcess) -> None:
    name = unique_name("bob")
    with (
        Client(server.url, Device.generate()) as first,
        Client(server.url, Device.generate()) as second,
    ):
        assert first.register(name).status_code == 201
        response = second.register(name.upper())
        assert response.status_code == 409
        assert response.json()["error"] == "username_taken"
        # the loser left nothing behind: its account id is free, its name still taken by bob
        assert second.register(unique_name("bob")).status_code == 201


def test_username_charset(server: ServerProcess) -> None:
    with Client(server.url, Device.generate()) as client:
        for bad in ["ab", "x" * 33, "has space", "émile", "semi;colon", "\uff21\uff22\uff23"]:
            response = client.register(bad)
            assert response.status_code == 400, bad
            assert response.json()["error"] == "invalid_request"
        assert client.lookup("no such user").status_code == 404


def test_certificate_from_another_account_key_is_refused(server: ServerProcess) -> None:
    device = Device.generate()
    other = AccountIdentity.generate(os.urandom)
    body = device.registration(unique_name())
    body["account_key"] = b64(other.public_key().public_bytes_raw())
    with Client(server.url, device) as client:
        response = client.request("POST", "/v1/accounts", json_body=body)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_key"


def test_forged_certificate_signature_is_refused(server: ServerProcess) -> None:
    device = Device.generate()
    cert = bytearray(device.keys.certificate.encode())
    cert[-1] ^= 1
    body = device.registration(unique_name())
    body["certificate"] = b64(bytes(cert))
    with Client(server.url, device) as client:
        response = client.request("POST", "/v1/accounts", json_body=body)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_key"


def test_bad_prekey_signatures_are_refused(server: ServerProcess) -> None:
    device = Device.generate()
    stranger = Device.generate()
    name = unique_name()
    for field, value in [
        ("signed_prekey", stranger.signed_prekey.public.encode()),
        ("kem_last_resort", stranger.kem_last_resort.public.encode()),
        ("kem_one_time_prekeys", [next(iter(stranger.kem_one_time.values())).public.encode()]),
        ("kem_last_resort", next(iter(device.kem_one_time.values())).public.encode()),  # kind
    ]:
        body = device.registration(name)
        body[field] = [b64(v) for v in value] if isinstance(value, list) else b64(value)
        with Client(server.url, device) as client:
            response = client.request("POST", "/v1/accounts", json_body=body)
            assert response.status_code == 400, field
            assert response.json()["error"] == "invalid_key", field
    with Client(server.url) as anyone:
        assert anyone.lookup(name).status_code == 404


def test_registration_must_be_signed_by_the_certified_device(server: ServerProcess) -> None:
    device = Device.generate()
    name = unique_name()
    with Client(server.url, device) as client:
        unsigned = client.request(
            "POST", "/v1/accounts", json_body=device.registration(name), signed=False
        )
        assert unsigned.status_code == 401
        impostor = Device.generate()  # signs with its own key but presents device's certificate
        with Client(server.url, impostor) as other:
            forged = other.request("POST", "/v1/accounts", json_body=device.registration(name))
            assert forged.status_code == 401
        assert client.lookup(name).status_code == 404


def test_add_a_second_device(server: ServerProcess, registered: Callable[..., Client]) -> None:
    alice = registered()
    assert alice.device is not None
    second = Device.generate(alice.device.account, device_id=2)
    with Client(server.url, second) as client:
        response = client.add_device()
        assert response.status_code == 201, response.text
        again = client.add_device()
        assert again.status_code == 409
        assert again.json()["error"] == "device_exists"
    # a device certified by some other account key cannot join alice's account
    mallory = AccountIdentity(
        alice.device.account_id, AccountIdentity.generate(os.urandom).signing_key
    )
    ghost = Device.generate(mallory, device_id=3)
    with Client(server.url, ghost) as client:
        response = client.add_device()
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_key"
