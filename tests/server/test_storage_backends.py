"""The guarantees of :mod:`sealpost.server.storage.base`, checked against every backend
(SQLite and PostgreSQL, see conftest.py): refusals change nothing, sends are all or none
and kept in order, one-time prekeys go out once even to concurrent fetchers, stale epochs
are fenced off, queue positions bound every message queued, expired data is purged."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable

import pytest

from sealpost.server.storage.base import (
    AccountExists,
    AccountRecord,
    AttachmentQuotaFull,
    AttachmentRecord,
    DeviceExists,
    DeviceRecord,
    DeviceRevoked,
    Envelope,
    LastDevice,
    MismatchedDevices,
    PreKeyStockFull,
    PreKeyUpload,
    QueueFull,
    SharedEnvelope,
    StaleEpoch,
    Storage,
    TooManyDevices,
    UnknownAccount,
    UnknownDevice,
    UsernameTaken,
)
from sealpost.server.storage.sqlite import SqliteStorage
from services import MakeStorage


def _run(make: MakeStorage, body: Callable[[Storage], Awaitable[None]]) -> None:
    async def main() -> None:
        storage = make()
        await storage.open()
        try:
            await body(storage)
        finally:
            await storage.close()

    asyncio.run(main())


def _record(name: str | None = None) -> AccountRecord:
    account_id = os.urandom(16)
    return AccountRecord(
        account_id, name or account_id.hex()[:12], os.urandom(32), b"h" * 32, True, 7
    )


async def _account(
    storage: Storage, devices: int = 1, prekeys: PreKeyUpload | None = None
) -> bytes:
    record = _record()
    await storage.create_account(
        record, DeviceRecord(record.account_id, 1, b"cert-1", 0), prekeys or PreKeyUpload()
    )
    for device_id in range(2, devices + 1):
        await storage.add_device(
            DeviceRecord(record.account_id, device_id, b"cert-%d" % device_id, 0),
            PreKeyUpload(),
            max_devices=100,
        )
    return record.account_id


def _env(account_id: bytes, device_id: int = 1) -> Envelope:
    return Envelope(os.urandom(16), account_id, device_id, os.urandom(32))


async def _send(
    storage: Storage,
    envelopes: list[Envelope],
    *,
    depth: int = 100,
    expires_at: int = 1000,
    exempt: dict[bytes, int] | None = None,
) -> None:
    await storage.enqueue(
        envelopes, exempt=exempt or {}, received_at=5, expires_at=expires_at, max_depth=depth
    )


def test_accounts_are_unique_by_id_and_username_and_refusals_change_nothing(
    backend: MakeStorage,
) -> None:
    async def body(storage: Storage) -> None:
        alice = _record("Alice")
        await storage.create_account(
            alice, DeviceRecord(alice.account_id, 1, b"c", 3), PreKeyUpload()
        )
        assert await storage.account_by_id(alice.account_id) == alice
        assert await storage.account_by_username("alice") == alice
        assert await storage.account_by_username("nobody") is None
        size = await storage.log_size()
        with pytest.raises(UsernameTaken):
            other = _record("ALICE")
            await storage.create_account(
                other, DeviceRecord(other.account_id, 1, b"c", 0), PreKeyUpload()
            )
        assert await storage.account_by_id(other.account_id) is None
        with pytest.raises(AccountExists):
            again = AccountRecord(alice.account_id, "alice2", b"k" * 32, b"h" * 32, False, 0)
            await storage.create_account(
                again, DeviceRecord(alice.account_id, 1, b"c", 0), PreKeyUpload()
            )
        assert await storage.account_by_username("alice2") is None
        assert await storage.log_size() == size
        assert await storage.devices(alice.account_id) == [
            DeviceRecord(alice.account_id, 1, b"c", 3)
        ]

    _run(backend, body)


def test_devices_are_added_limited_removed_and_never_come_back(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        account_id = await _account(storage)
        with pytest.raises(UnknownAccount):
            await storage.add_device(
                DeviceRecord(os.urandom(16), 2, b"c", 0), PreKeyUpload(), max_devices=5
            )
        await storage.add_device(
            DeviceRecord(account_id, 2, b"c2", 0), PreKeyUpload(), max_devices=2
        )
        with pytest.raises(DeviceExists):
            await storage.add_device(
                DeviceRecord(account_id, 2, b"c2b", 0), PreKeyUpload(), max_devices=5
            )
        with pytest.raises(TooManyDevices):
            await storage.add_device(
                DeviceRecord(account_id, 3, b"c3", 0), PreKeyUpload(), max_devices=2
            )
        assert [d.device_id for d in await storage.devices(account_id)] == [1, 2]
        await _send(storage, [_env(account_id, 1), _env(account_id, 2)])
        with pytest.raises(UnknownDevice):
            await storage.remove_device(account_id, 9, b"r9")
        await storage.remove_device(account_id, 2, b"r2")
        assert await storage.device(account_id, 2) is None
        assert await storage.fetch(account_id, 2, after_seq=0, limit=10) == []
        assert await storage.revocations(account_id) == [b"r2"]
        with pytest.raises(LastDevice):
            await storage.remove_device(account_id, 1, b"r1")
        with pytest.raises(DeviceRevoked):
            await storage.add_device(
                DeviceRecord(account_id, 2, b"c", 0), PreKeyUpload(), max_devices=5
            )
        # a send must now name device 1 only
        with pytest.raises(MismatchedDevices):
            await _send(storage, [_env(account_id, 1), _env(account_id, 2)])
        await _send(storage, [_env(account_id, 1)])
        assert len(await storage.fetch(account_id, 1, after_seq=0, limit=10)) == 2

    _run(backend, body)


def test_one_time_prekeys_go_out_once_even_to_concurrent_fetchers(backend: MakeStorage) -> None:
    prekeys = PreKeyUpload(
        signed_prekey=(1, b"spk"),
        kem_last_resort=(1, b"kem-lr"),
        one_time=[(i, b"otk-%d" % i) for i in range(30)],
        kem_one_time=[(i, b"kem-%d" % i) for i in range(20)],
    )

    async def body(storage: Storage) -> None:
        account_id = await _account(storage, prekeys=prekeys)
        spare = await storage.take_bundle(account_id, 1, one_time=False)  # takes nothing
        assert spare is not None and (spare.one_time, spare.kem) == (None, b"kem-lr")
        stock = await storage.prekey_stock(account_id, 1)
        assert (stock.signed_prekey, stock.kem_last_resort, stock.one_time, stock.kem_one_time) == (
            True,
            True,
            30,
            20,
        )
        bundles = await asyncio.gather(*(storage.take_bundle(account_id, 1) for _ in range(40)))
        one_time = [b.one_time for b in bundles if b is not None and b.one_time is not None]
        kems = [b.kem for b in bundles if b is not None]
        assert len(one_time) == len(set(one_time)) <= 30
        kem_one_time = [k for k in kems if k != b"kem-lr"]
        assert len(kem_one_time) == len(set(kem_one_time)) <= 20
        # once the one-time stock is gone, the last-resort ML-KEM key is handed out
        while (await storage.prekey_stock(account_id, 1)).kem_one_time:
            await storage.take_bundle(account_id, 1)
        last = await storage.take_bundle(account_id, 1)
        assert last is not None and last.kem == b"kem-lr" and last.certificate == b"cert-1"
        assert await storage.take_bundle(account_id, 9) is None
        with pytest.raises(PreKeyStockFull):
            await storage.store_prekeys(
                account_id,
                1,
                PreKeyUpload(
                    signed_prekey=(2, b"spk2"), one_time=[(100 + i, b"x") for i in range(5)]
                ),
                max_stock=4,
            )
        after = await storage.take_bundle(account_id, 1)
        assert after is not None and after.signed_prekey == b"spk" and after.one_time is None

    _run(backend, body)


def test_sends_are_all_or_none_and_each_queue_keeps_its_order(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=2)
        b = await _account(storage)
        with pytest.raises(UnknownAccount):
            await _send(storage, [_env(os.urandom(16))])
        with pytest.raises(MismatchedDevices) as refused:
            await _send(storage, [_env(a, 1), _env(b, 1), _env(b, 2)])
        assert refused.value.accounts == {a: ([2], []), b: ([], [2])}
        await _send(storage, [_env(a, 1), _env(b, 1)], exempt={a: 2})  # a's own device 2
        sends = [[_env(a, 1), _env(a, 2), _env(b, 1)] for _ in range(60)]
        await asyncio.gather(*(_send(storage, s) for s in sends))
        for account_id, device_id, expected in ((a, 1, 61), (a, 2, 60), (b, 1, 61)):
            queued = await storage.fetch(account_id, device_id, after_seq=0, limit=1000)
            assert len(queued) == expected
            seqs = [m.seq for m in queued]
            assert seqs == sorted(set(seqs))
            assert [m.received_at for m in queued] == [5] * expected
            page = await storage.fetch(account_id, device_id, after_seq=seqs[9], limit=5)
            assert page == queued[10:15]
        with pytest.raises(QueueFull):  # refused whole, though b's queue has room
            await _send(storage, [_env(a, 1), _env(a, 2), _env(b, 1)], depth=61)
        assert len(await storage.fetch(b, 1, after_seq=0, limit=1000)) == 61

    _run(backend, body)


def test_sends_queued_at_once_commit_in_the_order_queued(backend: MakeStorage) -> None:
    """enqueue_nowait (and its shared form) queue the write before returning: a caller
    pipelining them without a task each gets them stored in that order, and each future
    fails alone with the error enqueue would raise."""

    async def body(storage: Storage) -> None:
        a = await _account(storage)
        envelopes = [_env(a) for _ in range(20)]
        shared = SharedEnvelope(os.urandom(16), a, 1)
        futures = [
            storage.enqueue_nowait([e], exempt={}, received_at=5, expires_at=1000, max_depth=15)
            for e in envelopes[:10]
        ]
        futures.append(
            storage.enqueue_shared_nowait(
                b"shared", [shared], received_at=5, expires_at=1000, max_depth=15
            )
        )
        futures += [
            storage.enqueue_nowait([e], exempt={}, received_at=5, expires_at=1000, max_depth=15)
            for e in envelopes[10:]
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert results[:15] == [1] * 15  # each stored its one envelope
        assert all(isinstance(r, QueueFull) for r in results[15:])
        queued = await storage.fetch(a, 1, after_seq=0, limit=100)
        assert [m.message_id for m in queued] == [
            *(e.message_id for e in envelopes[:10]),
            shared.message_id,
            *(e.message_id for e in envelopes[10:14]),
        ]

    _run(backend, body)


def test_acks_delete_only_the_devices_own_messages_and_free_room(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=2)
        for _ in range(3):
            await _send(storage, [_env(a, 1), _env(a, 2)], depth=3)
        with pytest.raises(QueueFull):
            await _send(storage, [_env(a, 1), _env(a, 2)], depth=3)
        mine = await storage.fetch(a, 1, after_seq=0, limit=10)
        theirs = await storage.fetch(a, 2, after_seq=0, limit=10)
        assert not await storage.ack(a, 1, theirs[0].message_id)
        assert await storage.ack(a, 1, mine[0].message_id)
        assert not await storage.ack(a, 1, mine[0].message_id)
        assert await storage.ack_all(a, 2, [theirs[0].message_id, os.urandom(16)]) == 1
        await _send(storage, [_env(a, 1), _env(a, 2)], depth=3)  # room again
        with pytest.raises(QueueFull):
            await _send(storage, [_env(a, 1), _env(a, 2)], depth=3)
        assert await storage.fetch(a, 2, after_seq=0, limit=10) == [
            *theirs[1:],
            *(await storage.fetch(a, 2, after_seq=theirs[-1].seq, limit=10)),
        ]

    _run(backend, body)


def test_a_newer_connection_fences_off_acks_of_the_older(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        a = await _account(storage)
        await _send(storage, [_env(a)])
        await _send(storage, [_env(a)])
        first, second = await storage.fetch(a, 1, after_seq=0, limit=10)
        old = await storage.claim_device(a, 1)
        new = await storage.claim_device(a, 1)
        assert new > old
        with pytest.raises(StaleEpoch):
            await storage.ack_all(a, 1, [first.message_id], epoch=old)
        assert len(await storage.fetch(a, 1, after_seq=0, limit=10)) == 2
        assert await storage.ack_all(a, 1, [first.message_id], epoch=new) == 1
        assert await storage.ack_all(a, 1, [second.message_id]) == 1

    _run(backend, body)


def test_queue_positions_bound_every_queued_message_and_carry_the_epoch(
    backend: MakeStorage,
) -> None:
    """What the poll of several processes relies on: one read for many devices, in which
    each device's position is at least every queued message's sequence number (so one past
    the last pushed says there is more to push, and none past it says there is not), its
    epoch the latest claimed, and a device with no queue (removed, or never one) absent."""

    async def body(storage: Storage) -> None:
        a = await _account(storage, devices=2)
        b = await _account(storage)
        await _send(storage, [_env(a), _env(a), _env(b)], exempt={a: 2})  # from device 2
        epoch = await storage.claim_device(a, 1)
        unknown = (os.urandom(16), 1)
        positions = await storage.queue_positions([(a, 1), (a, 2), (b, 1), unknown])
        assert set(positions) == {(a, 1), (a, 2), (b, 1)}
        queued = await storage.fetch(a, 1, after_seq=0, limit=10)
        assert positions[(a, 1)].seq == queued[-1].seq  # exactly the last, none acked
        assert positions[(a, 1)].epoch == epoch
        assert positions[(b, 1)].epoch == 0
        await _send(storage, [_env(a)], exempt={a: 2})
        later = await storage.queue_positions([(a, 1)])
        assert later[(a, 1)].seq > positions[(a, 1)].seq  # a new message: past the old one
        newest = await storage.fetch(a, 1, after_seq=positions[(a, 1)].seq, limit=10)
        assert [m.seq for m in newest] == [later[(a, 1)].seq]
        await storage.remove_device(a, 2, b"revocation")
        assert await storage.queue_positions([(a, 2)]) == {}

    _run(backend, body)


def test_nonces_attachments_and_purge(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        nonce = os.urandom(16)
        assert await storage.use_nonce(nonce, expires_at=10)
        assert not await storage.use_nonce(nonce, expires_at=10)
        record = AttachmentRecord(os.urandom(16), 1234, 1, 10)
        await storage.add_attachment(record)
        keep = AttachmentRecord(os.urandom(16), 1, 1, 100)
        await storage.add_attachment(keep)
        assert await storage.attachment(record.attachment_id) == record
        a = await _account(storage)
        await _send(storage, [_env(a)], expires_at=10)
        await _send(storage, [_env(a)], expires_at=100)
        await _send(storage, [_env(a)], depth=3, expires_at=10)
        purged = await storage.purge(now=10)
        assert (purged.messages, purged.nonces, list(purged.attachments)) == (
            2,
            1,
            [record.attachment_id],
        )
        assert await storage.attachment(record.attachment_id) is None
        assert await storage.attachment(keep.attachment_id) == keep
        assert await storage.use_nonce(nonce, expires_at=20)  # forgotten once expired
        assert len(await storage.fetch(a, 1, after_seq=0, limit=10)) == 1
        for _ in range(2):  # the purged messages no longer count against the queue
            await _send(storage, [_env(a)], depth=3)

    _run(backend, body)


def test_this_process_leads_when_alone(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        for _ in range(50):
            if storage.leader():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("a lone process never became the leader")

    _run(backend, body)


# ---------------------------------------------------------------------- quotas (issue 14.2)


async def _sizes(storage: Storage) -> tuple[int, int]:
    """(shared bodies kept, bytes of message bodies stored) as the database has them."""
    shared_sql = "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM shared_bodies"
    own_sql = "SELECT COALESCE(SUM(length(body)), 0) FROM queue"
    if isinstance(storage, SqliteStorage):
        conn = sqlite3.connect(storage._path)
        try:
            shared, shared_bytes = conn.execute(shared_sql).fetchone()
            (own_bytes,) = conn.execute(own_sql).fetchone()
        finally:
            conn.close()
        return shared, shared_bytes + own_bytes
    pool = storage._pool  # type: ignore[attr-defined]
    shared, shared_bytes = await pool.fetchrow(shared_sql)
    own_bytes = await pool.fetchval(own_sql)
    return shared, shared_bytes + own_bytes


def test_multi_send_stores_one_body(backend: MakeStorage) -> None:
    """A 60 KB body for 100 devices is stored once, fetched whole by each, and deleted with
    the last message that uses it (ack, purge or device removal)."""

    async def body(storage: Storage) -> None:
        accounts = [await _account(storage, devices=5) for _ in range(20)]
        shared_body = os.urandom(60_000)
        prefix = b"\x01\x22" + os.urandom(48)
        envelopes = [
            SharedEnvelope(os.urandom(16), a, d, prefix if d == 1 else b"")
            for a in accounts
            for d in range(1, 6)
        ]
        await storage.enqueue_shared(
            shared_body, envelopes, received_at=1, expires_at=1000, max_depth=50
        )
        kept, stored = await _sizes(storage)
        assert kept == 1 and stored < 2 * len(shared_body)  # not 100 copies
        for env in envelopes:
            (message,) = await storage.fetch(env.account_id, env.device_id, after_seq=0, limit=9)
            assert message.message_id == env.message_id
            assert message.body == env.prefix + shared_body
        if isinstance(storage, SqliteStorage):
            storage._tails.clear()  # and read back from the database the same
        (message,) = await storage.fetch(accounts[0], 1, after_seq=0, limit=9)
        assert message.body == prefix + shared_body
        # all devices but one ack, or are removed: the body stays for the last one
        last = envelopes[-1]
        for env in envelopes[:-1]:
            if env.device_id == 5:
                await storage.remove_device(env.account_id, 5, b"revocation")
            else:
                assert await storage.ack(env.account_id, env.device_id, env.message_id)
        assert (await _sizes(storage))[0] == 1
        assert await storage.ack(last.account_id, last.device_id, last.message_id)
        assert await _sizes(storage) == (0, 0)
        # expiry releases it too
        again = [SharedEnvelope(os.urandom(16), accounts[0], d) for d in range(1, 5)]
        await storage.enqueue_shared(b"x" * 100, again, received_at=1, expires_at=5, max_depth=50)
        assert (await _sizes(storage))[0] == 1
        await storage.purge(10)
        assert await _sizes(storage) == (0, 0)

    _run(backend, body)


def test_a_refused_multi_send_stores_nothing(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        account_id = await _account(storage, devices=2)
        with pytest.raises(MismatchedDevices):
            await storage.enqueue_shared(
                b"body",
                [SharedEnvelope(os.urandom(16), account_id, 1)],
                received_at=1,
                expires_at=9,
                max_depth=50,
            )
        await _send(storage, [_env(account_id, 1), _env(account_id, 2)], depth=1)
        with pytest.raises(QueueFull):  # device 1 is full: device 2 gets nothing either
            await storage.enqueue_shared(
                b"body",
                [SharedEnvelope(os.urandom(16), account_id, d) for d in (1, 2)],
                received_at=1,
                expires_at=9,
                max_depth=1,
            )
        assert await _sizes(storage) == (0, 64)

    _run(backend, body)


def test_queue_bytes_quota(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        account_id = await _account(storage)

        def send(size: int) -> Awaitable[None]:
            env = Envelope(os.urandom(16), account_id, 1, b"b" * size)
            return storage.enqueue(
                [env], exempt={}, received_at=1, expires_at=9, max_depth=50, max_bytes=1000
            )

        await send(600)
        await send(400)
        with pytest.raises(QueueFull):
            await send(1)
        first = (await storage.fetch(account_id, 1, after_seq=0, limit=1))[0]
        assert await storage.ack(account_id, 1, first.message_id)
        await send(600)  # counted anew: room again
        with pytest.raises(QueueFull):
            await storage.enqueue_shared(
                b"s" * 10,
                [SharedEnvelope(os.urandom(16), account_id, 1)],
                received_at=1,
                expires_at=9,
                max_depth=50,
                max_bytes=1000,
            )

    _run(backend, body)


def test_attachment_bytes_quota_per_account(backend: MakeStorage) -> None:
    async def body(storage: Storage) -> None:
        alice, bob = os.urandom(16), os.urandom(16)

        def add(owner: bytes, size: int, now: int = 10, ttl: int = 100) -> Awaitable[None]:
            record = AttachmentRecord(os.urandom(32), size, now, now + ttl, owner=owner)
            return storage.add_attachment(record, max_owner_bytes=1000)

        await add(alice, 700)
        await add(bob, 700)  # each account its own
        with pytest.raises(AttachmentQuotaFull):
            await add(alice, 301)
        await add(alice, 300)
        await add(alice, 900, now=200)  # the first ones expired: they no longer count

    _run(backend, body)
