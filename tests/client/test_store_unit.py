"""The store's unit of work and repositories: a unit commits all or nothing, a write outside
a unit is refused, a repository method that raises has changed nothing, files go only
after a commit; and the contacts and messages repositories' operations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlcipher3.dbapi2 as sqlcipher  # type: ignore[import-untyped]

from sealpost.client import saved_files
from sealpost.client.errors import ClientError
from sealpost.client.inbox import must_retry
from sealpost.client.store import TEST_PARAMS, DatabaseFailed, Store, StoreError
from sealpost.client.store.messages import StoredMessage
from sealpost.protocol import AccountIdentity, DeviceKeys, SessionRecord
from support import established_pair

PASSCODE = "unit of work"
ALICE = bytes(range(16))
BOB = bytes(range(16, 32))
KEY_A = b"\x01" * 32
KEY_B = b"\x02" * 32
NOW = 1_800_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.create(tmp_path / "p", PASSCODE, params=TEST_PARAMS) as store:
        yield store


def certificate(device_id: int = 1) -> object:
    account = AccountIdentity.generate(os.urandom)
    return DeviceKeys.generate(account, device_id, now=NOW, rng=os.urandom).certificate


def test_store_errors_are_client_errors() -> None:
    assert issubclass(StoreError, ClientError)


def test_a_unit_commits_everything_it_wrote(store: Store) -> None:
    with store.unit() as repos:
        repos.meta.set("greeting", b"hello")
        assert repos.contacts.add(ALICE, "alice", KEY_A, NOW)
        repos.messages.set_timer(ALICE, 60)
    repos = store.repos()
    assert repos.meta.get("greeting") == b"hello"
    assert [c.username for c in repos.contacts.all()] == ["alice"]
    assert repos.messages.timers() == {ALICE: 60}


def test_a_unit_that_raises_has_changed_nothing(store: Store) -> None:
    with store.unit() as repos:
        repos.meta.set("greeting", b"before")
    with pytest.raises(RuntimeError), store.unit() as repos:
        repos.meta.set("greeting", b"after")
        repos.contacts.add(ALICE, "alice", KEY_A, NOW)
        repos.messages.set_timer(ALICE, 60)
        raise RuntimeError("boom")
    repos = store.repos()
    assert repos.meta.get("greeting") == b"before"
    assert repos.contacts.all() == []
    assert repos.messages.timers() == {}


def test_a_write_outside_a_unit_is_refused(store: Store) -> None:
    repos = store.repos()
    with pytest.raises(StoreError, match="outside a unit"):
        repos.meta.set("greeting", b"hello")
    with pytest.raises(StoreError, match="outside a unit"):
        repos.contacts.replace_devices(ALICE, {})
    assert repos.meta.get("greeting") is None


def test_units_do_not_nest_and_need_an_open_store(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "p", PASSCODE, params=TEST_PARAMS)
    with store.unit(), pytest.raises(StoreError), store.unit():
        pass
    store.close()
    with pytest.raises(StoreError), store.unit():
        pass
    with pytest.raises(StoreError):
        store.repos()


def test_a_repository_method_that_raises_has_changed_nothing(store: Store) -> None:
    """``replace_devices`` deletes then inserts; if the insert fails, the delete is undone
    even though the unit goes on and commits."""
    cert = certificate()

    class Broken:
        def encode(self) -> bytes:
            raise ValueError("not a certificate")

    with store.unit() as repos:
        repos.contacts.add(ALICE, "alice", KEY_A, NOW)
        repos.contacts.replace_devices(ALICE, {1: cert})  # type: ignore[dict-item]
    with store.unit() as repos:
        with pytest.raises(ValueError):
            repos.contacts.replace_devices(ALICE, {2: Broken()})  # type: ignore[dict-item]
        repos.meta.set("after", b"yes")
    (alice,) = store.repos().contacts.all()
    assert sorted(alice.devices) == [1]
    assert store.repos().meta.get("after") == b"yes"


def saved(tmp_path: Path, name: str) -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(b"attachment")
    return path, saved_files.record(path)


def add_message(store: Store, uid: bytes, peer: bytes, path: str | None = None) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO messages (message_uuid, peer, outgoing, body, sent_at, received_at, "
            "status, author, attachment_path) VALUES (?, ?, 0, 'hi', 1, 2, 'received', ?, ?)",
            (uid, peer, peer, path),
        )


def test_files_go_only_once_their_rows_are_committed_gone(store: Store, tmp_path: Path) -> None:
    kept, kept_record = saved(tmp_path, "kept.bin")
    gone, gone_record = saved(tmp_path, "gone.bin")
    add_message(store, b"k" * 16, ALICE, kept_record)
    add_message(store, b"g" * 16, ALICE, gone_record)
    with pytest.raises(RuntimeError), store.unit() as repos:
        repos.messages.delete([b"k" * 16], ALICE)
        raise RuntimeError("rolled back")
    assert kept.exists()
    with store.unit() as repos:
        repos.messages.delete([b"g" * 16], ALICE)
        assert gone.exists()  # not before the commit
    assert not gone.exists() and kept.exists()
    assert [m.message_id for m in store.repos().messages.history(ALICE, NOW, 10)] == [b"k" * 16]


def test_history_is_oldest_first_and_leaves_out_the_expired(store: Store) -> None:
    with store.transaction() as conn:
        for i, expires in enumerate([None, 10, 1000, None]):
            conn.execute(
                "INSERT INTO messages (message_uuid, peer, outgoing, body, sent_at, "
                "received_at, status, expires_at) VALUES (?, ?, 1, ?, ?, ?, 'sent', ?)",
                (bytes([i]) * 16, ALICE, f"m{i}", i, i, expires),
            )
    repos = store.repos()
    history = repos.messages.history(ALICE, 100, 10)
    assert [m.body for m in history] == ["m0", "m2", "m3"]
    assert history[0] == StoredMessage(
        b"\x00" * 16, True, "m0", 0, 0, "sent", None, None, None, None
    )
    assert [m.body for m in repos.messages.history(ALICE, 100, 2)] == ["m2", "m3"]
    assert repos.messages.any_expired(100) and not repos.messages.any_expired(5)
    with store.unit() as repos:
        assert repos.messages.expire(100) == 1
    assert not store.repos().messages.any_expired(100)


def test_a_deletion_before_its_message_leaves_a_tombstone(store: Store) -> None:
    add_message(store, b"a" * 16, ALICE)
    with store.unit() as repos:
        repos.messages.delete_authored(b"a" * 16, ALICE, ALICE, NOW)  # stored: deleted
        repos.messages.delete_authored(b"b" * 16, ALICE, ALICE, NOW)  # not yet: tombstone
        repos.messages.delete_authored(b"a" * 16, BOB, BOB, NOW)  # someone else's: nothing
    repos = store.repos()
    assert repos.messages.history(ALICE, NOW, 10) == []
    assert repos.messages.tombstoned([b"a" * 16, b"b" * 16, b"c" * 16]) == {
        (b"b" * 16, ALICE),
        (b"a" * 16, BOB),
    }
    assert repos.messages.tombstoned([]) == set()


def test_a_message_of_another_author_is_not_deleted_for_everyone(store: Store) -> None:
    add_message(store, b"a" * 16, ALICE)
    with store.unit() as repos:
        repos.messages.delete_authored(b"a" * 16, ALICE, BOB, NOW)
    assert len(store.repos().messages.history(ALICE, NOW, 10)) == 1
    assert store.repos().messages.is_outgoing(b"a" * 16, ALICE) is False
    assert store.repos().messages.is_outgoing(b"z" * 16, ALICE) is None


def test_timers_set_and_unset(store: Store) -> None:
    with store.unit() as repos:
        repos.messages.set_timer(ALICE, 60)
        repos.messages.set_timer(BOB, 30)
        repos.messages.set_timer(BOB, 0)
    assert store.repos().messages.timers() == {ALICE: 60}


def test_a_key_change_keeps_the_old_key_and_drops_the_sessions(store: Store) -> None:
    with store.unit() as repos:
        repos.contacts.add(ALICE, "alice", KEY_A, NOW, verified=True, delivery_token=b"t")
        repos.contacts.add(BOB, "bob", KEY_B, NOW)
    with store.transaction() as conn:
        conn.execute("INSERT INTO sessions VALUES (?, 1, ?, 0)", (ALICE, b"state"))
        conn.execute("INSERT INTO sessions VALUES (?, 1, ?, 0)", (BOB, b"state"))
    with store.unit() as repos:
        repos.contacts.change_key("alice", KEY_B, KEY_A, ALICE)
        repos.contacts.acknowledge_key_change("alice")  # verified: the warning stays
    contacts = {c.username: c for c in store.repos().contacts.all()}
    alice = contacts["alice"]
    assert (alice.account_key, alice.verified, alice.key_changed) == (KEY_B, True, True)
    assert alice.delivery_token == b"t"
    sessions = store.read().execute("SELECT account_id FROM sessions").fetchall()
    assert [bytes(a) for (a,) in sessions] == [BOB]
    with store.unit() as repos:
        repos.contacts.verify(ALICE)
    (alice,) = [c for c in store.repos().contacts.all() if c.username == "alice"]
    assert (alice.verified, alice.key_changed) == (True, False)


def test_a_repinned_contact_takes_its_conversation_along(store: Store) -> None:
    with store.unit() as repos:
        repos.contacts.add(ALICE, "alice", KEY_A, NOW)
        repos.contacts.replace_devices(ALICE, {1: certificate()})  # type: ignore[dict-item]
        assert not repos.contacts.add(BOB, "alice", KEY_B, NOW)  # the name is taken
    add_message(store, b"a" * 16, ALICE)
    with store.unit() as repos:
        repos.contacts.repin(ALICE, BOB)
    (contact,) = store.repos().contacts.all()
    assert (contact.account_id, contact.devices) == (BOB, {})
    assert len(store.repos().messages.history(BOB, NOW, 10)) == 1
    assert store.repos().messages.history(ALICE, NOW, 10) == []


def test_inside_a_transaction_the_repositories_write_and_files_go_after_its_commit(
    store: Store, tmp_path: Path
) -> None:
    """Code that still holds the raw connection of ``store.transaction()`` may call the
    repositories in the same transaction; their after-commit actions run at its commit."""
    gone, record = saved(tmp_path, "gone.bin")
    add_message(store, b"g" * 16, ALICE, record)
    with store.transaction() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('raw', x'01')")
        store.repos().messages.delete([b"g" * 16], ALICE)
        assert gone.exists()
    assert not gone.exists()
    assert store.repos().meta.get("raw") == b"\x01"


def test_a_revocation_is_kept_once_and_drops_the_sessions_with_that_device(
    store: Store,
) -> None:
    with store.transaction() as conn:
        for device_id in (1, 2):
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?, 0)", (ALICE, device_id, b"s"))
    with store.unit() as repos:
        repos.devices.record_revocation(ALICE, 2, b"signed notice")
        repos.devices.record_revocation(ALICE, 2, None)  # the first one is kept
    assert store.repos().devices.revoked(ALICE) == {2}
    assert store.repos().devices.revoked(BOB) == set()
    rows = store.read().execute("SELECT device_id FROM sessions").fetchall()
    assert [d for (d,) in rows] == [1]
    (revocation,) = store.read().execute("SELECT revocation FROM revoked_devices").fetchone()
    assert bytes(revocation) == b"signed notice"


def test_session_records_are_saved_together_and_dropped_but_for_the_kept_devices(
    store: Store,
) -> None:
    a, b, _ = established_pair()
    record = SessionRecord([a])
    with store.unit() as repos:
        repos.sessions.save_all(
            [((ALICE, 1), record), ((ALICE, 2), SessionRecord([b])), ((ALICE, 3), SessionRecord())],
            NOW,
        )
    sessions = store.repos().sessions
    assert sessions.get((ALICE, 1)).to_bytes() == record.to_bytes()
    assert len(sessions.get((ALICE, 2))) == 1
    assert len(sessions.get((ALICE, 3))) == 0  # an empty record is not stored
    with store.unit() as repos:
        repos.sessions.save((BOB, 1), record, NOW)
        repos.sessions.drop_except(ALICE, [2])
    assert [len(sessions.get((ALICE, d))) for d in (1, 2)] == [0, 1]
    assert len(sessions.get((BOB, 1))) == 1  # another account's records stay
    with store.unit() as repos:
        repos.sessions.drop_except(ALICE, [])  # none kept: all go
    assert len(sessions.get((ALICE, 2))) == 0


def test_a_locked_database_is_a_store_error_and_changes_nothing(tmp_path: Path) -> None:
    """SQLite's OperationalError is translated where the store meets it: a unit that cannot
    begin (another connection holds the write lock) raises DatabaseFailed, a ClientError
    that the receive loop retries, and nothing was written."""
    keys: list[bytes] = []

    def rng(n: int) -> bytes:
        keys.append(os.urandom(n))
        return keys[-1]

    store = Store.create(tmp_path / "p", PASSCODE, params=TEST_PARAMS, rng=rng)
    other = sqlcipher.connect(str(tmp_path / "p" / "profile.db"), isolation_level=None)
    try:
        other.execute(f"PRAGMA key = \"x'{keys[0].hex()}'\"")  # the database key: rng's first
        other.execute("BEGIN IMMEDIATE")
        store.read().execute("PRAGMA busy_timeout = 20")
        locked = pytest.raises(DatabaseFailed, match="in use by another")
        with locked as info, store.unit() as repos:
            repos.meta.set("greeting", b"hello")
        assert isinstance(info.value, ClientError) and must_retry(info.value)
        other.execute("ROLLBACK")
        assert store.repos().meta.get("greeting") is None
        with store.unit() as repos:  # the store goes on
            repos.meta.set("greeting", b"hello")
        assert store.repos().meta.get("greeting") == b"hello"
    finally:
        other.close()
        store.close()
