"""Group state chains (sans-I/O): every version of a group from its root, so that a
member that missed an update (withheld by the server, or lost) catches up by checking each
missing version, and a device that first learns of a group checks it from its genesis.

Encoding (big-endian)::

    0x01 0x35 | count (4, 1 to MAX_CHAIN_STATES) | count x (length (4) | GroupState)

The states are consecutive versions of one group, each linked to the one before
(:mod:`sealpost.protocol.groupstate`). The first is the root: the genesis (version 1), or
for a group created before chains, the legacy state its members held when the chain
began. A group update carries the sender's whole chain; the receiver checks it against
the chain it holds (:func:`verify_chain`):

- it knows nothing of the group: the chain must start at a genesis and every version must
  follow from the one before (:func:`~sealpost.protocol.groupstate.verify_next`);
- it knows the group: every version both chains hold must be the same state (same hash),
  else :class:`GroupForkError` (someone signed two different versions: a fork, shown as
  an alarm); the versions beyond its head must follow from it, one by one.

A single state (``0x32`` or ``0x34``, what an older client sends) is read as a chain of one.

>>> from sealpost.protocol.keys import AccountIdentity
>>> import os
>>> alice = AccountIdentity.generate(os.urandom)
>>> me = GroupMember(alice.account_id, alice.public_key().public_bytes_raw(), "alice")
>>> v1 = create_group(alice, me, "team", (), os.urandom)
>>> v2 = v1.next(name="crew").signed_by(alice)
>>> [s.version for s in verify_chain((), decode_chain(encode_chain((v1, v2))))]
[1, 2]
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from typing import Final

from sealpost._errors import DecodeError
from sealpost.protocol.consts import WIRE_VERSION
from sealpost.protocol.groupstate import (
    GroupMember,
    GroupState,
    GroupStateError,
    create_group,
    state_hash,
    verify_next,
)

__all__ = [
    "MAX_CHAIN_STATES",
    "GroupForkError",
    "decode_chain",
    "encode_chain",
    "verify_chain",
]

#: A chain holds at most this many versions (a group changed more often than this needs
#: re-creating; the encoded chain must also fit the group-state attachment limit).
MAX_CHAIN_STATES: Final = 10_000
_TYPE: Final = 0x35
_ = (GroupMember, create_group)  # used by the doctest


class GroupForkError(GroupStateError):
    """Two different signed states of one group at the same version."""

    def __init__(self, version: int) -> None:
        super().__init__(f"two different states of the group at version {version}")
        self.version = version


def encode_chain(states: Sequence[GroupState]) -> bytes:
    if not 1 <= len(states) <= MAX_CHAIN_STATES:
        raise DecodeError(f"a group chain has 1 to {MAX_CHAIN_STATES} states")
    parts = [bytes((WIRE_VERSION, _TYPE)), struct.pack(">I", len(states))]
    for state in states:
        raw = state.encode()
        parts += [struct.pack(">I", len(raw)), raw]
    return b"".join(parts)


def decode_chain(data: bytes) -> tuple[GroupState, ...]:
    """A chain, or a single state read as a chain of one. Only the shape is checked here
    (consecutive versions of one group); :func:`verify_chain` checks the signatures."""
    if not isinstance(data, bytes) or len(data) < 2 or data[0] != WIRE_VERSION:
        raise DecodeError("not a group chain")
    if data[1] != _TYPE:
        return (GroupState.decode(data),)
    try:
        (count,) = struct.unpack_from(">I", data, 2)
        if not 1 <= count <= MAX_CHAIN_STATES:
            raise DecodeError(f"a group chain has 1 to {MAX_CHAIN_STATES} states")
        at, states = 6, []
        for _ in range(count):
            (length,) = struct.unpack_from(">I", data, at)
            raw = data[at + 4 : at + 4 + length]
            if len(raw) != length:
                raise DecodeError("truncated group chain")
            states.append(GroupState.decode(raw))
            at += 4 + length
    except struct.error:
        raise DecodeError("truncated group chain") from None
    if at != len(data):
        raise DecodeError("trailing bytes after the group chain")
    first = states[0]
    for i, state in enumerate(states):
        if state.version != first.version + i or state.group_id != first.group_id:
            raise DecodeError("a group chain holds consecutive versions of one group")
    return tuple(states)


def verify_chain(
    known: Sequence[GroupState], chain: Sequence[GroupState]
) -> tuple[GroupState, ...]:
    """The versions of ``chain`` beyond the head of ``known`` (the chain this device holds,
    consecutive, from its root; empty: it knows nothing of the group), each verified.
    Empty if ``chain`` brings nothing new. Raises :class:`GroupForkError` if the two
    disagree on a version, :class:`GroupStateError` if ``chain`` is not a valid chain
    from ``known`` (or from a genesis), ``DecodeError`` if it is not consecutive."""
    if not chain:
        raise DecodeError("an empty group chain")
    first = chain[0]
    for i, state in enumerate(chain):
        if state.version != first.version + i or state.group_id != first.group_id:
            raise DecodeError("a group chain holds consecutive versions of one group")
    prev: GroupState | None = None
    if known:
        if known[0].group_id != first.group_id:
            raise GroupStateError("a chain of another group")
        base = known[0].version
        head = known[-1]
        for state in chain:
            if base <= state.version <= head.version:
                mine = known[state.version - base]
                if not hmac.compare_digest(state_hash(mine), state_hash(state)):
                    raise GroupForkError(state.version)
        if chain[-1].version <= head.version:
            return ()
        if first.version > head.version + 1:
            raise GroupStateError(
                f"the chain starts at version {first.version}, after a gap from {head.version}"
            )
        prev = head
    new = [s for s in chain if prev is None or s.version > prev.version]
    for state in new:
        prev = verify_next(prev, state)
    return tuple(new)
