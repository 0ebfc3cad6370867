"""The log endpoints of a real server: the lookup's proof, heads, consistency and
inclusion proofs, an account's entries; and bad input answered with a typed 400."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from helpers import Client, ServerProcess, unb64, unique_name

from sealpost.crypto.sign import VerifyKey
from sealpost.transparency.log import LogEntry, SignedTreeHead, devices_commitment
from sealpost.transparency.merkle import leaf_hash, verify_consistency, verify_inclusion


def _head(server: ServerProcess) -> SignedTreeHead:
    key = VerifyKey.from_public_bytes(
        unb64(httpx.get(f"{server.url}/v1/log/key").json()["public_key"])
    )
    head = SignedTreeHead.decode(unb64(httpx.get(f"{server.url}/v1/log/head").json()["head"]))
    head.verify(key)
    return head


def test_a_lookup_is_proven_against_a_signed_head(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    name = unique_name()
    alice = registered(name=name)
    assert alice.device is not None
    doc = httpx.get(f"{server.url}/v1/accounts/{name}").json()
    proof = doc["transparency"]
    head = SignedTreeHead.decode(unb64(proof["head"]))
    key = unb64(httpx.get(f"{server.url}/v1/log/key").json()["public_key"])
    head.verify(VerifyKey.from_public_bytes(key))
    entry_raw = unb64(proof["entry"])
    verify_inclusion(
        leaf_hash(entry_raw),
        proof["index"],
        head.tree_size,
        [unb64(h) for h in proof["proof"]],
        head.root,
    )
    entry = LogEntry.decode(entry_raw)
    assert entry.account_id == alice.device.account_id and entry.username == name.lower()
    certs = [unb64(d["certificate"]) for d in doc["devices"]]
    assert entry.devices == devices_commitment(certs, [unb64(r) for r in doc["revocations"]])


def test_heads_grow_consistently_and_entries_carry_proofs(
    server: ServerProcess, registered: Callable[..., Client]
) -> None:
    alice = registered()
    assert alice.device is not None
    first = _head(server)
    registered()
    # the lookup asks for a head covering the new entry: one is signed at once
    bob = unique_name()
    registered(name=bob)
    httpx.get(f"{server.url}/v1/accounts/{bob}")
    second = _head(server)
    assert second.tree_size > first.tree_size and second.timestamp >= first.timestamp
    proof = httpx.get(
        f"{server.url}/v1/log/consistency",
        params={"from": first.tree_size, "to": second.tree_size},
    ).json()["proof"]
    verify_consistency(
        first.tree_size, second.tree_size, first.root, second.root, [unb64(h) for h in proof]
    )
    doc = httpx.get(f"{server.url}/v1/log/accounts/{alice.device.account_id.hex()}").json()
    head = SignedTreeHead.decode(unb64(doc["head"]))
    assert len(doc["entries"]) == 1 and doc["more"] is False
    item = doc["entries"][0]
    verify_inclusion(
        leaf_hash(unb64(item["entry"])),
        item["index"],
        head.tree_size,
        [unb64(h) for h in item["proof"]],
        head.root,
    )
    inclusion = httpx.get(
        f"{server.url}/v1/log/inclusion",
        params={"index": item["index"], "size": head.tree_size},
    ).json()["proof"]
    assert inclusion == item["proof"]
    after = httpx.get(
        f"{server.url}/v1/log/accounts/{alice.device.account_id.hex()}",
        params={"after": item["index"]},
    ).json()
    assert after["entries"] == []


def test_bad_log_queries_are_refused_with_a_typed_error(server: ServerProcess) -> None:
    size = _head(server).tree_size
    for path, params in [
        ("/v1/log/consistency", {"from": "0", "to": "1"}),
        ("/v1/log/consistency", {"from": "2", "to": "1"}),
        ("/v1/log/consistency", {"from": "1", "to": str(size + 10)}),
        ("/v1/log/consistency", {"from": "x", "to": "1"}),
        ("/v1/log/consistency", {"from": "-1", "to": "1"}),
        ("/v1/log/consistency", {"from": "1" * 30, "to": "1"}),
        ("/v1/log/consistency", {}),
        ("/v1/log/inclusion", {"index": str(size), "size": str(size)}),
        ("/v1/log/inclusion", {"index": "0", "size": str(size + 1)}),
        ("/v1/log/accounts/zz", {}),
        ("/v1/log/accounts/" + "00" * 16, {"after": "nope"}),
    ]:
        response = httpx.get(f"{server.url}{path}", params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert response.json()["error"] == "invalid_request"
    unknown = httpx.get(f"{server.url}/v1/log/accounts/{'00' * 16}").json()
    assert unknown["entries"] == []
