"""The key-transparency log's Merkle tree (RFC 9162 section 2.1): hashing, proofs, checks.

Hashing is RFC 9162's: a leaf is ``SHA-256(0x00 || entry)``, an interior node
``SHA-256(0x01 || left || right)``, and the tree over ``n`` leaves splits at the largest
power of two below ``n`` (so every left subtree is complete). The empty tree's hash is
``SHA-256("")``.

**Verifying** (what a client does): :func:`verify_inclusion` and :func:`verify_consistency`
follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step. Before any hashing they check the
sizes, the exact number of hashes the proof must have for these sizes (never more than
:data:`MAX_PROOF_HASHES`; before reading any of them) and the length of every hash (32
bytes), so a hostile proof costs at most two SHA-256 calls per hash of a short proof.
Hashes are compared with :func:`hmac.compare_digest`.

**Generating** (what the log server does), without rebuilding the tree: the store keeps the
hash of every *complete* subtree, keyed ``(level, index)``, the subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes. Appending
``k`` leaves to a tree of ``n`` reads at most ``log2(n)`` stored nodes (the right edge) and
writes ``k`` leaves plus every subtree they complete (for one leaf at most
``log2(n) + 1`` nodes, on average two). A subtree that is not complete at the size asked
for lies on that tree's right edge and is recomputed from the at most ``log2(n)`` complete
subtrees that cover it; an inclusion or consistency proof needs at most one such subtree,
so any proof at any past size is one :meth:`NodeStore.get_many` of ``O(log n)`` nodes.

The functions here are pure: they take a :class:`NodeStore` and the tree size (the caller
keeps the size, with its signed tree heads) and do nothing but call the store. Two stores
come with it: :class:`MemoryNodeStore` and :class:`SqliteNodeStore`, which works on a
``sqlite3`` connection it is given (table :data:`LOG_NODES_SCHEMA`) and never commits:
the caller commits an append together with its own records, in one transaction.

Errors::

    ProtocolError
    ├── LocalProtocolError
    │   └── LogUsageError          proof or append asked for what the log cannot give
    │       └── LogStoreError      a node is missing, or would be overwritten
    └── RemoteProtocolError
        └── InvalidProof           a proof that does not prove what it claims
            ├── IndexOutOfRange    leaf index >= tree size
            ├── InvalidTreeSize    a size above 2**63-1; size1 > size2; size1 == 0
            ├── WrongProofLength   not exactly as many hashes as the sizes imply
            ├── MalformedHash      a hash that is not 32 bytes
            └── RootMismatch       the proof leads to another root

Example::

    >>> store = MemoryNodeStore()
    >>> size = append(store, 0, [leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
    >>> head = root(store, size)
    >>> verify_inclusion(leaf_hash(b"b"), 1, size, inclusion_proof(store, 1, size), head)
    >>> old = root(store, 2)
    >>> verify_consistency(2, size, old, head, consistency_proof(store, 2, size))
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Sequence
from typing import Final, Protocol

from sealpost._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "EMPTY_ROOT",
    "HASH_LEN",
    "LOG_NODES_SCHEMA",
    "MAX_PROOF_HASHES",
    "MAX_TREE_SIZE",
    "IndexOutOfRange",
    "InvalidProof",
    "InvalidTreeSize",
    "LogStoreError",
    "LogUsageError",
    "MalformedHash",
    "MemoryNodeStore",
    "NodeKey",
    "NodeStore",
    "RootMismatch",
    "SqliteNodeStore",
    "WrongProofLength",
    "append",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

#: SHA-256 output: every leaf, node, root and proof hash.
HASH_LEN: Final = 32

#: Largest tree size anything here accepts: 2**63 - 1, so that every node index fits
#: SQLite's signed 64-bit INTEGER and every proof fits :data:`MAX_PROOF_HASHES`. Tree heads
#: carry a u64; a larger size is refused (no log comes near it).
MAX_TREE_SIZE: Final = 2**63 - 1

#: No proof about a tree of at most :data:`MAX_TREE_SIZE` leaves has more hashes than this
#: (an inclusion proof at most 63, a consistency proof at most 64); a longer proof is refused
#: before any of it is read.
MAX_PROOF_HASHES: Final = 64

#: The hash of the empty tree, ``SHA-256("")``.
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

#: The SQLite table :class:`SqliteNodeStore` reads and writes.
LOG_NODES_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS log_nodes ("
    "level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, "
    "PRIMARY KEY (level, idx)) WITHOUT ROWID"
)

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"
_sha256 = hashlib.sha256

#: ``(level, index)`` of a complete subtree: leaves ``[index << level, (index + 1) << level)``.
NodeKey = tuple[int, int]


# ----------------------------------------------------------------------------- errors


class InvalidProof(RemoteProtocolError):
    """A Merkle proof, or the sizes and hashes given with it, does not prove what it claims.

    Nothing here is secret: the subclasses say which check failed."""


class IndexOutOfRange(InvalidProof):
    """The leaf index is not inside the tree."""

    def __init__(self, index: int, tree_size: int) -> None:
        super().__init__(f"leaf index {index} is not in a tree of size {tree_size}")
        self.index = index
        self.tree_size = tree_size


class InvalidTreeSize(InvalidProof):
    """A tree size above :data:`MAX_TREE_SIZE`, a second tree smaller than the first, or a
    consistency proof from the empty tree (which proves nothing: RFC 9162 defines none)."""


class WrongProofLength(InvalidProof):
    """The proof does not have the number of hashes the sizes imply."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"the proof has {got} hashes, the tree sizes need {expected}")
        self.expected = expected
        self.got = got


class MalformedHash(InvalidProof):
    """A root, leaf or proof hash that is not 32 bytes."""

    def __init__(self, what: str, length: int) -> None:
        super().__init__(f"{what} is {length} bytes, not {HASH_LEN}")
        self.what = what
        self.length = length


class RootMismatch(InvalidProof):
    """Following the proof does not give the root (or roots) it was checked against."""


class LogUsageError(LocalProtocolError):
    """The caller asked the log for something it cannot give: a leaf index outside the
    tree, a first size above the second, a leaf hash that is not 32 bytes."""


class LogStoreError(LogUsageError):
    """The store lacks a node the given size needs (a size beyond the log, or a damaged
    store), or an append would overwrite a node (it was given a stale size)."""


# ----------------------------------------------------------------------------- hashing


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || entry)``."""
    return _sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE_PREFIX + left + right).digest()


# ----------------------------------------------------------------------------- stores


class NodeStore(Protocol):
    """Where the hashes of complete subtrees live. Keys are written once, never changed."""

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """The hash of every key, in order; :class:`LogStoreError` if one is missing."""
        ...

    def put_many(self, items: Sequence[tuple[NodeKey, bytes]]) -> None:
        """Store new nodes; :class:`LogStoreError` (and nothing written) if a key exists."""
        ...


class MemoryNodeStore:
    """A :class:`NodeStore` in a dict: for tests and for a client that follows a log."""

    __slots__ = ("_nodes",)

    def __init__(self) -> None:
        self._nodes: dict[NodeKey, bytes] = {}

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        nodes = self._nodes
        try:
            return [nodes[key] for key in keys]
        except KeyError as exc:
            raise LogStoreError(f"no node {exc.args[0]} in the store") from None

    def put_many(self, items: Sequence[tuple[NodeKey, bytes]]) -> None:
        nodes = self._nodes
        for key, _ in items:
            if key in nodes:
                raise LogStoreError(f"node {key} is already stored (append at a stale size?)")
        nodes.update(items)

    def __len__(self) -> int:
        return len(self._nodes)


class SqliteNodeStore:
    """A :class:`NodeStore` in the ``log_nodes`` table of a SQLite connection it is given.

    It neither opens nor commits: the caller owns the connection and the transaction (an
    append is committed with the entries and the tree head it belongs to). Writes go into
    the caller's open transaction, or begin one, as :mod:`sqlite3` does before an INSERT;
    a refused write leaves that transaction as it was."""

    __slots__ = ("_conn",)

    #: Keys per SELECT: far below SQLite's limit on bound parameters (two per key).
    _BATCH = 250

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def create_table(self) -> None:
        """Create ``log_nodes`` if it does not exist (see :data:`LOG_NODES_SCHEMA`)."""
        self._conn.execute(LOG_NODES_SCHEMA)

    @staticmethod
    def _select(count: int) -> str:
        # An OR of (level, idx) equalities: SQLite answers each with a primary-key search
        # (a row-value IN over VALUES would scan the table).
        where = " OR ".join(["(level = ? AND idx = ?)"] * count)
        return f"SELECT level, idx, hash FROM log_nodes WHERE {where}"  # noqa: S608

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        found: dict[NodeKey, bytes] = {}
        for start in range(0, len(keys), self._BATCH):
            chunk = keys[start : start + self._BATCH]
            params = [part for key in chunk for part in key]
            for level, idx, value in self._conn.execute(self._select(len(chunk)), params):
                found[(level, idx)] = value
        try:
            return [found[key] for key in keys]
        except KeyError as exc:
            raise LogStoreError(f"no node {exc.args[0]} in the store") from None

    def put_many(self, items: Sequence[tuple[NodeKey, bytes]]) -> None:
        conn = self._conn
        if not conn.in_transaction:  # as sqlite3 would before an INSERT; the caller commits
            conn.execute("BEGIN")
        conn.execute("SAVEPOINT log_nodes_put")  # nested: releasing it commits nothing
        try:
            conn.executemany(
                "INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)",
                [(level, idx, value) for (level, idx), value in items],
            )
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO log_nodes_put")
            conn.execute("RELEASE log_nodes_put")
            raise LogStoreError("a node is already stored (append at a stale size?)") from None
        conn.execute("RELEASE log_nodes_put")


# ----------------------------------------------------------------------------- generation


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _peaks(start: int, end: int) -> list[NodeKey]:
    """The complete subtrees that cover ``[start, end)``, left to right.

    Every range the RFC 9162 recursion visits starts on a multiple of a power of two at
    least as wide as itself, so these are the binary digits of its width, widest first."""
    keys: list[NodeKey] = []
    width, pos = end - start, start
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            keys.append((level, pos >> level))
            pos += 1 << level
    return keys


def _hash_ranges(store: NodeStore, ranges: list[tuple[int, int]]) -> list[bytes]:
    """``MTH(D[a:b])`` for each range, from one read of the complete subtrees covering them."""
    plan = [_peaks(a, b) for a, b in ranges]
    keys = [key for peaks in plan for key in peaks]
    values = store.get_many(keys)
    if len(values) != len(keys):
        raise LogStoreError("the store returned the wrong number of nodes")
    nodes = dict(zip(keys, values, strict=True))
    hashes = []
    for peaks in plan:
        value = nodes[peaks[-1]]
        for key in reversed(peaks[:-1]):
            value = node_hash(nodes[key], value)
        hashes.append(value)
    return hashes


def _check_size(size: int, what: str) -> None:
    if not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise LogUsageError(f"{what} must be an integer in 0..{MAX_TREE_SIZE}")


def append(store: NodeStore, size: int, leaf_hashes: Sequence[bytes]) -> int:
    """Append ``leaf_hashes`` to the log of ``size`` leaves in ``store``; the new size.

    One read (the right edge) and one write, whatever the batch size. The caller must pass
    the log's true size: a stale one makes the store refuse (:class:`LogStoreError`)."""
    _check_size(size, "size")
    for value in leaf_hashes:
        if len(value) != HASH_LEN:
            raise LogUsageError(f"a leaf hash is {HASH_LEN} bytes")
    new = size + len(leaf_hashes)
    _check_size(new, "the new size")
    if new == size:
        return size
    # Right-edge subtrees of the old tree that the new leaves complete a parent for.
    edge = [
        (level, (size >> level) - 1)
        for level in range(size.bit_length())
        if size >> level & 1 and new >> (level + 1) > size >> (level + 1)
    ]
    known = dict(zip(edge, store.get_many(edge), strict=True)) if edge else {}
    row = [bytes(value) for value in leaf_hashes]  # the new nodes of this level, from `lo`
    lo, level = size, 0
    items: list[tuple[NodeKey, bytes]] = [((0, size + i), value) for i, value in enumerate(row)]
    while True:
        parent_lo, parent_hi = size >> (level + 1), new >> (level + 1)
        if parent_hi == parent_lo:  # nothing completed here, so nothing above either
            break
        if lo & 1:  # the first new node's left sibling was already stored
            row.insert(0, known[(level, lo - 1)])
        row = [node_hash(row[i], row[i + 1]) for i in range(0, 2 * (parent_hi - parent_lo), 2)]
        level, lo = level + 1, parent_lo
        items += [((level, lo + i), value) for i, value in enumerate(row)]
    store.put_many(items)
    return new


def root(store: NodeStore, size: int) -> bytes:
    """``MTH`` of the first ``size`` leaves (any past size of the log)."""
    _check_size(size, "size")
    if size == 0:
        return EMPTY_ROOT
    return _hash_ranges(store, [(0, size)])[0]


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees of RFC 9162 ``PATH(index, D[0:size])``, leaf side first."""
    ranges = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            ranges.append((start + k, end))
            end = start + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The subtrees of RFC 9162 ``PROOF(size1, D[0:size2])`` (``0 < size1 < size2``)."""
    ranges = []
    m, start, end, whole = size1, 0, size2, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            ranges.append((start + k, end))
            end = start + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def inclusion_proof(store: NodeStore, index: int, size: int) -> list[bytes]:
    """RFC 9162 inclusion proof (audit path) of leaf ``index`` in the tree of ``size``."""
    _check_size(size, "size")
    if not isinstance(index, int) or not 0 <= index < size:
        raise LogUsageError(f"leaf index {index} is not in a tree of size {size}")
    return _hash_ranges(store, _inclusion_ranges(index, size))


def consistency_proof(store: NodeStore, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 consistency proof from the tree of ``size1`` to that of ``size2``
    (``0 < size1 <= size2``; empty when they are equal)."""
    _check_size(size1, "size1")
    _check_size(size2, "size2")
    if not 0 < size1 <= size2:
        raise LogUsageError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return []
    return _hash_ranges(store, _consistency_ranges(size1, size2))


# ----------------------------------------------------------------------------- verification


def _check_tree_size(size: int, what: str) -> None:
    if not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise InvalidTreeSize(f"{what} is not in 0..2**63-1")


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_LEN:
        raise MalformedHash(what, len(value))


def _check_count(proof: Sequence[bytes], expected: int) -> None:
    # Before anything is read from the proof: an over-long one costs nothing.
    if len(proof) != expected or expected > MAX_PROOF_HASHES:
        raise WrongProofLength(expected, len(proof))


def _inclusion_length(index: int, size: int) -> int:
    """Hashes in the inclusion proof of ``index`` (``< size``): the levels below the point
    where the path to ``index`` leaves the right edge, plus the left siblings above it."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(size1: int, size2: int) -> int:
    """Hashes in the consistency proof (``0 < size1 < size2``): the inclusion proof of the
    old tree's last complete subtree, plus that subtree unless it is the whole old tree."""
    level = (size1 & -size1).bit_length() - 1  # trailing zero bits
    index = (size1 - 1) >> level
    inner = (index ^ ((size2 - 1) >> level)).bit_length()
    return (index != 0) + inner + (index >> inner).bit_count()


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Return if ``proof`` shows the leaf ``leaf_hash`` at ``index`` in the tree of
    ``tree_size`` leaves whose hash is ``root`` (RFC 9162 section 2.1.3.2); else raise
    :class:`InvalidProof` (a subclass saying which check failed)."""
    _check_tree_size(tree_size, "the tree size")
    if not isinstance(index, int) or not 0 <= index < tree_size:
        raise IndexOutOfRange(index, tree_size)
    expected = _inclusion_length(index, tree_size)
    _check_count(proof, expected)
    _check_hash(leaf_hash, "the leaf hash")
    _check_hash(root, "the root")
    for p in proof:
        _check_hash(p, "a proof hash")
    # RFC 9162 2.1.3.2, steps 2-5.
    fn, sn, r = index, tree_size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise WrongProofLength(expected, len(proof))
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise WrongProofLength(expected, len(proof))
    if not hmac.compare_digest(r, root):
        raise RootMismatch("the inclusion proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Return if ``proof`` shows that the tree of ``size2`` leaves with hash ``root2``
    extends the tree of ``size1`` leaves with hash ``root1`` (RFC 9162 section 2.1.4.2);
    else raise :class:`InvalidProof` (a subclass saying which check failed).

    Equal sizes need an empty proof and equal roots. ``size1 == 0`` is refused: every tree
    extends the empty one, so there is nothing to prove; a client without a tree head has
    nothing to check a new one against."""
    _check_tree_size(size1, "size1")
    _check_tree_size(size2, "size2")
    if size1 > size2:
        raise InvalidTreeSize(f"size1 {size1} is above size2 {size2}: the log would shrink")
    if size1 == 0:
        raise InvalidTreeSize("a consistency proof from the empty tree proves nothing")
    expected = 0 if size1 == size2 else _consistency_length(size1, size2)
    _check_count(proof, expected)
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    for c in proof:
        _check_hash(c, "a proof hash")
    if size1 == size2:
        if not hmac.compare_digest(root1, root2):
            raise RootMismatch("two different roots for one tree size")
        return
    # RFC 9162 2.1.4.2, steps 1-7.
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, root1)
    if not path:
        raise WrongProofLength(expected, len(proof))
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise WrongProofLength(expected, len(proof))
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise WrongProofLength(expected, len(proof))
    first_ok = hmac.compare_digest(fr, root1)
    second_ok = hmac.compare_digest(sr, root2)
    if not (first_ok and second_ok):
        raise RootMismatch("the consistency proof does not lead to both roots")
