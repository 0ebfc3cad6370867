"""sealpost's own known-answer vectors: recompute everything and compare bytes, so any
change to the wire format, a KDF or a storage record is caught."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sealpost_kat import FORMAT, generate

from sealpost.protocol import (
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    Session,
    SignedPreKeyPair,
    wire,
)

VECTORS = Path(__file__).with_name("sealpost-v1.json")


@pytest.fixture(scope="module")
def frozen() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    assert data["format"] == FORMAT
    return data


@pytest.fixture(scope="module")
def recomputed(frozen: dict[str, Any]) -> dict[str, Any]:
    return generate(bytes.fromhex(frozen["inputs"]["kem_ciphertext"]))


@pytest.mark.parametrize(
    "section", ["inputs", "alice", "bob", "bundle", "pqxdh", "messages", "final_sessions"]
)
def test_recomputed_section_matches(
    frozen: dict[str, Any], recomputed: dict[str, Any], section: str
) -> None:
    assert recomputed[section] == frozen[section], (
        f"{section} differs from tests/vectors/sealpost-v1.json: the wire format, a KDF or "
        "a record changed. If intended, run `make vectors` and say so in the commit."
    )


def test_recorded_encapsulation_is_genuine(frozen: dict[str, Any]) -> None:
    # ML-KEM's implicit rejection returns J(z || c) for a ciphertext that fails
    # re-encryption. A genuine encapsulation's secret differs from that value.
    record = bytes.fromhex(frozen["bob"]["kem_prekey_record"])
    kem = KemPreKeyPair.from_bytes(record)
    ciphertext = bytes.fromhex(frozen["inputs"]["kem_ciphertext"])
    shared = kem.private_key.decapsulate(ciphertext)
    assert shared.hex() == frozen["pqxdh"]["kem_shared_secret"]
    z = kem.private_key.seed_bytes()[32:]
    assert shared != hashlib.shake_256(z + ciphertext).digest(32)


def test_bob_decrypts_the_recorded_messages_from_his_records(frozen: dict[str, Any]) -> None:
    # Independently of the generator: Bob's records alone open Alice's first five messages
    # (sent before any reply; the later ones depend on Bob's own replies, which the
    # recomputation above covers).
    bob = frozen["bob"]
    device = DeviceKeys.from_bytes(bytes.fromhex(bob["device_keys_record"]))
    messages = frozen["messages"]["alice_to_bob"]
    order = frozen["messages"]["bob_receives_in_order"][:5]
    first = wire.decode(bytes.fromhex(messages[order[0]]["wire"]))
    assert isinstance(first, wire.PreKeyMessage)
    session, text = Session.respond(
        device,
        first,
        signed_prekey=SignedPreKeyPair.from_bytes(bytes.fromhex(bob["signed_prekey_record"])),
        one_time_prekey=OneTimePreKeyPair.from_bytes(bytes.fromhex(bob["one_time_prekey_record"])),
        kem_prekey=KemPreKeyPair.from_bytes(bytes.fromhex(bob["kem_prekey_record"])),
        expected_account_key=bytes.fromhex(frozen["alice"]["account_key"]),
    )
    assert text.decode() == messages[order[0]]["plaintext"]
    for i in order[1:]:
        assert (
            session.decrypt(bytes.fromhex(messages[i]["wire"])).decode()
            == (messages[i]["plaintext"])
        )


def test_every_recorded_structure_round_trips(frozen: dict[str, Any]) -> None:
    structures = [frozen["bundle"], frozen["alice"]["certificate"], frozen["bob"]["certificate"]]
    for direction in ("alice_to_bob", "bob_to_alice"):
        structures += [m["wire"] for m in frozen["messages"][direction]]
    for hex_data in structures:
        data = bytes.fromhex(hex_data)
        assert wire.decode(data).encode() == data
