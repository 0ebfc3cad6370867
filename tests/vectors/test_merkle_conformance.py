"""The transparency log's Merkle tree against independently published RFC 6962 / 9162 data
(../shared/vectors, located by the ``vectors_dir`` fixture of tests/conftest.py).

- ``merkle-rfc6962-reference-tree.json``: the 8-leaf reference tree of transparency-dev/merkle.
  Our *generation* (appends, stored nodes, roots at every size, inclusion and consistency
  proofs) must reproduce it, through both node stores; our *verification* must accept its
  proofs.
- ``merkle-transparency-dev/{inclusion,consistency}/**.json``: 98 + 98 verification cases
  (happy paths, mutated proofs, sizes and roots, edge cases). Every verdict must match
  ``wantErr``, except the one deviation listed in :data:`DEVIATIONS`; every rejection must
  be our :class:`InvalidProof`, nothing else. Where a case can be generated (a happy path of
  the reference tree, a one-leaf tree), our generated proof must equal the published one.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sealpost.transparency import (
    EMPTY_ROOT,
    InvalidProof,
    MalformedHash,
    MemoryNodeStore,
    NodeStore,
    SqliteNodeStore,
    append,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

REFERENCE = "merkle-rfc6962-reference-tree.json"
TRANSPARENCY_DEV = "merkle-transparency-dev"

#: Cases where we deliberately differ from transparency-dev's verdict, with the error we raise.
DEVIATIONS: dict[str, tuple[type[InvalidProof], str]] = {
    # Equal sizes, empty proof, equal roots: transparency-dev only compares the roots, and
    # these are 12 bytes ("don't care 2"). We refuse any root that is not 32 bytes.
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json": (
        MalformedHash,
        "root1 is 12 bytes",
    ),
}


def _memory() -> Iterator[NodeStore]:
    yield MemoryNodeStore()


def _sqlite() -> Iterator[NodeStore]:
    conn = sqlite3.connect(":memory:")
    store = SqliteNodeStore(conn)
    store.create_table()
    yield store
    conn.close()


STORES: dict[str, Callable[[], Iterator[NodeStore]]] = {"memory": _memory, "sqlite": _sqlite}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> Iterator[NodeStore]:
    yield from STORES[request.param]()


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _reference(vectors_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors_dir / REFERENCE).read_text())
    return data


def _cases(vectors_dir: Path, kind: str) -> list[tuple[str, dict[str, Any]]]:
    folder = vectors_dir / TRANSPARENCY_DEV
    files = sorted((folder / kind).rglob("*.json"))
    return [(f.relative_to(folder).as_posix(), json.loads(f.read_text())) for f in files]


def _reference_store(vectors_dir: Path, store: NodeStore) -> tuple[NodeStore, int]:
    leaves = [leaf_hash(bytes.fromhex(x)) for x in _reference(vectors_dir)["leaf_inputs"]]
    size = append(store, 0, leaves[:3])  # two batches: the second completes old subtrees
    return store, append(store, size, leaves[3:])


# ------------------------------------------------------------------ the reference tree


def test_reference_tree_nodes_and_roots(vectors_dir: Path, store: NodeStore) -> None:
    ref = _reference(vectors_dir)
    tree, size = _reference_store(vectors_dir, store)
    assert size == len(ref["leaf_inputs"]) == 8
    nodes = ref["node_hashes_by_level"]
    keys = [(level, idx) for level, row in enumerate(nodes) for idx in range(len(row))]
    assert len(keys) == 15
    assert [h.hex() for h in tree.get_many(keys)] == [h for row in nodes for h in row]
    roots = ref["root_hash_by_tree_size"]
    assert roots[0] == EMPTY_ROOT.hex()
    assert [root(tree, n).hex() for n in range(9)] == roots


def test_reference_tree_built_one_leaf_at_a_time(vectors_dir: Path, store: NodeStore) -> None:
    ref = _reference(vectors_dir)
    size = 0
    for n, leaf in enumerate(ref["leaf_inputs"], start=1):
        size = append(store, size, [leaf_hash(bytes.fromhex(leaf))])
        assert root(store, size).hex() == ref["root_hash_by_tree_size"][n]


def test_reference_tree_inclusion_proofs(vectors_dir: Path, store: NodeStore) -> None:
    ref = _reference(vectors_dir)
    tree, _ = _reference_store(vectors_dir, store)
    assert len(ref["inclusion_proofs"]) == 5
    for case in ref["inclusion_proofs"]:
        index, size = case["leaf_index"], case["tree_size"]
        proof = [bytes.fromhex(h) for h in case["proof"]]
        assert inclusion_proof(tree, index, size) == proof, case
        assert root(tree, size).hex() == case["root"]
        assert tree.get_many([(0, index)])[0].hex() == case["leaf_hash"]
        verify_inclusion(
            bytes.fromhex(case["leaf_hash"]), index, size, proof, bytes.fromhex(case["root"])
        )


def test_reference_tree_consistency_proofs(vectors_dir: Path, store: NodeStore) -> None:
    ref = _reference(vectors_dir)
    tree, _ = _reference_store(vectors_dir, store)
    assert len(ref["consistency_proofs"]) == 5
    for case in ref["consistency_proofs"]:
        size1, size2 = case["size1"], case["size2"]
        proof = [bytes.fromhex(h) for h in case["proof"]]
        assert consistency_proof(tree, size1, size2) == proof, case
        root1, root2 = bytes.fromhex(case["root1"]), bytes.fromhex(case["root2"])
        assert (root(tree, size1), root(tree, size2)) == (root1, root2)
        verify_consistency(size1, size2, root1, root2, proof)


# ------------------------------------------------------------------ transparency-dev cases


def _check_verdict(
    name: str, case: dict[str, Any], verify: Callable[..., None], *args: Any
) -> bool:
    """``verify(*args)`` for one case; True if it verified. Rejections must be
    :class:`InvalidProof` and expected (or a listed deviation)."""
    deviation = DEVIATIONS.get(name)
    if deviation is not None:
        error, message = deviation
        with pytest.raises(error, match=message):
            verify(*args)
        return False
    if case["wantErr"]:
        with pytest.raises(InvalidProof):
            verify(*args)
        return False
    verify(*args)
    return True


def test_transparency_dev_inclusion(vectors_dir: Path, store: NodeStore) -> None:
    cases = _cases(vectors_dir, "inclusion")
    assert len(cases) == 98
    tree, tree_size = _reference_store(vectors_dir, store)
    ref_roots = [bytes.fromhex(h) for h in _reference(vectors_dir)["root_hash_by_tree_size"]]
    generated = 0
    for name, case in cases:
        leaf, index, size = _b64(case["leafHash"]), case["leafIdx"], case["treeSize"]
        proof, head = [_b64(h) for h in case["proof"] or []], _b64(case["root"])
        if not _check_verdict(name, case, verify_inclusion, leaf, index, size, proof, head):
            continue
        # Generation: a case of the reference tree, or a one-leaf tree of its own.
        if size <= tree_size and head == ref_roots[size]:
            assert tree.get_many([(0, index)]) == [leaf], name
            assert inclusion_proof(tree, index, size) == proof, name
        else:
            assert (index, size) == (0, 1), name
            single: NodeStore = MemoryNodeStore()
            append(single, 0, [leaf])
            assert root(single, 1) == head, name
            assert inclusion_proof(single, 0, 1) == proof, name
        generated += 1
    assert generated == 6  # five reference-tree happy paths, one single-entry tree


def test_transparency_dev_consistency(vectors_dir: Path, store: NodeStore) -> None:
    cases = _cases(vectors_dir, "consistency")
    assert len(cases) == 98
    tree, tree_size = _reference_store(vectors_dir, store)
    ref_roots = [bytes.fromhex(h) for h in _reference(vectors_dir)["root_hash_by_tree_size"]]
    generated = 0
    for name, case in cases:
        size1, size2 = case["size1"], case["size2"]
        root1, root2 = _b64(case["root1"]), _b64(case["root2"])
        proof = [_b64(h) for h in case["proof"] or []]
        if not _check_verdict(name, case, verify_consistency, size1, size2, root1, root2, proof):
            continue
        assert size2 <= tree_size and (root1, root2) == (ref_roots[size1], ref_roots[size2])
        assert consistency_proof(tree, size1, size2) == proof, name
        generated += 1
    assert generated == 5  # the five reference-tree happy paths


def test_transparency_dev_deviations_exist(vectors_dir: Path) -> None:
    """Each listed deviation names a case that is still there and still says wantErr false,
    so the list cannot go stale silently."""
    cases = dict(_cases(vectors_dir, "inclusion") + _cases(vectors_dir, "consistency"))
    for name in DEVIATIONS:
        assert name in cases, name
        assert cases[name]["wantErr"] is False
