"""The key-transparency map's frozen known-answer vectors (kt_map_kat.py): recompute and
compare, and check every frozen proof with the verifier alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kt_map_kat import FORMAT, generate

from sealpost.transparency.merkle import InvalidProof
from sealpost.transparency.smt import MapProof, verify_map

VECTORS = Path(__file__).with_name("kt-map-v1.json")


@pytest.fixture(scope="module")
def frozen() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    assert data["format"] == FORMAT
    return data


@pytest.mark.parametrize("section", ["hashes", "account", "inserts", "proofs", "tree_head"])
def test_recomputed_equals_frozen(frozen: dict[str, Any], section: str) -> None:
    assert generate()[section] == frozen[section]


def test_frozen_proofs_verify_against_the_final_root(frozen: dict[str, Any]) -> None:
    root = bytes.fromhex(frozen["inserts"][-1]["root"])
    kinds = set()
    for case in frozen["proofs"]:
        key = bytes.fromhex(case["key"])
        value = None if case["value"] is None else bytes.fromhex(case["value"])
        proof = MapProof.decode(bytes.fromhex(case["proof"]))
        verify_map(key, value, proof, root)
        kinds.add("present" if value else "other" if proof.other else "empty")
        with pytest.raises(InvalidProof):
            verify_map(key, None if value else bytes(32), proof, root)
    assert kinds == {"present", "other", "empty"}  # all three shapes are frozen
