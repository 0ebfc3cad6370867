"""Our own known-answer vectors for the key-transparency map (docs/PROTOCOL.md, the map):
its hashes, keys, values, roots and proofs, from fixed inputs. ``generate()`` recomputes
them; tests/vectors/kt-map-v1.json is the frozen copy (``make vectors`` rewrites it)."""

from __future__ import annotations

import hashlib
from typing import Any

from sealpost.crypto.sign import SigningKey
from sealpost.transparency.log import SignedTreeHead, account_map_key, account_map_value
from sealpost.transparency.smt import (
    MemoryMapStore,
    empty_hash,
    insert,
    map_leaf_hash,
    map_node_hash,
    prove,
)

FORMAT = "sealpost-kt-map-v1"
NAMES = ["alice", "bob", "carol", "dave"]


def _value(i: int) -> bytes:
    return account_map_value(i, hashlib.sha256(b"entry %d" % i).digest())


def generate() -> dict[str, Any]:
    store = MemoryMapStore()
    steps = []
    keys = [account_map_key(n) for n in NAMES]
    # two keys that share 255 bits: the deepest possible leaves
    deep = [bytes(31) + b"\x00", bytes(31) + b"\x01"]
    pairs = [(k, _value(i)) for i, k in enumerate(keys + deep)]
    pairs.append((keys[0], _value(99)))  # an update
    for key, value in pairs:
        root = insert(store, [(key, value)])
        steps.append({"key": key.hex(), "value": value.hex(), "root": root.hex()})
    proofs = []
    for key in [*keys, *deep, account_map_key("nobody"), bytes(31) + b"\x02", b"\xff" * 32]:
        found, proof = prove(store, key)
        proofs.append(
            {
                "key": key.hex(),
                "value": None if found is None else found.hex(),
                "proof": proof.encode().hex(),
            }
        )
    head = SignedTreeHead.sign(
        SigningKey.from_private_bytes(bytes(range(32, 64))),
        tree_size=len(pairs),
        timestamp=1_790_000_000_000,
        root=hashlib.sha256(b"a log root").digest(),
        map_root=root,
    )
    return {
        "format": FORMAT,
        "hashes": {
            "empty_256": empty_hash(256).hex(),
            "empty_255": empty_hash(255).hex(),
            "empty_0": empty_hash(0).hex(),
            "leaf_7": map_leaf_hash(7, bytes(range(32)), bytes(32)).hex(),
            "node": map_node_hash(bytes(32), b"\x01" * 32).hex(),
        },
        "account": {
            "key_alice": account_map_key("alice").hex(),
            "value_3": _value(3).hex(),
        },
        "inserts": steps,
        "proofs": proofs,
        "tree_head": head.encode().hex(),
    }
