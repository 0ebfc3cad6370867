"""The client's calls into group state, sender keys and multi-recipient sealing, over the
encoded forms it stores (:mod:`sealpost.protocol.groupstate`,
:mod:`sealpost.protocol.senderkeys`, :mod:`sealpost.protocol.group_sealed` and, for
envelopes of the legacy per-device-wrap form, :mod:`sealpost.protocol.sealed_multi`)."""

from __future__ import annotations

from collections.abc import Sequence

from sealpost.entropy import Rng
from sealpost.protocol.group_sealed import (
    GROUP_SEALED_PREFIX,
    group_envelope_id,
    seal_group,
    unseal_group,
)
from sealpost.protocol.groupchain import GroupForkError, decode_chain, encode_chain, verify_chain
from sealpost.protocol.groupstate import (
    GroupMember,
    GroupState,
    GroupStateError,
    create_group,
    state_hash,
    verify_next,
)
from sealpost.protocol.keys import AccountIdentity
from sealpost.protocol.sealed_multi import MULTI_SEALED_PREFIX, seal_multi, unseal_multi
from sealpost.protocol.senderkeys import OwnSenderChain, ReceivingSenderChain
from sealpost.protocol.senderkeys import sender_key_header as _header

__all__ = [
    "GROUP_SEALED_PREFIX",
    "MULTI_SEALED_PREFIX",
    "GroupForkError",
    "GroupInfo",
    "GroupMember",
    "GroupStateError",
    "OwnChain",
    "ReceiverChain",
    "decode_chain",
    "encode_chain",
    "group_change",
    "group_create",
    "group_envelope_id",
    "group_info",
    "group_leave",
    "group_verify_next",
    "seal_group",
    "seal_multi",
    "sender_key_header",
    "state_hash",
    "unseal_group",
    "unseal_multi",
    "verify_chain",
]

GroupInfo = GroupState
OwnChain = OwnSenderChain


ReceiverChain = ReceivingSenderChain


def group_info(raw: bytes) -> GroupState:
    """A stored state (verified when it was stored)."""
    return GroupState.decode(raw)


def group_verify_next(prev: bytes | None, new: bytes) -> GroupState:
    return verify_next(None if prev is None else GroupState.decode(prev), GroupState.decode(new))


def group_create(
    account: AccountIdentity,
    me: GroupMember,
    name: str,
    members: Sequence[GroupMember],
    *,
    rng: Rng,
) -> bytes:
    return create_group(account, me, name, tuple(members), rng).encode()


def group_change(
    account: AccountIdentity,
    prev: bytes,
    *,
    add: Sequence[GroupMember] = (),
    remove: Sequence[bytes] = (),
    name: str | None = None,
) -> bytes:
    state = GroupState.decode(prev).next(add=tuple(add), remove=frozenset(remove), name=name)
    return state.signed_by(account).encode()


def group_leave(account: AccountIdentity, prev: bytes) -> bytes:
    state = GroupState.decode(prev).next(remove=frozenset({account.account_id}))
    return state.signed_by(account).encode()


def sender_key_header(message: bytes) -> tuple[bytes, int]:
    group_id, chain_id, _ = _header(message)
    return group_id, chain_id
