"""Key transparency: the Merkle log (sealpost.transparency.merkle) and its entries and tree
heads (sealpost.transparency.log).

Generation is checked against a naive recursive RFC 9162 implementation written here from
the RFC's definitions (MTH, PATH, PROOF/SUBPROOF), for every index, size and pair of sizes
up to 70 leaves; verification against both. Published vectors: tests/vectors/
test_merkle_conformance.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import struct
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sealpost._errors import (
    BadSignature,
    DecodeError,
    LocalProtocolError,
    RemoteProtocolError,
    UnsupportedVersion,
)
from sealpost.crypto.sign import SigningKey
from sealpost.transparency import (
    EMPTY_ROOT,
    MAX_PROOF_HASHES,
    MAX_TREE_SIZE,
    IndexOutOfRange,
    InvalidProof,
    InvalidTreeSize,
    LogEntry,
    LogEntryError,
    LogStoreError,
    LogUsageError,
    MalformedHash,
    MemoryNodeStore,
    NodeKey,
    NodeStore,
    RootMismatch,
    SignedTreeHead,
    SqliteNodeStore,
    WrongProofLength,
    append,
    consistency_proof,
    devices_commitment,
    inclusion_proof,
    leaf_hash,
    legacy_head_anchor,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from sealpost.transparency.merkle import _consistency_length, _inclusion_length

N = 70  # every index, size and pair of sizes up to this many leaves is checked
LEAVES = [leaf_hash(i.to_bytes(2, "big")) for i in range(N)]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ====================================================================== naive RFC 9162


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH over leaf *hashes*."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: Sequence[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    if m == len(d):
        return [] if whole else [mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*subproof(m, d[:k], whole), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


# ====================================================================== stores


def _sqlite_store() -> SqliteNodeStore:
    store = SqliteNodeStore(sqlite3.connect(":memory:"))
    store.create_table()
    return store


def _close(store: NodeStore) -> None:
    if isinstance(store, SqliteNodeStore):
        store._conn.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[NodeStore]:
    s: NodeStore = MemoryNodeStore() if request.param == "memory" else _sqlite_store()
    yield s
    _close(s)


@pytest.fixture(scope="module")
def full() -> MemoryNodeStore:
    """The N-leaf log, appended one leaf at a time."""
    s = MemoryNodeStore()
    size = 0
    for value in LEAVES:
        size = append(s, size, [value])
    return s


class CountingStore:
    """Counts the reads a generation function makes."""

    def __init__(self, inner: NodeStore) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        self.calls.append(len(keys))
        return self.inner.get_many(keys)

    def put_many(self, items: Sequence[tuple[NodeKey, bytes]]) -> None:
        self.inner.put_many(items)


# ====================================================================== hashing


def test_hashes_are_rfc_9162() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


# ====================================================================== generation = naive


def test_roots_at_every_size_match_mth(full: MemoryNodeStore) -> None:
    for size in range(N + 1):
        assert root(full, size) == mth(LEAVES[:size])


def test_inclusion_proofs_match_path_and_verify(full: MemoryNodeStore) -> None:
    for size in range(1, N + 1):
        head = mth(LEAVES[:size])
        for index in range(size):
            proof = inclusion_proof(full, index, size)
            assert proof == path(index, LEAVES[:size]), (index, size)
            assert len(proof) == _inclusion_length(index, size)
            verify_inclusion(LEAVES[index], index, size, proof, head)


def test_consistency_proofs_match_proof_and_verify(full: MemoryNodeStore) -> None:
    for size2 in range(1, N + 1):
        head2 = mth(LEAVES[:size2])
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(full, size1, size2)
            assert proof == subproof(size1, LEAVES[:size2], True), (size1, size2)
            assert len(proof) == (_consistency_length(size1, size2) if size1 < size2 else 0)
            verify_consistency(size1, size2, mth(LEAVES[:size1]), head2, proof)


def test_store_holds_exactly_the_complete_subtrees(full: MemoryNodeStore) -> None:
    expected = {(level, i) for level in range(7) for i in range(N >> level)}
    assert len(full) == len(expected)
    assert full.get_many(sorted(expected)) == [
        mth(LEAVES[i << level : (i + 1) << level]) for level, i in sorted(expected)
    ]


def test_one_leaf_adds_at_most_log2_n_plus_one_nodes() -> None:
    s = MemoryNodeStore()
    for n in range(200):
        before = len(s)
        append(s, n, [leaf_hash(bytes([n]))])
        added = len(s) - before
        assert added == 1 + ((n + 1) & -(n + 1)).bit_length() - 1  # the leaf + completed parents
        assert added <= (n + 1).bit_length()


def test_every_read_is_one_batch_of_o_log_n_nodes(full: MemoryNodeStore) -> None:
    counting = CountingStore(full)
    for size in range(1, N + 1):
        bound = 2 * size.bit_length()
        for index in range(size):
            counting.calls.clear()
            inclusion_proof(counting, index, size)
            assert len(counting.calls) == 1 and counting.calls[0] <= bound
        for size1 in range(1, size):
            counting.calls.clear()
            consistency_proof(counting, size1, size)
            assert len(counting.calls) == 1 and counting.calls[0] <= bound
        counting.calls.clear()
        root(counting, size)
        assert len(counting.calls) == 1 and counting.calls[0] <= size.bit_length()


def test_append_reads_only_the_right_edge() -> None:
    counting = CountingStore(MemoryNodeStore())
    size = 0
    for batch in (1, 2, 5, 1, 13, 40):
        counting.calls.clear()
        old = size
        size = append(counting, size, LEAVES[size : size + batch])
        assert sum(counting.calls) <= old.bit_count() and len(counting.calls) <= 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=20))
def test_batches_give_the_same_tree_in_both_stores(batches: list[int]) -> None:
    leaves = LEAVES[: min(N, sum(batches))]
    memory, sqlite = MemoryNodeStore(), _sqlite_store()
    try:
        size_m = size_s = 0
        for count in batches:
            chunk = leaves[size_m : size_m + count]
            size_m = append(memory, size_m, chunk)
            size_s = append(sqlite, size_s, chunk)
        assert size_m == size_s == len(leaves)
        keys = sorted(memory._nodes)
        assert sqlite.get_many(keys) == memory.get_many(keys)
        assert sqlite._conn.execute("SELECT count(*) FROM log_nodes").fetchone()[0] == len(keys)
        for size in range(size_m + 1):
            assert root(sqlite, size) == root(memory, size) == mth(leaves[:size])
        for size in range(1, size_m + 1):
            for index in range(size):
                assert inclusion_proof(sqlite, index, size) == inclusion_proof(memory, index, size)
            for size1 in range(1, size + 1):
                assert consistency_proof(sqlite, size1, size) == consistency_proof(
                    memory, size1, size
                )
    finally:
        _close(sqlite)


# ====================================================================== tampering


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@FUZZ
@given(st.data())
def test_any_bit_flip_in_an_inclusion_proof_fails(
    full: MemoryNodeStore, data: st.DataObject
) -> None:
    size = data.draw(st.integers(1, N))
    index = data.draw(st.integers(0, size - 1))
    proof, head = inclusion_proof(full, index, size), mth(LEAVES[:size])
    bit = data.draw(st.integers(0, 255))
    targets = ["root", "leaf"] + [f"proof{i}" for i in range(len(proof))]
    target = data.draw(st.sampled_from(targets))
    leaf = LEAVES[index]
    if target == "root":
        head = _flip(head, bit)
    elif target == "leaf":
        leaf = _flip(leaf, bit)
    else:
        i = int(target[5:])
        proof[i] = _flip(proof[i], bit)
    with pytest.raises(RootMismatch):
        verify_inclusion(leaf, index, size, proof, head)


@FUZZ
@given(st.data())
def test_any_bit_flip_in_a_consistency_proof_fails(
    full: MemoryNodeStore, data: st.DataObject
) -> None:
    size2 = data.draw(st.integers(1, N))
    size1 = data.draw(st.integers(1, size2))
    proof = consistency_proof(full, size1, size2)
    root1, root2 = mth(LEAVES[:size1]), mth(LEAVES[:size2])
    bit = data.draw(st.integers(0, 255))
    target = data.draw(st.sampled_from(["root1", "root2"] + [f"p{i}" for i in range(len(proof))]))
    if target == "root1":
        root1 = _flip(root1, bit)
    elif target == "root2":
        root2 = _flip(root2, bit)
    else:
        i = int(target[1:])
        proof[i] = _flip(proof[i], bit)
    with pytest.raises(RootMismatch):
        verify_consistency(size1, size2, root1, root2, proof)


def test_a_proof_for_another_index_fails(full: MemoryNodeStore) -> None:
    """(An audit path does not pin the tree size on its own: the proof of a leaf in the left
    part of a tree of n often also "verifies" against the same root with n - 1 or n + 1,
    as in every RFC 9162 verifier. The size is bound to the root by the signed tree head.)"""
    for size in range(1, N + 1):
        head = mth(LEAVES[:size])
        for index in range(size):
            proof = inclusion_proof(full, index, size)
            for other in (index - 1, index + 1, index ^ 1):
                if 0 <= other < size and other != index:
                    with pytest.raises(InvalidProof):
                        verify_inclusion(LEAVES[index], other, size, proof, head)
            with pytest.raises(RootMismatch):  # the right leaf hash, at its index, only
                verify_inclusion(LEAVES[(index + 1) % N], index, size, proof, head)


def test_a_consistency_proof_for_another_old_size_fails(full: MemoryNodeStore) -> None:
    """(As with audit paths, the *new* size is bound to its root by the signed tree head,
    not by the proof: the proof often also passes with size2 +- 1.)"""
    for size2 in range(2, N + 1):
        for size1 in range(1, size2):
            proof = consistency_proof(full, size1, size2)
            root1, root2 = mth(LEAVES[:size1]), mth(LEAVES[:size2])
            for s1, s2 in ((size1 + 1, size2), (size1 - 1, size2)):
                if 0 < s1 <= s2:
                    with pytest.raises(InvalidProof):
                        verify_consistency(s1, s2, root1, root2, proof)
            with pytest.raises(RootMismatch):  # the old root of another log
                verify_consistency(size1, size2, node_hash(root1, root1), root2, proof)


def test_a_shrinking_or_forked_log_is_caught(full: MemoryNodeStore) -> None:
    fork = MemoryNodeStore()
    append(fork, 0, [*LEAVES[:10], leaf_hash(b"forged"), *LEAVES[11:20]])
    proof = consistency_proof(fork, 8, 20)
    verify_consistency(8, 20, root(full, 8), root(fork, 20), proof)  # the shared prefix
    with pytest.raises(RootMismatch):
        verify_consistency(12, 20, root(full, 12), root(fork, 20), consistency_proof(fork, 12, 20))
    with pytest.raises(InvalidTreeSize, match="shrink"):
        verify_consistency(20, 12, root(full, 20), root(full, 12), [])


# ====================================================================== verification errors

H = b"\x42" * 32


@pytest.mark.parametrize(
    ("index", "size", "error"),
    [
        (0, 0, IndexOutOfRange),
        (5, 5, IndexOutOfRange),
        (6, 5, IndexOutOfRange),
        (-1, 5, IndexOutOfRange),
        (0, -1, InvalidTreeSize),
        (0, MAX_TREE_SIZE + 1, InvalidTreeSize),
        (0, 2**64, InvalidTreeSize),
    ],
)
def test_inclusion_index_and_size_errors(index: int, size: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        verify_inclusion(H, index, size, [H] * 3, H)


def test_inclusion_wrong_lengths_and_hashes() -> None:
    with pytest.raises(WrongProofLength) as info:
        verify_inclusion(H, 3, 8, [H, H], H)
    assert (info.value.expected, info.value.got) == (3, 2)
    with pytest.raises(WrongProofLength):
        verify_inclusion(H, 3, 8, [H] * 4, H)
    with pytest.raises(MalformedHash, match="leaf hash"):
        verify_inclusion(b"", 0, 1, [], H)
    with pytest.raises(MalformedHash, match="root"):
        verify_inclusion(H, 0, 1, [], H + b"\x00")
    with pytest.raises(MalformedHash, match="proof hash"):
        verify_inclusion(H, 3, 8, [H, H[:31], H], H)
    with pytest.raises(RootMismatch):
        verify_inclusion(H, 0, 1, [], b"\x43" * 32)
    verify_inclusion(H, 0, 1, [], H)  # a one-leaf tree's root is its leaf


def test_consistency_size_errors() -> None:
    with pytest.raises(InvalidTreeSize, match="shrink"):
        verify_consistency(2, 1, H, H, [])
    with pytest.raises(InvalidTreeSize, match="empty tree"):
        verify_consistency(0, 5, EMPTY_ROOT, H, [])
    with pytest.raises(InvalidTreeSize, match="empty tree"):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(InvalidTreeSize):
        verify_consistency(1, MAX_TREE_SIZE + 1, H, H, [H])
    with pytest.raises(InvalidTreeSize):
        verify_consistency(-1, 3, H, H, [H])


def test_consistency_equal_sizes() -> None:
    verify_consistency(5, 5, H, H, [])
    with pytest.raises(RootMismatch):
        verify_consistency(5, 5, H, b"\x43" * 32, [])
    with pytest.raises(WrongProofLength):
        verify_consistency(5, 5, H, H, [H])
    with pytest.raises(MalformedHash):
        verify_consistency(5, 5, H[:12], H[:12], [])


def test_consistency_wrong_lengths() -> None:
    assert _consistency_length(3, 8) == 4
    with pytest.raises(WrongProofLength) as info:
        verify_consistency(3, 8, H, H, [])
    assert (info.value.expected, info.value.got) == (4, 0)
    with pytest.raises(WrongProofLength):
        verify_consistency(3, 8, H, H, [H] * 5)
    with pytest.raises(MalformedHash, match="proof hash"):
        verify_consistency(3, 8, H, H, [H, H, H, b""])


class NoReading(Sequence[bytes]):
    """A proof of any claimed length whose elements must never be read."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: object) -> bytes:  # type: ignore[override]
        raise AssertionError("a proof of the wrong length was read")


@pytest.mark.parametrize("length", [MAX_PROOF_HASHES + 1, 10**9])
def test_an_overlong_proof_is_refused_before_it_is_read(length: int) -> None:
    with pytest.raises(WrongProofLength):
        verify_inclusion(H, 3, 8, NoReading(length), H)
    with pytest.raises(WrongProofLength):
        verify_consistency(3, 8, H, H, NoReading(length))
    with pytest.raises(WrongProofLength):
        verify_consistency(8, 8, H, H, NoReading(length))


@settings(max_examples=500, deadline=None)
@given(st.integers(1, MAX_TREE_SIZE), st.data())
def test_no_proof_up_to_the_largest_size_needs_more_than_the_limit(
    size2: int, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, size2 - 1))
    assert _inclusion_length(index, size2) <= MAX_PROOF_HASHES - 1
    size1 = data.draw(st.integers(1, size2))
    assume(size1 < size2)
    assert _consistency_length(size1, size2) <= MAX_PROOF_HASHES


def test_the_largest_sizes_verify_without_overflow() -> None:
    size = MAX_TREE_SIZE
    for index in (0, size // 2, size - 1):
        with pytest.raises(RootMismatch):
            verify_inclusion(H, index, size, [H] * _inclusion_length(index, size), H)
    for size1 in (1, 3, 2**62, size - 1):
        with pytest.raises(RootMismatch):
            verify_consistency(size1, size, H, H, [H] * _consistency_length(size1, size))


@FUZZ
@given(
    st.integers(-2, 80),
    st.integers(-2, 80),
    st.lists(st.binary(min_size=0, max_size=40), max_size=10),
    st.binary(max_size=40),
    st.binary(max_size=40),
)
def test_verifiers_accept_or_raise_invalid_proof_only(
    a: int, b: int, proof: list[bytes], x: bytes, y: bytes
) -> None:
    with contextlib.suppress(InvalidProof):
        verify_inclusion(x, a, b, proof, y)
    with contextlib.suppress(InvalidProof):
        verify_consistency(a, b, x, y, proof)


def test_error_classes() -> None:
    for error in (IndexOutOfRange, InvalidTreeSize, WrongProofLength, MalformedHash, RootMismatch):
        assert issubclass(error, InvalidProof)
    assert issubclass(InvalidProof, RemoteProtocolError)
    assert issubclass(LogStoreError, LogUsageError)
    assert issubclass(LogUsageError, LocalProtocolError)
    assert issubclass(LogEntryError, LocalProtocolError)


# ====================================================================== generation errors


def test_generation_refuses_what_the_log_cannot_give(store: NodeStore) -> None:
    size = append(store, 0, LEAVES[:10])
    with pytest.raises(LogUsageError):
        inclusion_proof(store, 10, 10)
    with pytest.raises(LogUsageError):
        inclusion_proof(store, -1, 10)
    with pytest.raises(LogUsageError):
        inclusion_proof(store, 0, 0)
    with pytest.raises(LogUsageError):
        consistency_proof(store, 0, 5)
    with pytest.raises(LogUsageError):
        consistency_proof(store, 6, 5)
    assert consistency_proof(store, 7, 7) == []
    with pytest.raises(LogStoreError):  # beyond the log
        root(store, size + 1)
    with pytest.raises(LogStoreError):
        inclusion_proof(store, 3, size + 5)
    with pytest.raises(LogUsageError):
        append(store, size, [b"short"])
    with pytest.raises(LogUsageError):
        append(store, -1, [])
    with pytest.raises(LogUsageError):
        append(store, MAX_TREE_SIZE, [LEAVES[0]])
    assert append(store, size, []) == size


def test_append_at_a_stale_size_is_refused_and_writes_nothing(store: NodeStore) -> None:
    size = append(store, 0, LEAVES[:10])
    head = root(store, size)
    with pytest.raises(LogStoreError):
        append(store, 7, LEAVES[20:30])  # (0, 7) exists; (0, 10..16) would be new
    assert root(store, size) == head
    with pytest.raises(LogStoreError):
        root(store, 11)  # nothing of the refused batch was kept
    assert append(store, size, LEAVES[10:12]) == 12
    assert root(store, 12) == mth(LEAVES[:12])


def test_sqlite_store_joins_the_callers_transaction(tmp_path: object) -> None:
    conn = sqlite3.connect(":memory:")
    store = SqliteNodeStore(conn)
    store.create_table()
    conn.commit()
    append(store, 0, LEAVES[:4])
    assert conn.in_transaction  # the store began it; the caller decides
    conn.rollback()
    with pytest.raises(LogStoreError):
        root(store, 4)
    conn.execute("CREATE TABLE other (x INTEGER)")
    conn.execute("INSERT INTO other VALUES (1)")
    size = append(store, 0, LEAVES[:4])
    with pytest.raises(LogStoreError):
        append(store, 2, LEAVES[:4])
    assert conn.in_transaction  # the refused write left the caller's work alone
    conn.commit()
    assert conn.execute("SELECT x FROM other").fetchall() == [(1,)]
    assert root(store, size) == mth(LEAVES[:4])
    assert conn.execute("SELECT count(*) FROM log_nodes").fetchone() == (7,)
    conn.close()


def test_sqlite_reads_use_the_primary_key() -> None:
    store = _sqlite_store()
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN " + SqliteNodeStore._select(3), [1, 2, 3, 4, 5, 6]
    ).fetchall()
    details = " ".join(row[-1] for row in plan)
    assert "SEARCH log_nodes USING PRIMARY KEY" in details and "SCAN log_nodes" not in details
    many = [(0, i) for i in range(600)]
    append(store, 0, [leaf_hash(i.to_bytes(2, "big")) for i in range(600)])
    assert len(store.get_many(many)) == 600  # more keys than one SELECT takes
    _close(store)


# ====================================================================== log entries

ACCOUNT_ID = bytes(range(16))
AIK = b"\x11" * 32
CERTS = [b"\xaa" * 190, b"\x55" * 190]
REVOCATIONS = [b"\x33" * 100]
TIME = 1_790_000_000_000
LOG_KEY = SigningKey.from_private_bytes(bytes(range(32, 64)))
MAP_ROOT = hashlib.sha256(b"a map root").digest()
REF_ROOT_8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")

# Known answers: any change to these encodings is a change to the protocol.
KAT_DEVICES = "1dcf8e93726ac8d10b894f82b77d9098eaee52f371823834e5671ee5c3476f96"
KAT_DEVICES_EMPTY = "3672347026b21da1dbf8e6bd18cbfc63067cc7a3708b452bbf3ab2fd8e108985"
KAT_ENTRY = (
    "0130"
    "000102030405060708090a0b0c0d0e0f"  # account id
    "0000000000000001"  # sequence
    "000001a0c4506c00"  # timestamp (ms)
    + "11" * 32  # account key
    + KAT_DEVICES
    + "05"
    + b"alice".hex()
)
KAT_LEAF = "053fa2a71d4b6990fbe1f71f6d86065c160ac56cb8b3647c2bfe4b35c89d8272"
KAT_LOG_PUBLIC = "29acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7"
KAT_STH = (
    "0132"
    "0000000000000008"  # tree size
    "000001a0c4506c7b"  # timestamp (ms)
    + REF_ROOT_8.hex()
    + MAP_ROOT.hex()
    + "5b0b367a5f634321d0ddead86749a9efcdbac84a083c17310ab1f5c3497073bc"
    "2e51e19f2986b3f1f96140c587cf528ba7aaf58c02e53aaa877fe1d7500a2804"
)


def _entry(**changes: object) -> LogEntry:
    fields: dict[str, object] = {
        "account_id": ACCOUNT_ID,
        "username": "alice",
        "account_key": AIK,
        "devices": devices_commitment(CERTS, REVOCATIONS),
        "sequence": 1,
        "timestamp": TIME,
    }
    fields.update(changes)
    return LogEntry(**fields)  # type: ignore[arg-type]


def test_devices_commitment_known_answer() -> None:
    spec = hashlib.sha256(
        b"sealpost/v1/kt-devices\x00"
        + struct.pack(">I", 2)
        + b"".join(struct.pack(">I", 190) + c for c in sorted(CERTS))
        + struct.pack(">I", 1)
        + struct.pack(">I", 100)
        + REVOCATIONS[0]
    ).digest()
    assert devices_commitment(CERTS, REVOCATIONS).hex() == spec.hex() == KAT_DEVICES
    assert devices_commitment(reversed(CERTS), REVOCATIONS).hex() == KAT_DEVICES
    assert devices_commitment([], []).hex() == KAT_DEVICES_EMPTY
    # a certificate is not a revocation
    assert devices_commitment(CERTS[:1], CERTS[1:]) != devices_commitment(CERTS, [])


@pytest.mark.parametrize(
    ("certs", "revocations"), [([b"a", b"a"], []), ([], [b"r", b"r"]), ([b""], []), ([], [b""])]
)
def test_devices_commitment_refuses_duplicates_and_empty_items(
    certs: list[bytes], revocations: list[bytes]
) -> None:
    with pytest.raises(LogEntryError):
        devices_commitment(certs, revocations)


def test_log_entry_known_answer() -> None:
    entry = _entry()
    assert entry.encode().hex() == KAT_ENTRY
    assert len(entry.encode()) == 99 + 5
    assert entry.leaf_hash().hex() == KAT_LEAF == leaf_hash(bytes.fromhex(KAT_ENTRY)).hex()
    assert LogEntry.decode(entry.encode()) == entry


@pytest.mark.parametrize(
    "changes",
    [
        {"account_id": b"\x00" * 15},
        {"account_key": b"\x00" * 31},
        {"devices": b"\x00" * 33},
        {"username": "al"},
        {"username": "a" * 33},
        {"username": "Alice"},
        {"username": "al ice"},
        {"username": "alïce"},
        {"sequence": 0},
        {"sequence": 2**64},
        {"timestamp": -1},
        {"timestamp": 2**64},
        {"account_id": bytearray(16)},
    ],
)
def test_log_entry_refuses_fields_it_cannot_encode(changes: dict[str, object]) -> None:
    with pytest.raises(LogEntryError):
        _entry(**changes)


def test_log_entry_extremes_round_trip() -> None:
    for entry in (
        _entry(username="a.b", sequence=2**64 - 1, timestamp=0),
        _entry(username="z" * 32, timestamp=2**64 - 1),
        _entry(username="0_-.9"),
    ):
        assert LogEntry.decode(entry.encode()) == entry


def test_log_entry_decode_is_strict() -> None:
    good = bytes.fromhex(KAT_ENTRY)
    with pytest.raises(UnsupportedVersion):
        LogEntry.decode(b"\x02" + good[1:])
    for bad in (
        b"",
        b"\x01",
        b"\x01\x31" + good[2:],  # a tree head's type
        good[:-1],
        good + b"\x00",
        good[:98] + b"\x04" + good[99:],
        good[:98] + b"\x06" + good[99:],
        good[:99] + b"ALICE",
        good[:99] + b"al\xffce",
        good[:18] + bytes(8) + good[26:],  # sequence 0
        good[:98] + b"\x00",
    ):
        with pytest.raises(DecodeError):
            LogEntry.decode(bad)


@FUZZ
@given(st.binary(max_size=160))
def test_log_entry_decode_accepts_or_raises_decode_error(data: bytes) -> None:
    try:
        entry = LogEntry.decode(data)
    except DecodeError:
        return
    assert entry.encode() == data


@FUZZ
@given(st.binary(min_size=99, max_size=131))
def test_log_entry_decode_near_valid(tail: bytes) -> None:
    data = b"\x01\x30" + tail
    try:
        entry = LogEntry.decode(data)
    except DecodeError:
        return
    assert entry.encode() == data


# ====================================================================== signed tree heads


def test_signed_tree_head_known_answer() -> None:
    assert LOG_KEY.public_key().public_bytes_raw().hex() == KAT_LOG_PUBLIC
    sth = SignedTreeHead.sign(
        LOG_KEY, tree_size=8, timestamp=TIME + 123, root=REF_ROOT_8, map_root=MAP_ROOT
    )
    assert sth.encode().hex() == KAT_STH
    assert len(sth.encode()) == 146
    decoded = SignedTreeHead.decode(bytes.fromhex(KAT_STH))
    assert decoded == sth
    decoded.verify(LOG_KEY.public_key())
    # the signature is over the context and bytes 0..81
    LOG_KEY.public_key().verify(sth.signature, b"sealpost/v1/tree-head\x00" + sth.encode()[:82])


def test_signed_tree_head_refuses_what_it_did_not_sign() -> None:
    sth = SignedTreeHead.sign(
        LOG_KEY, tree_size=8, timestamp=TIME, root=REF_ROOT_8, map_root=MAP_ROOT
    )
    encoded = sth.encode()
    for i in range(2, len(encoded)):
        tampered = bytearray(encoded)
        tampered[i] ^= 0x01
        with pytest.raises(BadSignature):
            SignedTreeHead.decode(bytes(tampered)).verify(LOG_KEY.public_key())
    other = SigningKey.from_private_bytes(bytes(32))
    with pytest.raises(BadSignature):
        sth.verify(other.public_key())
    # a signature made for another purpose (the same bytes without the context)
    bare = SignedTreeHead(8, TIME, REF_ROOT_8, MAP_ROOT, LOG_KEY.sign(sth.signed_part()))
    with pytest.raises(BadSignature):
        bare.verify(LOG_KEY.public_key())


def test_signed_tree_head_decode_is_strict() -> None:
    good = bytes.fromhex(KAT_STH)
    with pytest.raises(UnsupportedVersion):
        SignedTreeHead.decode(b"\x00" + good[1:])
    legacy = b"\x01\x31" + good[2:50] + good[82:]  # the first format, without a map root
    assert legacy_head_anchor(legacy) == (8, REF_ROOT_8)
    for bad in (b"", b"\x01", b"\x01\x30" + good[2:], good[:-1], good + b"\x00", legacy):
        with pytest.raises(DecodeError):
            SignedTreeHead.decode(bad)
    for bad in (good, legacy[:-1], b"\x01\x32" + legacy[2:]):
        with pytest.raises(DecodeError):
            legacy_head_anchor(bad)
    for kwargs in (
        {"tree_size": -1},
        {"tree_size": 2**64},
        {"timestamp": 2**64},
        {"root": b"\x00" * 31},
        {"map_root": b"\x00" * 33},
    ):
        args: dict[str, object] = {"tree_size": 1, "timestamp": 0, "root": H, "map_root": H}
        args.update(kwargs)
        with pytest.raises(LogEntryError):
            SignedTreeHead.sign(LOG_KEY, **args)  # type: ignore[arg-type]
    with pytest.raises(LogEntryError):
        SignedTreeHead(1, 0, H, H, b"\x00" * 63)


@FUZZ
@given(st.binary(max_size=160))
def test_signed_tree_head_decode_accepts_or_raises_decode_error(data: bytes) -> None:
    try:
        sth = SignedTreeHead.decode(data)
    except DecodeError:
        return
    assert sth.encode() == data


def test_a_client_flow_end_to_end() -> None:
    """Server: append entries, sign heads. Client: check a contact's entry against a head,
    then that a newer head extends the one it kept."""
    log: NodeStore = _sqlite_store()
    entries = [
        _entry(account_id=bytes([i]) * 16, username=f"user{i:02d}", sequence=1) for i in range(13)
    ]
    size = append(log, 0, [e.leaf_hash() for e in entries[:5]])
    kept = SignedTreeHead.sign(
        LOG_KEY, tree_size=size, timestamp=TIME, root=root(log, size), map_root=MAP_ROOT
    )
    size = append(log, size, [e.leaf_hash() for e in entries[5:]])
    new = SignedTreeHead.decode(
        SignedTreeHead.sign(
            LOG_KEY, tree_size=size, timestamp=TIME + 1, root=root(log, size), map_root=MAP_ROOT
        ).encode()
    )
    new.verify(LOG_KEY.public_key())
    contact = LogEntry.decode(entries[3].encode())
    verify_inclusion(
        contact.leaf_hash(), 3, new.tree_size, inclusion_proof(log, 3, new.tree_size), new.root
    )
    verify_consistency(
        kept.tree_size,
        new.tree_size,
        kept.root,
        new.root,
        consistency_proof(log, kept.tree_size, new.tree_size),
    )
    _close(log)
