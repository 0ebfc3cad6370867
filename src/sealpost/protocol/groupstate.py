"""Group state: signed, versioned client data (sans-I/O). The server never sees it.

A group is its id, a name, its members (account id, account identity key, username) and
which of them are admins. Every change makes a new version, signed by the account
identity key (AIK) of the member who made it, and is sent to every member of the old and
new version over the pairwise sessions, with the chain of every version before it
(:mod:`sealpost.protocol.groupchain`).

Encoding (big-endian)::

    0x01 0x34 | group_id (32) | version (4) | link (32) | name_length (1) |
    name (UTF-8, 1-64 bytes) | count (2) | count x (account_id (16) | account_key (32) |
    admin (1: 0 or 1) | username_length (1) | username (ASCII, 1-32)) |
    signer account_id (16) | Ed25519 signature (64) over
    "sealpost/v1/group-state\0" || everything before it

``link`` chains the versions: in version 1 (the **genesis**) it is 32 random bytes
chosen by the creator, and the group id is derived from it,
``SHA-256("sealpost/v1/group-id\0" || creator account_id || creator account_key ||
link)``, so nobody but the creator can make a first version of that group; in every
later version it is :func:`state_hash` of the version before. A legacy state (type
``0x32``, written before chains) has no link; it is still read, as the root of the
chains its members continue from it.

Members are sorted by account id, each at most once; at most :data:`MAX_MEMBERS`.

Rules (:func:`verify_next`), checked on every device before a state is used:

- the signature verifies under the signer's account key *as listed in the previous
  version* (so a member cannot re-key another);
- version is the previous one plus one, the group id is the same, and the link is the
  previous version's hash;
- the signer was an admin in the previous version, or the change is the signer leaving:
  the new version is the previous one less the signer and nothing else, except that when
  the last admin leaves, the remaining member with the lowest account id becomes admin;
- a group has at least one admin while it has members.

A device that learns of a group (it was added later) accepts only a chain that starts at
a genesis (:func:`verify_genesis`: version 1, signed by its only admin, the creator, and
the group id derived from the creator and the link) and checks every version from there:
a removed member cannot sign a "version 100" of a group for someone not yet in it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, replace
from typing import Final

from sealpost._errors import BadSignature, DecodeError, RemoteProtocolError
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng
from sealpost.protocol.consts import WIRE_VERSION
from sealpost.protocol.keys import AccountIdentity

__all__ = [
    "MAX_MEMBERS",
    "GroupMember",
    "GroupState",
    "GroupStateError",
    "create_group",
    "group_id_for",
    "state_hash",
    "verify_genesis",
    "verify_next",
]

MAX_MEMBERS: Final = 1000
MAX_GROUP_NAME: Final = 64
_LEGACY_TYPE: Final = 0x32  # before chains: no link
_TYPE: Final = 0x34
_CONTEXT: Final = b"sealpost/v1/group-state\x00"
_ID_CONTEXT: Final = b"sealpost/v1/group-id\x00"
_HASH_CONTEXT: Final = b"sealpost/v1/group-state-hash\x00"
_SIG: Final = 64


class GroupStateError(RemoteProtocolError):
    """A group state that breaks the rules (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class GroupMember:
    account_id: bytes
    account_key: bytes
    username: str


def _check_name(name: str) -> None:
    data = name.encode("utf-8")
    if not 1 <= len(data) <= MAX_GROUP_NAME or not name.isprintable():
        raise DecodeError(f"a group name is 1 to {MAX_GROUP_NAME} bytes of printable text")


@dataclass(frozen=True, slots=True)
class GroupState:
    group_id: bytes
    version: int
    name: str
    members: tuple[GroupMember, ...]  # sorted by account id
    admins: frozenset[bytes]
    signer: bytes
    signature: bytes = b""
    link: bytes | None = None  # genesis: the creator's random bytes; else the previous hash

    def __post_init__(self) -> None:
        if len(self.group_id) != 32 or len(self.signer) != 16:
            raise DecodeError("malformed group state")
        if self.link is not None and len(self.link) != 32:
            raise DecodeError("malformed group state link")
        if not 1 <= self.version < 2**32:
            raise DecodeError("group versions are 1 to 2**32-1")
        _check_name(self.name)
        if len(self.members) > MAX_MEMBERS:
            raise DecodeError(f"a group has at most {MAX_MEMBERS} members")
        ids = [m.account_id for m in self.members]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise DecodeError("group members must be sorted and distinct")
        for m in self.members:
            if len(m.account_id) != 16 or len(m.account_key) != 32:
                raise DecodeError("malformed group member")
            if not m.username.isascii() or not 1 <= len(m.username) <= 32:
                raise DecodeError("malformed group member name")
        if not self.admins <= set(ids):
            raise DecodeError("a group admin must be a member")

    def member(self, account_id: bytes) -> GroupMember | None:
        for m in self.members:
            if m.account_id == account_id:
                return m
        return None

    def signed_part(self) -> bytes:
        name = self.name.encode("utf-8")
        parts = [
            bytes((WIRE_VERSION, _LEGACY_TYPE if self.link is None else _TYPE)),
            self.group_id,
            struct.pack(">I", self.version),
            b"" if self.link is None else self.link,
            bytes((len(name),)),
            name,
            struct.pack(">H", len(self.members)),
        ]
        for m in self.members:
            username = m.username.encode("ascii")
            parts += [
                m.account_id,
                m.account_key,
                bytes((int(m.account_id in self.admins), len(username))),
                username,
            ]
        parts.append(self.signer)
        return b"".join(parts)

    def encode(self) -> bytes:
        if len(self.signature) != _SIG:
            raise DecodeError("the group state is not signed")
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> GroupState:
        try:
            return cls._decode(data)
        except (struct.error, UnicodeDecodeError, IndexError):
            raise DecodeError("malformed group state") from None

    @classmethod
    def _decode(cls, data: bytes) -> GroupState:
        if len(data) < 2 or data[0] != WIRE_VERSION or data[1] not in (_TYPE, _LEGACY_TYPE):
            raise DecodeError("not a group state")
        at = 2
        group_id = data[at : at + 32]
        (version,) = struct.unpack_from(">I", data, at + 32)
        at += 36
        link = None
        if data[1] == _TYPE:
            link = bytes(data[at : at + 32])
            at += 32
        name_len = data[at]
        at += 1
        name = data[at : at + name_len].decode("utf-8")
        at += name_len
        (count,) = struct.unpack_from(">H", data, at)
        at += 2
        if count > MAX_MEMBERS:
            raise DecodeError(f"a group has at most {MAX_MEMBERS} members")
        members, admins = [], set()
        for _ in range(count):
            account_id, key = data[at : at + 16], data[at + 16 : at + 48]
            admin, user_len = data[at + 48], data[at + 49]
            username = data[at + 50 : at + 50 + user_len].decode("ascii")
            if len(username) != user_len or admin not in (0, 1):
                raise DecodeError("malformed group member")
            at += 50 + user_len
            members.append(GroupMember(bytes(account_id), bytes(key), username))
            if admin:
                admins.add(bytes(account_id))
        signer, signature = data[at : at + 16], data[at + 16 :]
        if len(signature) != _SIG or len(name.encode()) != name_len:
            raise DecodeError("malformed group state")
        return cls(
            bytes(group_id),
            version,
            name,
            tuple(members),
            frozenset(admins),
            bytes(signer),
            bytes(signature),
            link,
        )

    def signed_by(self, account: AccountIdentity) -> GroupState:
        unsigned = replace(self, signer=account.account_id, signature=b"")
        return replace(
            unsigned, signature=account.signing_key.sign(_CONTEXT + unsigned.signed_part())
        )

    def next(
        self,
        *,
        add: tuple[GroupMember, ...] = (),
        remove: frozenset[bytes] = frozenset(),
        name: str | None = None,
        admins: frozenset[bytes] | None = None,
    ) -> GroupState:
        """The next version (unsigned) with these changes, linked to this one."""
        members = {m.account_id: m for m in self.members if m.account_id not in remove}
        for m in add:
            members.setdefault(m.account_id, m)
        kept_admins = (self.admins if admins is None else admins) & set(members)
        if members and not kept_admins:  # the last admin left: the lowest id takes over
            kept_admins = frozenset({min(members)})
        return GroupState(
            self.group_id,
            self.version + 1,
            self.name if name is None else name,
            tuple(members[k] for k in sorted(members)),
            frozenset(kept_admins),
            self.signer,
            link=state_hash(self),
        )

    def __repr__(self) -> str:
        return f"GroupState(version={self.version}, members={len(self.members)})"


def state_hash(state: GroupState) -> bytes:
    """What the next version links to and group messages name: SHA-256 over the signed
    encoding."""
    return hashlib.sha256(_HASH_CONTEXT + state.encode()).digest()


def group_id_for(creator_id: bytes, creator_key: bytes, link: bytes) -> bytes:
    """The id of the group whose genesis ``creator`` signed with this link."""
    return hashlib.sha256(_ID_CONTEXT + creator_id + creator_key + link).digest()


def create_group(
    account: AccountIdentity, me: GroupMember, name: str, others: tuple[GroupMember, ...], rng: Rng
) -> GroupState:
    """The genesis (version 1) of a new group, ``me`` its only admin."""
    members = {m.account_id: m for m in (*others, me)}
    link = rng(32)
    state = GroupState(
        group_id_for(me.account_id, me.account_key, link),
        1,
        name,
        tuple(members[k] for k in sorted(members)),
        frozenset({me.account_id}),
        me.account_id,
        link=link,
    )
    return state.signed_by(account)


def _verify_signature(state: GroupState, signer_key: bytes) -> None:
    try:
        VerifyKey.from_public_bytes(signer_key).verify(
            state.signature, _CONTEXT + state.signed_part()
        )
    except BadSignature:
        raise GroupStateError("the group state's signature does not verify") from None


def verify_genesis(state: GroupState) -> GroupState:
    """``state`` if it is a valid first version of its group, else
    :class:`GroupStateError`: version 1, chained, signed by its only admin, and the group
    id derived from that signer and the link."""
    if state.link is None or state.version != 1:
        raise GroupStateError("a group is first accepted only from its genesis")
    creator = state.member(state.signer)
    if creator is None or state.admins != {state.signer}:
        raise GroupStateError("a genesis is signed by its creator, its only admin")
    expected = group_id_for(creator.account_id, creator.account_key, state.link)
    if not hmac.compare_digest(expected, state.group_id):
        raise GroupStateError("the group id is not derived from its genesis")
    _verify_signature(state, creator.account_key)
    return state


def verify_next(prev: GroupState | None, new: GroupState) -> GroupState:
    """``new`` if it is a valid next version of ``prev`` (or, when ``prev`` is ``None``, a
    valid genesis); else :class:`GroupStateError`."""
    if new.members and not new.admins:
        raise GroupStateError("a group with members has an admin")
    if prev is None:
        return verify_genesis(new)
    if not hmac.compare_digest(prev.group_id, new.group_id):
        raise GroupStateError("a state of another group")
    if new.version != prev.version + 1:
        raise GroupStateError(f"version {new.version} does not follow {prev.version}")
    if new.link is None:
        if prev.link is not None:
            raise GroupStateError("a chained group cannot go back to unchained states")
    elif not hmac.compare_digest(new.link, state_hash(prev)):
        raise GroupStateError(f"version {new.version} does not link to the version before")
    signer = prev.member(new.signer)
    if signer is None:
        raise GroupStateError("signed by someone who was not a member")
    _verify_signature(new, signer.account_key)
    if new.signer in prev.admins:
        return new
    # not an admin: only leaving is allowed
    expected = prev.next(remove=frozenset({new.signer}))
    if (expected.name, expected.members, expected.admins) != (new.name, new.members, new.admins):
        raise GroupStateError("only an admin may change a group (members may only leave)")
    return new
