"""Keeping a device's view of a group in step with the other members (issue 13, item 4).

Every group update carries the sender's whole chain of signed states
(:mod:`sealpost.protocol.groupchain`), so a member that missed versions (withheld by the
server, or expired in its queue) checks each one and catches up; and every group message
names the version and state hash it was sent under. A receiver compares that with its
own head (:func:`compare`):

- ``NEWER``: the sender has a version this device lacks (or a different state at the same
  version). The device marks the group as behind, tells its user (:class:`GroupBehind`),
  asks the sender pairwise for its chain (content ``0x0a``), and **sends nothing to the
  group** (:class:`~sealpost.client.errors.GroupOutOfDate`) until a chain that reaches
  that version has been checked: a member removed in the version it lacks must not read
  what it sends next.
- ``OLDER``: the sender is behind; this device sends it its chain, pairwise.
- ``SAME``, or a message that names no version (a client from before chains): nothing.

The message itself is shown in every case: its author is a member in this device's
state, which is what decides who may write.

This module holds the pure parts: the comparison and the description of a change.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from sealpost.protocol.groupchain import decode_chain, encode_chain
from sealpost.protocol.groupstate import GroupState, state_hash

__all__ = [
    "GroupBehind",
    "Ref",
    "chain_of",
    "change_of",
    "compare",
    "decode_chain",
    "encode_chain",
]


class Ref(Enum):
    SAME = "same"
    NEWER = "newer"  # the sender's state is one this device does not have
    OLDER = "older"  # the sender is behind this device


@dataclass(frozen=True, slots=True)
class GroupBehind:
    """A member sent under a newer version of the group than this device has: nothing is
    sent to the group until this device has checked the newer states (it asked ``by``)."""

    group: bytes
    name: str
    version: int  # this device's
    seen: int  # the version the member's message named
    by: str


def compare(head: GroupState, version: int, digest: bytes | None) -> Ref:
    """How the state a message names compares with this device's ``head``."""
    if digest is None:
        return Ref.SAME
    if version < head.version:
        return Ref.OLDER
    if version > head.version or not hmac.compare_digest(digest, state_hash(head)):
        return Ref.NEWER
    return Ref.SAME


def chain_of(head: GroupState, stored: bytes | None) -> tuple[GroupState, ...]:
    """The chain a device holds for a group: the stored one, or (a group stored before
    chains, or provisioned by another device of the account) its head alone."""
    if stored is None:
        return (head,)
    return decode_chain(stored)


@dataclass(frozen=True, slots=True)
class Change:
    by: bytes  # the signer's account id
    added: tuple[str, ...]
    removed: tuple[str, ...]
    renamed_from: str | None
    admins_added: tuple[str, ...]
    admins_removed: tuple[str, ...]


def change_of(prev: GroupState | None, new: GroupState) -> Change:
    """What ``new`` changed from ``prev`` (``None``: the group as first seen)."""
    before = {m.account_id: m.username for m in prev.members} if prev else {}
    after = {m.account_id: m.username for m in new.members}
    names = before | after
    old_admins = prev.admins if prev else frozenset()
    return Change(
        new.signer,
        tuple(n for a, n in after.items() if a not in before),
        tuple(n for a, n in before.items() if a not in after),
        prev.name if prev is not None and prev.name != new.name else None,
        _names(names, (new.admins - old_admins) & set(before)) if prev else (),
        _names(names, (old_admins - new.admins) & set(after)),
    )


def _names(names: dict[bytes, str], ids: Sequence[bytes] | frozenset[bytes]) -> tuple[str, ...]:
    return tuple(sorted(names[a] for a in ids))
