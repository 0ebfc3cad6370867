"""What ``sealpost admin`` needs of every storage backend (SQLite and PostgreSQL): an
account removed whole with a signed deletion entry in the log and its name held, invite
codes spent exactly once even by concurrent registrations, counts for ``stats``."""

from __future__ import annotations

import asyncio
import os

import pytest
from test_storage_backends import _run

from sealpost.crypto.sign import SigningKey
from sealpost.server.invites import new_invite, parse_invite
from sealpost.server.storage.base import (
    AccountRecord,
    AttachmentRecord,
    DeviceRecord,
    Envelope,
    InviteRecord,
    InviteRefused,
    PreKeyUpload,
    Storage,
    UnknownAccount,
    UnknownInvite,
    UsernameQuarantined,
    UsernameTaken,
)
from sealpost.transparency import (
    DeletionCause,
    DeletionEntry,
    MapProof,
    account_map_key,
    account_map_value,
    leaf_hash,
    verify_inclusion,
    verify_map,
)
from services import MakeStorage

LOG_KEY = SigningKey.generate(os.urandom)


def _record(name: str, created: int = 7) -> AccountRecord:
    return AccountRecord(os.urandom(16), name, os.urandom(32), b"h" * 32, True, created)


async def _register(storage: Storage, record: AccountRecord, **kwargs: object) -> None:
    await storage.create_account(
        record,
        DeviceRecord(record.account_id, 1, b"cert-" + record.account_id, 0),
        PreKeyUpload(signed_prekey=(1, b"spk"), one_time=[(1, b"otk"), (2, b"otk2")]),
        **kwargs,  # type: ignore[arg-type]
    )


def test_remove_account_leaves_nothing_but_its_log_entries(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        alice, bob = _record("alice"), _record("bob")
        await _register(storage, alice)
        await _register(storage, bob)
        a = alice.account_id
        await storage.add_device(
            DeviceRecord(a, 2, b"cert-2" + a, 0), PreKeyUpload(), max_devices=5
        )
        await storage.add_device(
            DeviceRecord(a, 3, b"cert-3" + a, 0), PreKeyUpload(), max_devices=5
        )
        await storage.remove_device(a, 3, b"revocation-3")
        await storage.enqueue(
            [Envelope(os.urandom(16), a, d, b"x" * 10) for d in (1, 2)],
            exempt={},
            received_at=5,
            expires_at=10**6,
            max_depth=10,
        )
        await storage.enqueue(
            [Envelope(os.urandom(16), bob.account_id, 1, b"y")],
            exempt={},
            received_at=5,
            expires_at=10**6,
            max_depth=10,
        )
        attachment = AttachmentRecord(os.urandom(32), 100, 5, 10**6, a)
        await storage.add_attachment(attachment)
        before = await storage.log_size()

        removed = await storage.remove_account(
            a, log_key=LOG_KEY, cause=DeletionCause.OPERATOR, now_ms=50_000, free_at=1000
        )
        assert (removed.devices, removed.queued, list(removed.attachments)) == (
            2,
            2,
            [attachment.attachment_id],
        )
        assert removed.log_index == before == await storage.log_size() - 1
        assert await storage.account_by_id(a) is None
        assert await storage.account_by_username("alice") is None
        assert await storage.devices(a) == []
        assert await storage.revocations(a) == []
        assert await storage.attachment(attachment.attachment_id) is None
        assert await storage.take_bundle(a, 1) is None
        for device_id in (1, 2):
            assert await storage.fetch(a, device_id, after_seq=0, limit=10) == []
        # bob is untouched
        assert len(await storage.fetch(bob.account_id, 1, after_seq=0, limit=10)) == 1
        # the log: the earlier entries stay, the deletion is the account's last and the
        # name's value in the map, signed by the log key
        entries = await storage.log_entries(a)
        assert [e.deletion for e in entries] == [False] * 4 + [True]
        deletion = DeletionEntry.decode(entries[-1].entry)
        deletion.verify(LOG_KEY.public_key())
        assert (deletion.account_id, deletion.username, deletion.sequence) == (a, "alice", 5)
        assert (deletion.timestamp, deletion.free_after) == (50_000, 1_000_000)
        found = await storage.log_lookup("alice")
        assert found.latest is not None and found.latest.index == removed.log_index
        state = await storage.log_state()
        verify_map(
            account_map_key("alice"),
            account_map_value(found.latest.index, leaf_hash(found.latest.entry)),
            MapProof.decode(found.map_proof),
            state.map_root,
        )
        verify_inclusion(
            leaf_hash(found.latest.entry),
            found.latest.index,
            state.size,
            found.inclusion,
            state.root,
        )
        # the name is held until free_at, then it is a new account's
        with pytest.raises(UsernameQuarantined):
            await _register(storage, _record("ALICE", created=999))
        assert await storage.log_size() == before + 1
        again = _record("alice", created=1000)
        await _register(storage, again)
        assert (await storage.log_lookup("alice")).latest.index == before + 1  # type: ignore[union-attr]
        with pytest.raises(UnknownAccount):
            await storage.remove_account(
                a, log_key=LOG_KEY, cause=DeletionCause.OPERATOR, now_ms=60_000, free_at=0
            )
        # the server's processes learn of it, and its audit line is said once
        (removal,) = await storage.removals(after=0)
        assert (removal.account_id, removal.log_index, removal.audited) == (a, before, False)
        await storage.mark_audited(removal.seq)
        assert (await storage.removals(after=0))[0].audited
        assert await storage.removals(after=removal.seq) == []
        await storage.forget_account(a)  # nothing left to forget: no error
        stats = await storage.stats()
        assert (stats.accounts, stats.devices, stats.queued_messages) == (2, 2, 1)
        assert (stats.removed_accounts, stats.attachments) == (1, 0)
        assert stats.log_entries == before + 2

    _run(backend, body)


def test_a_single_use_invite_admits_exactly_one_of_concurrent_registrations(
    backend: MakeStorage,
) -> None:
    async def body(storage: Storage) -> None:
        code, invite_id, digest = new_invite(os.urandom)
        await storage.create_invite(InviteRecord(invite_id, 1, 0, 1, 0, False), digest)
        use = parse_invite(code.upper(), now=5)
        assert use is not None and use.invite_id == invite_id
        results = await asyncio.gather(
            *(_register(storage, _record(f"racer{i}"), invite=use) for i in range(8)),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, InviteRefused) for r in results if r is not None)
        (record,) = await storage.invites()
        assert (record.uses_left, record.uses, record.usable(5)) == (0, 1, False)
        assert (await storage.stats()).accounts == 1

    _run(backend, body)


def test_invites_refuse_wrong_expired_revoked_and_spend_nothing_on_failure(
    backend: MakeStorage,
) -> None:
    async def body(storage: Storage) -> None:
        code, invite_id, digest = new_invite(os.urandom)
        await storage.create_invite(InviteRecord(invite_id, 2, 0, 1, 100, False), digest)
        use = parse_invite(code, now=50)
        assert use is not None
        wrong = parse_invite(code[:-1] + ("a" if code[-1] != "a" else "b"), now=50)
        assert wrong is not None and wrong.invite_id == invite_id
        with pytest.raises(InviteRefused):
            await _register(storage, _record("wrongcode"), invite=wrong)
        unknown = parse_invite("00000000-" + code[9:], now=50)
        assert unknown is not None
        with pytest.raises(InviteRefused):
            await _register(storage, _record("unknowncode"), invite=unknown)
        await _register(storage, _record("taken"))
        with pytest.raises(UsernameTaken):  # refused for the name: the invite is not spent
            await _register(storage, _record("taken"), invite=use)
        assert (await storage.invites())[0].uses_left == 2
        await _register(storage, _record("first"), invite=use)
        late = parse_invite(code, now=100)  # at its expiry
        assert late is not None
        with pytest.raises(InviteRefused):
            await _register(storage, _record("late"), invite=late)
        await storage.revoke_invite(invite_id)
        with pytest.raises(InviteRefused):
            await _register(storage, _record("revoked"), invite=use)
        with pytest.raises(UnknownInvite):
            await storage.revoke_invite("ffffffff")
        assert (await storage.stats()).invites_usable == 0
        assert await storage.account_by_username("revoked") is None
        assert parse_invite("not a code", now=0) is None

    _run(backend, body)
