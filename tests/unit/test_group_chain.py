"""Group state chains (issue 13, items 4 and 5): genesis-derived ids, links between
versions, and the chain check a member runs on every update: tampering, gaps, forks,
a wrong genesis and a squatter's versions are refused."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from sealpost._errors import DecodeError
from sealpost.protocol.groupchain import (
    MAX_CHAIN_STATES,
    GroupForkError,
    decode_chain,
    encode_chain,
    verify_chain,
)
from sealpost.protocol.groupstate import (
    GroupMember,
    GroupState,
    GroupStateError,
    create_group,
    group_id_for,
    state_hash,
    verify_genesis,
    verify_next,
)
from sealpost.protocol.keys import AccountIdentity


def _account(name: str) -> tuple[AccountIdentity, GroupMember]:
    account = AccountIdentity.generate(os.urandom)
    return account, GroupMember(account.account_id, account.public_key().public_bytes_raw(), name)


ALICE, A = _account("alice")
BOB, B = _account("bob")
CAROL, C = _account("carol")
DAVE, D = _account("dave")


def _chain() -> tuple[GroupState, ...]:
    """alice creates (alice, bob, carol), removes carol, renames."""
    v1 = create_group(ALICE, A, "team", (B, C), os.urandom)
    v2 = v1.next(remove=frozenset({C.account_id})).signed_by(ALICE)
    v3 = v2.next(name="crew").signed_by(ALICE)
    return v1, v2, v3


def test_group_id_is_derived_from_the_genesis() -> None:
    v1 = create_group(ALICE, A, "team", (B,), os.urandom)
    assert v1.link is not None and v1.version == 1
    assert v1.group_id == group_id_for(A.account_id, A.account_key, v1.link)
    assert verify_genesis(v1) == v1 == verify_next(None, v1)
    assert GroupState.decode(v1.encode()) == v1
    other = create_group(ALICE, A, "team", (B,), os.urandom)
    assert other.group_id != v1.group_id  # the creator's randomness


def test_wrong_genesis_is_refused() -> None:
    v1, v2, _ = _chain()
    # carol signs a "genesis" carrying alice's group id: the id is not derived from her
    squat = replace(v1, members=(*v1.members,), admins=frozenset({C.account_id}))
    with pytest.raises(GroupStateError):
        verify_genesis(squat.signed_by(CAROL))
    # the same with alice named as admin and carol as signer (carol cannot sign as alice)
    with pytest.raises(GroupStateError):
        verify_genesis(replace(v1.signed_by(CAROL)))
    # a genesis with a second admin, a later version, or no link is no genesis
    two = replace(v1, admins=frozenset({A.account_id, B.account_id})).signed_by(ALICE)
    with pytest.raises(GroupStateError):
        verify_genesis(two)
    with pytest.raises(GroupStateError):
        verify_genesis(v2)
    legacy = replace(v1, link=None).signed_by(ALICE)
    with pytest.raises(GroupStateError):
        verify_genesis(legacy)
    # a flipped bit of the link breaks the id derivation
    bad = replace(v1, link=bytes([v1.link[0] ^ 1]) + v1.link[1:]).signed_by(ALICE)  # type: ignore[index]
    with pytest.raises(GroupStateError):
        verify_genesis(bad)


def test_chain_round_trip_and_first_sight_from_genesis() -> None:
    chain = _chain()
    data = encode_chain(chain)
    assert decode_chain(data) == chain
    assert verify_chain((), decode_chain(data)) == chain
    # a single state (what an older client sends) reads as a chain of one
    assert decode_chain(chain[0].encode()) == (chain[0],)
    # but a first sight must start at the genesis
    with pytest.raises(GroupStateError):
        verify_chain((), chain[1:])


def test_removed_member_cannot_squat_a_later_version() -> None:
    """carol, removed at v2, signs a v100 (or a v2 from v1) with herself as admin and
    dave in it: refused at first sight, whatever chain she wraps around it."""
    v1, v2, _ = _chain()
    v100 = replace(v2.next(add=(C, D), admins=frozenset({C.account_id})), version=100).signed_by(
        CAROL
    )
    with pytest.raises(GroupStateError):
        verify_chain((), (v100,))
    fork = v1.next(add=(D,), admins=frozenset({C.account_id})).signed_by(CAROL)
    with pytest.raises(GroupStateError):
        verify_chain((), (v1, fork))  # carol was never an admin
    with pytest.raises(GroupStateError):
        verify_chain((), (v1, v2, v2.next(add=(D,)).signed_by(CAROL)))  # nor a member


def test_catch_up_over_missing_versions() -> None:
    v1, v2, v3 = _chain()
    assert verify_chain((v1,), (v1, v2, v3)) == (v2, v3)
    assert verify_chain((v1, v2), (v1, v2, v3)) == (v3,)
    assert verify_chain((v1, v2, v3), (v1, v2)) == ()  # nothing new
    assert verify_chain((v1, v2, v3), (v1, v2, v3)) == ()
    # a member provisioned with the head only (a new linked device) checks from it
    assert verify_chain((v2,), (v1, v2, v3)) == (v3,)
    assert verify_chain((v2,), (v3,)) == (v3,)


def test_gaps_are_refused() -> None:
    v1, _v2, v3 = _chain()
    v4 = v3.next(add=(D,)).signed_by(ALICE)
    with pytest.raises(GroupStateError):
        verify_chain((v1,), (v3, v4))  # v2 missing between the head and the chain
    with pytest.raises(DecodeError):
        verify_chain((v1,), (v1, v3))  # not consecutive
    with pytest.raises(DecodeError):
        decode_chain(encode_chain((v1, v3)))


def test_forks_are_refused() -> None:
    v1, v2, v3 = _chain()
    other = v1.next(name="elsewhere").signed_by(ALICE)  # alice signs another v2
    with pytest.raises(GroupForkError) as fork:
        verify_chain((v1, v2, v3), (v1, other))
    assert fork.value.version == 2
    with pytest.raises(GroupForkError):
        verify_chain((v1, v2), (v1, other, other.next(name="x").signed_by(ALICE)))
    # another group's chain
    stranger = create_group(BOB, B, "team", (A,), os.urandom)
    with pytest.raises(GroupStateError):
        verify_chain((v1,), (stranger,))


def test_tampered_states_are_refused() -> None:
    v1, v2, v3 = _chain()
    data = bytearray(encode_chain((v1, v2, v3)))
    for at in range(6, len(data), 23):
        tampered = bytearray(data)
        tampered[at] ^= 0x01
        with pytest.raises((GroupStateError, DecodeError)):
            verify_chain((), decode_chain(bytes(tampered)))
    # a link to something else than the version before
    relinked = replace(v2.next(name="crew"), link=state_hash(v1)).signed_by(ALICE)
    with pytest.raises(GroupStateError):
        verify_chain((v1, v2), (v1, v2, relinked))
    # a chained group cannot continue with an unchained (legacy) state
    unlinked = replace(v2.next(name="crew"), link=None).signed_by(ALICE)
    with pytest.raises(GroupStateError):
        verify_next(v2, unlinked)


def test_a_legacy_root_continues_for_its_members_only() -> None:
    """A group created before chains: its members hold the legacy state, and the admin's
    next version links to it. A device that never held it cannot check it."""
    legacy = GroupState(
        os.urandom(32),
        4,
        "old",
        tuple(sorted((A, B), key=lambda m: m.account_id)),
        frozenset({A.account_id}),
        A.account_id,
    ).signed_by(ALICE)
    assert legacy.link is None
    assert GroupState.decode(legacy.encode()) == legacy
    v5 = legacy.next(add=(D,)).signed_by(ALICE)
    assert v5.link == state_hash(legacy)
    assert verify_chain((legacy,), (legacy, v5)) == (v5,)
    with pytest.raises(GroupStateError):
        verify_chain((), (legacy, v5))


def test_chain_decoding_is_strict() -> None:
    data = encode_chain(_chain())
    for cut in range(0, len(data), 11):
        with pytest.raises(DecodeError):
            decode_chain(data[:cut])
    with pytest.raises(DecodeError):
        decode_chain(data + b"\x00")
    with pytest.raises(DecodeError):
        decode_chain(b"\x01\x35" + (MAX_CHAIN_STATES + 1).to_bytes(4, "big"))
    with pytest.raises(DecodeError):
        decode_chain(b"\x01\x35\x00\x00\x00\x00")
    with pytest.raises(DecodeError):
        encode_chain(())


def test_a_message_version_is_compared_with_the_head() -> None:
    from sealpost.client.groupsync import Ref, compare

    v1, v2, v3 = _chain()
    assert compare(v2, 2, state_hash(v2)) is Ref.SAME
    assert compare(v2, 0, None) is Ref.SAME  # a client from before chains names none
    assert compare(v2, 1, state_hash(v1)) is Ref.OLDER
    assert compare(v2, 3, state_hash(v3)) is Ref.NEWER
    assert compare(v2, 2, state_hash(v3)) is Ref.NEWER  # another state at our version
