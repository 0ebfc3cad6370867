"""Key transparency (DESIGN.md section 4): an append-only Merkle log of account states.

- :mod:`~sealpost.transparency.merkle`: RFC 9162 hashing, proof generation from stored
  complete subtrees (:class:`NodeStore`), and the client's proof checks.
- :mod:`~sealpost.transparency.log`: the log's :class:`LogEntry`, the devices commitment
  and the :class:`SignedTreeHead` (which commits to the log's root and the map's).
- :mod:`~sealpost.transparency.smt`: the account map, a sparse Merkle tree from each
  username to its account's newest entry, with proofs of a value and of absence.

The server appends entries and signs tree heads; a client checks that a contact's keys are
in the log (:func:`verify_inclusion`), that it is the name's newest (:func:`verify_map`)
and that every newer head extends the one it holds (:func:`verify_consistency`)::

    store, map_store = MemoryNodeStore(), MemoryMapStore()
    size = append(store, 0, [entry.leaf_hash()])
    mroot = smt.insert(map_store, [(account_map_key(entry.username),
                                    account_map_value(size - 1, entry.leaf_hash()))])
    sth = SignedTreeHead.sign(log_key, tree_size=size, timestamp=now_ms,
                              root=root(store, size), map_root=mroot)

    sth.verify(log_public_key)
    verify_inclusion(entry.leaf_hash(), 0, sth.tree_size, inclusion_proof(store, 0, size),
                     sth.root)
    value, proof = prove(map_store, account_map_key(entry.username))
    verify_map(account_map_key(entry.username), value, proof, sth.map_root)

Errors derive from :class:`~sealpost.protocol.errors.ProtocolError`; the tree is in
:mod:`sealpost.transparency.merkle`.
"""

from sealpost.transparency.log import (
    DeletionCause,
    DeletionEntry,
    LogEntry,
    LogEntryError,
    SignedTreeHead,
    account_map_key,
    account_map_value,
    decode_entry,
    devices_commitment,
    legacy_head_anchor,
)
from sealpost.transparency.merkle import (
    EMPTY_ROOT,
    HASH_LEN,
    LOG_NODES_SCHEMA,
    MAX_PROOF_HASHES,
    MAX_TREE_SIZE,
    IndexOutOfRange,
    InvalidProof,
    InvalidTreeSize,
    LogStoreError,
    LogUsageError,
    MalformedHash,
    MemoryNodeStore,
    NodeKey,
    NodeStore,
    RootMismatch,
    SqliteNodeStore,
    WrongProofLength,
    append,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from sealpost.transparency.smt import (
    EMPTY_MAP_ROOT,
    MalformedMapProof,
    MapProof,
    MapStore,
    MemoryMapStore,
    SqliteMapStore,
    map_root,
    prove,
    verify_map,
)

__all__ = [
    "EMPTY_MAP_ROOT",
    "EMPTY_ROOT",
    "HASH_LEN",
    "LOG_NODES_SCHEMA",
    "MAX_PROOF_HASHES",
    "MAX_TREE_SIZE",
    "DeletionCause",
    "DeletionEntry",
    "IndexOutOfRange",
    "InvalidProof",
    "InvalidTreeSize",
    "LogEntry",
    "LogEntryError",
    "LogStoreError",
    "LogUsageError",
    "MalformedHash",
    "MalformedMapProof",
    "MapProof",
    "MapStore",
    "MemoryMapStore",
    "MemoryNodeStore",
    "NodeKey",
    "NodeStore",
    "RootMismatch",
    "SignedTreeHead",
    "SqliteMapStore",
    "SqliteNodeStore",
    "WrongProofLength",
    "account_map_key",
    "account_map_value",
    "append",
    "consistency_proof",
    "decode_entry",
    "devices_commitment",
    "inclusion_proof",
    "leaf_hash",
    "legacy_head_anchor",
    "map_root",
    "node_hash",
    "prove",
    "root",
    "verify_consistency",
    "verify_inclusion",
    "verify_map",
]
