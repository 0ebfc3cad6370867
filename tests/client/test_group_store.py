"""The groups and sender-keys repositories: what a new state keeps and forgets, the
out-of-date mark, a device's two newest chains, and writes outside a unit refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealpost.client.groupkeys import (
    GroupMember,
    OwnChain,
    ReceiverChain,
    group_change,
    group_create,
    group_info,
)
from sealpost.client.store import TEST_PARAMS, Store, StoreError
from sealpost.client.store.groups import GroupRow, SenderKeyId
from sealpost.protocol.keys import AccountIdentity


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.create(tmp_path / "profile", "passcode", params=TEST_PARAMS)
    yield s
    s.close()


def _member(account: AccountIdentity, name: str) -> GroupMember:
    return GroupMember(account.account_id, account.public_key().public_bytes_raw(), name)


ALICE = AccountIdentity.generate(os.urandom)
BOB = AccountIdentity.generate(os.urandom)
CAROL = AccountIdentity.generate(os.urandom)


def _genesis() -> bytes:
    members = [_member(BOB, "bob"), _member(CAROL, "carol")]
    return group_create(ALICE, _member(ALICE, "alice"), "team", members, rng=os.urandom)


def _receiver(group_id: bytes) -> ReceiverChain:
    return ReceiverChain.from_distribution(OwnChain.create(group_id, rng=os.urandom).distribution())


def _key(group_id: bytes, account: AccountIdentity, chain: ReceiverChain) -> SenderKeyId:
    return (group_id, account.account_id, 1, chain.chain_id)


def test_a_new_state_round_trips_and_is_found_by_name(store: Store) -> None:
    raw = _genesis()
    info = group_info(raw)
    with store.unit() as repos:
        repos.groups.save(None, info, raw, b"chain", account_id=BOB.account_id, now=1)
    row = store.repos().groups.get(info.group_id)
    assert row == GroupRow(info, raw, True, False, b"chain", 0, None)
    assert store.repos().groups.find("team") == info.group_id
    assert store.repos().groups.find("TEAM") == info.group_id  # ignoring case
    assert store.repos().groups.find(info.group_id.hex()[:8]) == info.group_id
    assert store.repos().groups.find("other") is None
    assert store.repos().groups.names(member=True) == [(info.group_id, "team")]
    assert store.repos().groups.states() == [raw]


def test_a_removal_rotates_and_forgets_the_removed_members_keys(store: Store) -> None:
    raw = _genesis()
    info = group_info(raw)
    gid = info.group_id
    bob_chain, carol_chain = _receiver(gid), _receiver(gid)
    with store.unit() as repos:
        repos.groups.save(None, info, raw, b"c1", account_id=ALICE.account_id, now=1)
        repos.sender_keys.put(_key(gid, BOB, bob_chain), bob_chain, 1)
        repos.sender_keys.put(_key(gid, CAROL, carol_chain), carol_chain, 1)
        repos.sender_keys.mark_shared([(gid, CAROL.account_id, 1, 7), (gid, BOB.account_id, 1, 7)])
    old = store.repos().groups.get(gid)
    new = group_change(ALICE, raw, remove=[CAROL.account_id])
    with store.unit() as repos:
        repos.groups.save(old, group_info(new), new, b"c2", account_id=ALICE.account_id, now=2)
    row = store.repos().groups.get(gid)
    assert row is not None and row.rotate and row.member and row.info.version == info.version + 1
    keys = store.repos().sender_keys
    assert keys.has(_key(gid, BOB, bob_chain))
    assert not keys.has(_key(gid, CAROL, carol_chain))
    assert keys.shared(gid, 7) == {(BOB.account_id, 1)}
    with store.unit() as repos:
        repos.groups.rotated(gid)
    row = store.repos().groups.get(gid)
    assert row is not None and not row.rotate


def test_a_state_without_this_account_forgets_every_key(store: Store) -> None:
    raw = _genesis()
    info = group_info(raw)
    gid = info.group_id
    chain = _receiver(gid)
    with store.unit() as repos:
        repos.groups.save(None, info, raw, b"c1", account_id=CAROL.account_id, now=1)
        repos.sender_keys.put(_key(gid, BOB, chain), chain, 1)
        repos.sender_keys.save_own(gid, b"own chain")
    old = store.repos().groups.get(gid)
    new = group_change(ALICE, raw, remove=[CAROL.account_id])
    with store.unit() as repos:
        repos.groups.save(old, group_info(new), new, b"c2", account_id=CAROL.account_id, now=2)
    row = store.repos().groups.get(gid)
    assert row is not None and not row.member
    assert not store.repos().sender_keys.has(_key(gid, BOB, chain))
    assert store.repos().sender_keys.own(gid) is None


def test_the_out_of_date_mark_ends_at_the_version_named(store: Store) -> None:
    raw = _genesis()
    info = group_info(raw)
    gid = info.group_id
    with store.unit() as repos:
        repos.groups.save(None, info, raw, b"c1", account_id=BOB.account_id, now=1)
        repos.groups.mark_behind(gid, info.version + 2, CAROL.account_id)
    old = store.repos().groups.get(gid)
    assert old is not None and old.out_of_date and old.behind_from == CAROL.account_id
    v1 = group_change(ALICE, raw, name="team two")
    with store.unit() as repos:
        repos.groups.save(old, group_info(v1), v1, b"c2", account_id=BOB.account_id, now=2)
    mid = store.repos().groups.get(gid)
    assert mid is not None and mid.out_of_date and mid.behind == info.version + 2
    v2 = group_change(ALICE, v1, name="team three")
    with store.unit() as repos:
        repos.groups.save(mid, group_info(v2), v2, b"c3", account_id=BOB.account_id, now=3)
    done = store.repos().groups.get(gid)
    assert done is not None and not done.out_of_date and done.behind == 0


def test_the_mark_ends_when_the_member_that_named_it_leaves(store: Store) -> None:
    raw = _genesis()
    info = group_info(raw)
    gid = info.group_id
    with store.unit() as repos:
        repos.groups.save(None, info, raw, b"c1", account_id=BOB.account_id, now=1)
        repos.groups.mark_behind(gid, info.version + 5, CAROL.account_id)
    old = store.repos().groups.get(gid)
    v1 = group_change(ALICE, raw, remove=[CAROL.account_id])
    with store.unit() as repos:
        repos.groups.save(old, group_info(v1), v1, b"c2", account_id=BOB.account_id, now=2)
    row = store.repos().groups.get(gid)
    assert row is not None and row.behind == 0 and not row.out_of_date


def test_a_device_keeps_its_two_newest_chains(store: Store) -> None:
    gid = group_info(_genesis()).group_id
    chains = [_receiver(gid) for _ in range(3)]
    for now, chain in enumerate(chains):
        with store.unit() as repos:
            repos.sender_keys.put(_key(gid, BOB, chain), chain, now)
    keys = store.repos().sender_keys
    assert not keys.has(_key(gid, BOB, chains[0]))
    assert keys.has(_key(gid, BOB, chains[1])) and keys.has(_key(gid, BOB, chains[2]))
    got = keys.get(_key(gid, BOB, chains[2]))
    assert got is not None and got.to_bytes() == chains[2].to_bytes()
    assert chains[2].envelope_id is not None
    assert list(keys.by_envelope(chains[2].envelope_id)) == [_key(gid, BOB, chains[2])]


def test_a_provisioned_state_does_not_replace_a_stored_one(store: Store) -> None:
    raw = _genesis()
    info = group_info(raw)
    newer = group_change(ALICE, raw, name="renamed")
    with store.unit() as repos:
        repos.groups.save(None, group_info(newer), newer, b"c", account_id=BOB.account_id, now=1)
        repos.groups.add_provisioned(raw, 2)
    row = store.repos().groups.get(info.group_id)
    assert row is not None and row.raw == newer


def test_writes_outside_a_unit_are_refused(store: Store) -> None:
    raw = _genesis()
    with pytest.raises(StoreError):
        store.repos().groups.save(
            None, group_info(raw), raw, b"c", account_id=BOB.account_id, now=1
        )
    assert store.repos().groups.ids() == []
