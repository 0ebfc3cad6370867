"""The key-transparency map: a sparse Merkle tree from 256-bit keys to 32-byte values.

The log (:mod:`sealpost.transparency.merkle`) proves that an entry was logged, never that
it is an account's *newest* one: an old entry stays included in every later tree. So every
signed tree head also commits to this map, from each username's key to (a hash of) the
index and leaf hash of the account's newest entry (:mod:`sealpost.transparency.log`), and a
lookup proves the value at the head's map root; an unknown name gets a proof of absence.

**The tree.** A binary tree of depth 256: the key's bits, most significant first, pick the
path from the root (depth 0) to its leaf position (depth 256). Hashes are SHA-256 with a
prefix byte that no other sealpost tree uses (the log's are 0x00 and 0x01)::

    empty(256)        = SHA-256(0x04)
    empty(d)          = SHA-256(0x03 || empty(d+1) || empty(d+1))     d < 256
    leaf(d, key, val) = SHA-256(0x02 || u16 d || key (32) || val (32))
    node(left, right) = SHA-256(0x03 || left || right)

A subtree at depth ``d`` hashes to ``empty(d)`` if it holds no key, to ``leaf(d, key, val)``
if it holds exactly one (the key and its depth are in the hash, so the one leaf cannot be
moved), else to ``node`` of its two halves. This is the 256-level sparse Merkle tree with
default hashes for empty subtrees, with the one-key shortcut of Dahlberg, Pulls and Peeters
("Efficient Sparse Merkle Trees", 2016; Diem's Jellyfish tree does the same): a key sits
where its path first leaves every other key, so a path has about ``log2(n)`` hashes, not
256, and a proof at a million keys has about 21.

**Proofs** (:class:`MapProof`): the depth ``t`` where the key's path ends (at its own leaf,
at an empty subtree, or at the leaf of another key that shares its first ``t`` bits: both
prove absence), a 256-bit bitmap of the depths ``1..t`` whose sibling is not empty, those
siblings from the top, and for the third case the other key and value. The verifier
(:func:`verify_map`) hashes from the end of the path up; it needs ``t + 1`` hashes.
Decoding is strict and canonical: one statement has one proof encoding.

**Storage** (:class:`MapStore`): the key-value pairs, and the hash of every non-empty node
down to each key's leaf (about ``2.5 n`` nodes), keyed ``(depth, prefix)``. An update reads
the two neighbouring keys and one batch of ``O(log n)`` nodes and writes ``O(log n)``
nodes; :func:`build` fills an empty store from sorted pairs in one pass. There is no
delete: accounts are never removed from the log. Errors are those of
:mod:`sealpost.transparency.merkle`, plus :class:`MalformedMapProof` (an
:class:`InvalidProof`).

Example::

    >>> store = MemoryMapStore()
    >>> key, value = bytes(32), bytes(range(32))
    >>> head = insert(store, [(key, value)])
    >>> found, proof = prove(store, key)
    >>> verify_map(key, found, MapProof.decode(proof.encode()), head)
    >>> verify_map(b"\\xff" * 32, None, prove(store, b"\\xff" * 32)[1], head)
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from sealpost.transparency.merkle import (
    HASH_LEN,
    InvalidProof,
    LogStoreError,
    LogUsageError,
    MalformedHash,
    RootMismatch,
    WrongProofLength,
)

__all__ = [
    "EMPTY_MAP_ROOT",
    "KEY_BITS",
    "MAP_SCHEMA",
    "MAX_MAP_PROOF_LEN",
    "MalformedMapProof",
    "MapNodeKey",
    "MapProof",
    "MapStore",
    "MemoryMapStore",
    "SqliteMapStore",
    "build",
    "empty_hash",
    "insert",
    "map_leaf_hash",
    "map_node_hash",
    "map_root",
    "prove",
    "verify_map",
]

KEY_BITS: Final = 256
_KEY_LEN: Final = 32
_VERSION: Final = 0x01
#: The proof's type byte, after the log's 0x30 (entry) and 0x31/0x32 (tree heads).
MAP_PROOF_TYPE: Final = 0x33
_HEADER: Final = 5  # version, type, flags, u16 depth
_BITMAP: Final = 32
#: The longest proof: every one of 256 siblings and another key's leaf (a path can be that
#: long only for keys chosen to share a prefix; at a million random keys a proof is ~0.8 KiB).
MAX_MAP_PROOF_LEN: Final = _HEADER + _BITMAP + 2 * _KEY_LEN + KEY_BITS * HASH_LEN

_sha256 = hashlib.sha256
_LEAF: Final = b"\x02"
_NODE: Final = b"\x03"


def _empty_table() -> tuple[bytes, ...]:
    table = [_sha256(b"\x04").digest()]
    for _ in range(KEY_BITS):
        table.append(_sha256(_NODE + table[-1] + table[-1]).digest())
    return tuple(reversed(table))  # index = depth


_EMPTY: Final = _empty_table()
#: The root of the map with no key.
EMPTY_MAP_ROOT: Final = _EMPTY[0]

#: SQLite tables of :class:`SqliteMapStore`.
MAP_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS kt_map_leaves ("
    "key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kt_map_nodes ("
    "depth INTEGER NOT NULL, prefix BLOB NOT NULL, hash BLOB NOT NULL, "
    "PRIMARY KEY (depth, prefix)) WITHOUT ROWID;"
)

#: ``(depth, prefix)``: the node whose keys start with the ``depth`` bits of ``prefix``.
MapNodeKey = tuple[int, int]
Pair = tuple[bytes, bytes]


class MalformedMapProof(InvalidProof):
    """A map proof whose encoding is not the one canonical encoding of a proof."""


def empty_hash(depth: int) -> bytes:
    """The hash of an empty subtree at ``depth`` (0..256)."""
    return _EMPTY[depth]


def map_leaf_hash(depth: int, key: bytes, value: bytes) -> bytes:
    """The hash of a subtree at ``depth`` that holds only ``key``."""
    return _sha256(_LEAF + depth.to_bytes(2, "big") + key + value).digest()


def map_node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(_NODE + left + right).digest()


def _int(key: bytes) -> int:
    return int.from_bytes(key, "big")


def _path(k: int, depth: int) -> MapNodeKey:
    return (depth, k >> (KEY_BITS - depth))


def _sibling(k: int, depth: int) -> MapNodeKey:
    """The other child of the parent of the node at ``depth`` (1..256) on ``k``'s path."""
    return (depth, (k >> (KEY_BITS - depth)) ^ 1)


def _bit(k: int, depth: int) -> int:
    """Which child of the node at ``depth`` (0..255) the path of ``k`` takes."""
    return (k >> (KEY_BITS - 1 - depth)) & 1


def _shared(a: int, b: int) -> int:
    """How many leading bits two different keys share."""
    return KEY_BITS - (a ^ b).bit_length()


def _check_pair(key: bytes, value: bytes | None) -> None:
    if not isinstance(key, bytes) or len(key) != _KEY_LEN:
        raise LogUsageError("a map key is 32 bytes")
    if value is not None and (not isinstance(value, bytes) or len(value) != HASH_LEN):
        raise LogUsageError("a map value is 32 bytes")


# ----------------------------------------------------------------------------- stores


class MapStore(Protocol):
    """The map's key-value pairs and node hashes. Writes replace."""

    def around(self, key: bytes) -> tuple[bytes | None, Pair | None, Pair | None]:
        """The value of ``key`` (``None``: absent), and the pairs with the next smaller and
        the next larger key (``None``: there is none)."""
        ...

    def nodes(self, keys: Sequence[MapNodeKey]) -> dict[MapNodeKey, bytes]:
        """The stored hashes among ``keys`` (a key with no node is left out)."""
        ...

    def put(self, pairs: Sequence[Pair], nodes: Sequence[tuple[MapNodeKey, bytes]]) -> None:
        """Store (or replace) pairs and node hashes, all or none."""
        ...


class MemoryMapStore:
    """A :class:`MapStore` in memory: for tests, and for a client that wants to follow."""

    __slots__ = ("_keys", "_nodes", "_values")

    def __init__(self) -> None:
        self._keys: list[bytes] = []  # sorted
        self._values: dict[bytes, bytes] = {}
        self._nodes: dict[MapNodeKey, bytes] = {}

    def around(self, key: bytes) -> tuple[bytes | None, Pair | None, Pair | None]:
        keys, values = self._keys, self._values
        lo = bisect.bisect_left(keys, key)
        hi = bisect.bisect_right(keys, key)
        below = (keys[lo - 1], values[keys[lo - 1]]) if lo else None
        above = (keys[hi], values[keys[hi]]) if hi < len(keys) else None
        return values.get(key), below, above

    def nodes(self, keys: Sequence[MapNodeKey]) -> dict[MapNodeKey, bytes]:
        nodes = self._nodes
        return {key: nodes[key] for key in keys if key in nodes}

    def put(self, pairs: Sequence[Pair], nodes: Sequence[tuple[MapNodeKey, bytes]]) -> None:
        for key, value in pairs:
            if key not in self._values:
                bisect.insort(self._keys, key)
            self._values[key] = value
        self._nodes.update(nodes)

    def __len__(self) -> int:
        return len(self._keys)


class SqliteMapStore:
    """A :class:`MapStore` in the ``kt_map_*`` tables of a SQLite connection it is given.

    Like :class:`~sealpost.transparency.merkle.SqliteNodeStore` it never commits: an update
    of the map is committed with the log entry it belongs to, in the caller's transaction."""

    __slots__ = ("_conn",)

    _BATCH = 250

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def create_tables(self) -> None:
        self._conn.executescript(MAP_SCHEMA)

    def around(self, key: bytes) -> tuple[bytes | None, Pair | None, Pair | None]:
        conn = self._conn
        own = conn.execute("SELECT value FROM kt_map_leaves WHERE key = ?", (key,)).fetchone()
        below = conn.execute(
            "SELECT key, value FROM kt_map_leaves WHERE key < ? ORDER BY key DESC LIMIT 1", (key,)
        ).fetchone()
        above = conn.execute(
            "SELECT key, value FROM kt_map_leaves WHERE key > ? ORDER BY key LIMIT 1", (key,)
        ).fetchone()
        return (
            None if own is None else bytes(own[0]),
            None if below is None else (bytes(below[0]), bytes(below[1])),
            None if above is None else (bytes(above[0]), bytes(above[1])),
        )

    @staticmethod
    def _prefix(depth: int, prefix: int) -> bytes:
        return prefix.to_bytes((depth + 7) // 8, "big")

    def nodes(self, keys: Sequence[MapNodeKey]) -> dict[MapNodeKey, bytes]:
        wanted = {(d, self._prefix(d, p)): (d, p) for d, p in keys}
        found: dict[MapNodeKey, bytes] = {}
        items = list(wanted)
        for start in range(0, len(items), self._BATCH):
            chunk = items[start : start + self._BATCH]
            where = " OR ".join(["(depth = ? AND prefix = ?)"] * len(chunk))
            sql = f"SELECT depth, prefix, hash FROM kt_map_nodes WHERE {where}"  # noqa: S608
            for depth, prefix, value in self._conn.execute(sql, [x for k in chunk for x in k]):
                found[wanted[(depth, bytes(prefix))]] = bytes(value)
        return found

    def put(self, pairs: Sequence[Pair], nodes: Sequence[tuple[MapNodeKey, bytes]]) -> None:
        conn = self._conn
        if not conn.in_transaction:
            conn.execute("BEGIN")
        conn.execute("SAVEPOINT kt_map_put")
        try:
            conn.executemany("INSERT OR REPLACE INTO kt_map_leaves VALUES (?, ?)", pairs)
            conn.executemany(
                "INSERT OR REPLACE INTO kt_map_nodes VALUES (?, ?, ?)",
                [(d, self._prefix(d, p), h) for (d, p), h in nodes],
            )
        except sqlite3.Error:
            conn.execute("ROLLBACK TO kt_map_put")
            conn.execute("RELEASE kt_map_put")
            raise
        conn.execute("RELEASE kt_map_put")


# ----------------------------------------------------------------------------- proofs


@dataclass(frozen=True, slots=True)
class MapProof:
    """Where a key's path ends (``depth``), the non-empty siblings above it (``bitmap``
    bit ``i``, most significant first, for the sibling at depth ``i + 1``; ``siblings``
    from the top), and ``other``: the key and value whose leaf ends the path, if another
    key's. Encoding::

        0x01 0x33 | flags (1: 0x01 other follows) | depth (u16, 0..256) | bitmap (32) |
        [other key (32) | other value (32)] | sibling (32) x popcount(bitmap)
    """

    depth: int
    bitmap: int
    siblings: tuple[bytes, ...]
    other: Pair | None = None

    def encode(self) -> bytes:
        head = bytes([_VERSION, MAP_PROOF_TYPE, 1 if self.other else 0])
        head += self.depth.to_bytes(2, "big") + self.bitmap.to_bytes(_BITMAP, "big")
        return head + (b"".join(self.other) if self.other else b"") + b"".join(self.siblings)

    @classmethod
    def decode(cls, data: bytes) -> MapProof:
        """Parse and check a proof's shape; :class:`MalformedMapProof` if it is not the
        canonical encoding of one (a sibling that is an empty subtree's hash included)."""
        data = bytes(data)
        if len(data) < _HEADER + _BITMAP or len(data) > MAX_MAP_PROOF_LEN:
            raise MalformedMapProof("a map proof of the wrong length")
        if data[0] != _VERSION or data[1] != MAP_PROOF_TYPE or data[2] not in (0, 1):
            raise MalformedMapProof("not a map proof")
        depth = int.from_bytes(data[3:5], "big")
        bitmap = int.from_bytes(data[5 : _HEADER + _BITMAP], "big")
        if depth > KEY_BITS:
            raise MalformedMapProof("a path deeper than 256")
        below = KEY_BITS - depth  # bits for depths depth+1..256 must be clear
        if bitmap & ((1 << below) - 1):
            raise MalformedMapProof("a sibling below the end of the path")
        if depth and not bitmap >> below & 1:
            raise MalformedMapProof("the path's last sibling is empty: it ends higher")
        pos = _HEADER + _BITMAP
        other = None
        if data[2]:
            other = (data[pos : pos + _KEY_LEN], data[pos + _KEY_LEN : pos + 2 * _KEY_LEN])
            pos += 2 * _KEY_LEN
        count = bitmap.bit_count()
        if len(data) != pos + count * HASH_LEN:
            raise WrongProofLength(count, (len(data) - pos) // HASH_LEN)
        siblings = tuple(data[pos + i * HASH_LEN : pos + (i + 1) * HASH_LEN] for i in range(count))
        depths = [d for d in range(1, depth + 1) if bitmap >> (KEY_BITS - d) & 1]
        for d, h in zip(depths, siblings, strict=True):
            if hmac.compare_digest(h, _EMPTY[d]):
                raise MalformedMapProof("an empty subtree listed as a sibling")
        return cls(depth, bitmap, siblings, other)


def verify_map(key: bytes, value: bytes | None, proof: MapProof, root: bytes) -> None:
    """Return if ``proof`` shows that ``key`` maps to ``value`` (``None``: that it is absent)
    in the map whose root is ``root``; else raise :class:`InvalidProof`. Costs
    ``proof.depth + 1`` hashes."""
    _check_pair(key, value)
    if len(root) != HASH_LEN:
        raise MalformedHash("the map root", len(root))
    k, depth = _int(key), proof.depth
    if not 0 <= depth <= KEY_BITS or proof.bitmap >> KEY_BITS or proof.bitmap < 0:
        raise MalformedMapProof("a path deeper than 256")
    depths = [d for d in range(1, depth + 1) if proof.bitmap >> (KEY_BITS - d) & 1]
    if len(depths) != len(proof.siblings) or proof.bitmap & ((1 << (KEY_BITS - depth)) - 1):
        raise WrongProofLength(len(depths), len(proof.siblings))
    if value is not None:
        if proof.other is not None:
            raise RootMismatch("an absence proof offered for a value")
        h = map_leaf_hash(depth, key, value)
    elif proof.other is not None:
        other_key, other_value = proof.other
        if len(other_key) != _KEY_LEN or len(other_value) != HASH_LEN:
            raise MalformedMapProof("another leaf of the wrong length")
        o = _int(other_key)
        if o == k or (depth and _shared(o, k) < depth):
            raise RootMismatch("the other leaf is not on the key's path")
        h = map_leaf_hash(depth, other_key, other_value)
    else:
        h = _EMPTY[depth]
    given = dict(zip(depths, proof.siblings, strict=True))
    for d in range(depth, 0, -1):
        sibling = given.get(d)
        if sibling is None:
            sibling = _EMPTY[d]
        elif len(sibling) != HASH_LEN:
            raise MalformedHash("a sibling", len(sibling))
        h = map_node_hash(sibling, h) if _bit(k, d - 1) else map_node_hash(h, sibling)
    if not hmac.compare_digest(h, root):
        raise RootMismatch("the map proof does not lead to the root")


# ----------------------------------------------------------------------------- generation


def _split_depth(k: int, below: Pair | None, above: Pair | None) -> tuple[int, Pair | None]:
    """The bits ``k`` shares with its closest other key (-1: no other key), and that key."""
    best, nearest = -1, None
    for pair in (below, above):
        if pair is not None and (shared := _shared(_int(pair[0]), k)) > best:
            best, nearest = shared, pair
    return best, nearest


def map_root(store: MapStore) -> bytes:
    return store.nodes([(0, 0)]).get((0, 0), EMPTY_MAP_ROOT)


def prove(store: MapStore, key: bytes) -> tuple[bytes | None, MapProof]:
    """The value of ``key`` (``None``: absent) and the proof of it against :func:`map_root`."""
    _check_pair(key, None)
    k = _int(key)
    value, below, above = store.around(key)
    s, nearest = _split_depth(k, below, above)
    if s < 0:
        return value, MapProof(0, 0, ())
    found = store.nodes(
        [_sibling(k, d) for d in range(1, s + 2)] + [_path(k, d) for d in range(s + 1)]
    )
    other = None
    if value is not None or _sibling(k, s + 1) in found:
        depth = s + 1  # the key's own leaf, or an empty subtree beside a fuller one
        if value is not None and _sibling(k, depth) not in found:
            raise LogStoreError("the map store lacks a node on a stored key's path")
    else:  # the path ends at the leaf of the nearest key, alone in the subtree it shares
        assert nearest is not None
        depth = max(d for d in range(s + 1) if _path(k, d) in found)
        other = nearest
    depths = [d for d in range(1, depth + 1) if _sibling(k, d) in found]
    bitmap = sum(1 << (KEY_BITS - d) for d in depths)
    return value, MapProof(depth, bitmap, tuple(found[_sibling(k, d)] for d in depths), other)


def _insert_one(store: MapStore, key: bytes, value: bytes) -> bytes:
    k = _int(key)
    _, below, above = store.around(key)
    s, nearest = _split_depth(k, below, above)
    depth = s + 1
    found = store.nodes([_sibling(k, d) for d in range(1, depth + 1)])
    h = map_leaf_hash(depth, key, value)
    writes = [(_path(k, depth), h)]
    if depth and _sibling(k, depth) not in found:  # the nearest key was alone: moves down
        assert nearest is not None
        found[_sibling(k, depth)] = map_leaf_hash(depth, *nearest)
        writes.append((_sibling(k, depth), found[_sibling(k, depth)]))
    for d in range(depth, 0, -1):
        sibling = found.get(_sibling(k, d), _EMPTY[d])
        h = map_node_hash(sibling, h) if _bit(k, d - 1) else map_node_hash(h, sibling)
        writes.append((_path(k, d - 1), h))
    store.put([(key, value)], writes)
    return h


def insert(store: MapStore, pairs: Iterable[Pair]) -> bytes:
    """Set each key to its value, in order (a later pair for a key wins); the new root.
    One update reads ``O(log n)`` nodes and writes as many."""
    head = None
    for key, value in pairs:
        _check_pair(key, value)
        head = _insert_one(store, key, value)
    return map_root(store) if head is None else head


def build(store: MapStore, pairs: Iterable[Pair]) -> bytes:
    """Fill an *empty* store with ``pairs`` (distinct keys, any order) in one pass: one
    hash per stored node, about ``2.5 n``. The root."""
    items = sorted(pairs)
    for i, (key, value) in enumerate(items):
        _check_pair(key, value)
        if i and items[i - 1][0] == key:
            raise LogUsageError("a key twice in one build")
    if map_root(store) != EMPTY_MAP_ROOT:
        raise LogUsageError("build fills an empty map; use insert")
    ints = [_int(key) for key, _ in items]
    out: list[tuple[MapNodeKey, bytes]] = []

    def subtree(depth: int, lo: int, hi: int) -> bytes:
        prefix = ints[lo] >> (KEY_BITS - depth)
        if hi - lo == 1:
            h = map_leaf_hash(depth, *items[lo])
        else:
            mid = bisect.bisect_left(ints, ((prefix << 1) | 1) << (KEY_BITS - 1 - depth), lo, hi)
            left = subtree(depth + 1, lo, mid) if mid > lo else _EMPTY[depth + 1]
            right = subtree(depth + 1, mid, hi) if hi > mid else _EMPTY[depth + 1]
            h = map_node_hash(left, right)
        out.append(((depth, prefix), h))
        return h

    if not items:
        return EMPTY_MAP_ROOT
    head = subtree(0, 0, len(items))
    for start in range(0, len(items), 100_000):  # bounded statements, one transaction
        store.put(items[start : start + 100_000], [])
    for start in range(0, len(out), 100_000):
        store.put([], out[start : start + 100_000])
    return head
