"""The passcode-wrapped SQLCipher store: round trips, wrong passcodes, wipe, passcode
change, tampering, schema migrations, and that the files hold no plaintext and no key in
the clear."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlcipher3.dbapi2 as sqlcipher  # type: ignore[import-untyped]

import sealpost.client.store.keyfile as keyfile_module
import sealpost.client.store.migrations as migrations_module
from readonly import read_only
from sealpost.client.store import (
    DEFAULT_PARAMS,
    SCHEMA_VERSION,
    TEST_PARAMS,
    CorruptProfile,
    KdfParams,
    NoProfile,
    ProfileExists,
    ProfileWiped,
    ReadOnlyProfile,
    Store,
    StoreError,
    TooManyAttempts,
    UnsupportedSchema,
    WeakParameters,
    WrongPasscode,
    delay_after,
)

MARKER = "the-eagle-lands-at-midnight"
PASSCODE = "correct horse"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordingRng:
    """The system RNG, remembering what it handed out (the first 32 bytes are the db key)."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        data = os.urandom(n)
        self.out.append(data)
        return data


def make(path: Path, **kw: Any) -> Store:
    return Store.create(path, PASSCODE, params=TEST_PARAMS, **kw)


def keyfile(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((path / "keyfile.json").read_text())
    return doc


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


# -- round trips


def test_round_trip_and_rollback(tmp_path: Path) -> None:
    with make(tmp_path / "p") as store:
        with store.transaction() as conn:
            store.set_meta(conn, "greeting", b"hello")
        with pytest.raises(RuntimeError), store.transaction() as conn:
            store.set_meta(conn, "lost", b"never")
            raise RuntimeError("boom")
        # the connection is usable again after a rollback
        with store.transaction() as conn:
            store.set_meta(conn, "after", b"ok")
    with Store.open(tmp_path / "p", PASSCODE) as store:
        assert store.get_meta("greeting") == b"hello"
        assert store.get_meta("lost") is None
        assert store.get_meta("after") == b"ok"
        assert store.path == tmp_path / "p"
        assert store.kdf_params == TEST_PARAMS


def test_profile_layout_and_modes(tmp_path: Path) -> None:
    assert not Store.exists(tmp_path / "p")
    make(tmp_path / "p").close()
    assert Store.exists(tmp_path / "p")
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "p" / "keyfile.json").stat().st_mode & 0o777 == 0o600
    doc = keyfile(tmp_path / "p")
    assert doc["version"] == 1 and doc["failures"] == 0 and doc["wipe_after"] is None
    assert doc["kdf"] | {"salt": None} == {"alg": "argon2id", "t": 1, "m_kib": 8, "p": 1} | {
        "salt": None
    }
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 16
    assert len(base64.b64decode(doc["wrapped"])) == 12 + 32 + 16
    assert not (tmp_path / "p" / "keyfile.json.tmp").exists()


def test_create_refuses_an_existing_profile_and_weak_parameters(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    with pytest.raises(ProfileExists):
        make(tmp_path / "p")
    with pytest.raises(WeakParameters):
        Store.create(tmp_path / "q", "pw", params=KdfParams(t=1, m_kib=1024, p=1))
    with pytest.raises(WeakParameters):
        Store.create(tmp_path / "q", "pw", params=KdfParams(t=3, m_kib=65536, p=1000))
    with pytest.raises(ValueError):  # the empty passcode error is a ValueError too
        Store.create(tmp_path / "q", "", params=TEST_PARAMS)
    with pytest.raises(WeakParameters):
        Store.create(tmp_path / "q", "pw", params=TEST_PARAMS, wipe_after=0)
    assert not (tmp_path / "q").exists()
    with pytest.raises(NoProfile):
        Store.open(tmp_path / "nothing", "pw")


def test_default_parameters_are_rfc9106_second_set(tmp_path: Path) -> None:
    assert (DEFAULT_PARAMS.t, DEFAULT_PARAMS.m_kib, DEFAULT_PARAMS.p) == (3, 65536, 4)
    assert KdfParams() == DEFAULT_PARAMS
    Store.create(tmp_path / "p", "pw-default").close()
    doc = keyfile(tmp_path / "p")
    assert doc["kdf"]["t"] == 3 and doc["kdf"]["m_kib"] == 65536 and doc["kdf"]["p"] == 4
    with Store.open(tmp_path / "p", "pw-default") as store:
        assert store.kdf_params == DEFAULT_PARAMS


def test_schema(tmp_path: Path) -> None:
    with make(tmp_path / "p") as store:
        conn = store.read()
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {
            "meta",
            "prekeys",
            "contacts",
            "contact_devices",
            "sessions",
            "messages",
            "processed",
        } <= names
        assert "events" not in names  # dropped: nothing used it
        columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
        assert "expires_at" in columns and "sender_device" not in columns
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlcipher.IntegrityError), store.transaction() as c:
            c.execute("INSERT INTO contact_devices VALUES (?, 1, ?)", (b"nobody", b"cert"))


def test_transactions_do_not_nest_and_need_an_open_store(tmp_path: Path) -> None:
    store = make(tmp_path / "p")
    with store.transaction(), pytest.raises(StoreError), store.transaction():
        pass
    with store.transaction() as conn:  # the refused inner one did not break the outer
        store.set_meta(conn, "k", b"v")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError), store.transaction():
        pass
    with pytest.raises(StoreError):
        store.read()


# -- wrong passcodes


def test_wrong_passcodes_are_counted_and_delayed(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    clock = Clock()
    for expected in range(1, 5):
        with pytest.raises(WrongPasscode) as info:
            Store.open(tmp_path / "p", "wrong", clock=clock)
        assert info.value.failures == expected and info.value.retry_after == 0
        assert keyfile(tmp_path / "p")["failures"] == expected
    with pytest.raises(WrongPasscode) as info:
        Store.open(tmp_path / "p", "wrong", clock=clock)
    assert info.value.retry_after == 30
    assert keyfile(tmp_path / "p")["not_before"] == clock.now + 30
    # even the right passcode must wait, and waiting tries are not counted
    clock.now += 29
    with pytest.raises(TooManyAttempts) as waiting:
        Store.open(tmp_path / "p", PASSCODE, clock=clock)
    assert waiting.value.retry_after == pytest.approx(1)
    assert keyfile(tmp_path / "p")["failures"] == 5
    clock.now += 2
    with pytest.raises(WrongPasscode) as info:
        Store.open(tmp_path / "p", "wrong", clock=clock)
    assert info.value.failures == 6 and info.value.retry_after == 60
    clock.now += 61
    Store.open(tmp_path / "p", PASSCODE, clock=clock).close()
    assert keyfile(tmp_path / "p")["failures"] == 0
    assert keyfile(tmp_path / "p")["not_before"] == 0
    assert [delay_after(n) for n in (0, 4, 5, 6, 7, 8, 9, 50)] == [
        0,
        0,
        30,
        60,
        300,
        900,
        3600,
        3600,
    ]


def test_a_try_is_counted_before_argon2_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killing the process during the derivation must not give a free guess."""
    make(tmp_path / "p").close()

    def killed(*_: object) -> bytes:
        assert keyfile(tmp_path / "p")["failures"] == 1  # already on disk
        raise KeyboardInterrupt

    monkeypatch.setattr(keyfile_module, "derive_kek", killed)
    with pytest.raises(KeyboardInterrupt):
        Store.open(tmp_path / "p", "a guess")
    monkeypatch.undo()
    assert keyfile(tmp_path / "p")["failures"] == 1
    Store.open(tmp_path / "p", PASSCODE).close()
    assert keyfile(tmp_path / "p")["failures"] == 0


def test_a_clock_set_back_does_not_lock_the_owner_out(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    clock = Clock()
    for _ in range(5):
        with pytest.raises(WrongPasscode):
            Store.open(tmp_path / "p", "wrong", clock=clock)
    clock.now -= 365 * 24 * 3600  # a year back: still only the scheduled 30 s
    with pytest.raises(TooManyAttempts) as info:
        Store.open(tmp_path / "p", PASSCODE, clock=clock)
    assert info.value.retry_after == 30
    clock.now += 30
    Store.open(tmp_path / "p", PASSCODE, clock=clock).close()


# -- wipe


def test_wipe_after_destroys_the_key(tmp_path: Path) -> None:
    rng = RecordingRng()
    with make(tmp_path / "p", wipe_after=3, rng=rng) as store, store.transaction() as conn:
        store.set_meta(conn, "x", b"y")
    db_key = rng.out[0]
    wrapped = keyfile(tmp_path / "p")["wrapped"]
    for n in (1, 2):
        with pytest.raises(WrongPasscode) as info:
            Store.open(tmp_path / "p", "nope")
        assert info.value.failures == n
    with pytest.raises(ProfileWiped):
        Store.open(tmp_path / "p", "nope")
    doc = keyfile(tmp_path / "p")
    assert doc["wiped"] is True and "wrapped" not in doc
    remaining = all_bytes(tmp_path / "p")
    assert wrapped.encode() not in remaining and db_key not in remaining
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["keyfile.json", "lock"]
    for passcode in (PASSCODE, "nope"):
        with pytest.raises(ProfileWiped):
            Store.open(tmp_path / "p", passcode)
    with pytest.raises(ProfileExists):
        make(tmp_path / "p")


def test_a_kill_during_the_wipe_still_leaves_the_key_destroyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(tmp_path / "p", wipe_after=1).close()
    wrapped = keyfile(tmp_path / "p")["wrapped"]
    destroy = keyfile_module.KeyFile.destroy_wrapped

    def destroy_then_die(self: Any, text: str) -> None:
        destroy(self, text)
        raise KeyboardInterrupt

    monkeypatch.setattr(keyfile_module.KeyFile, "destroy_wrapped", destroy_then_die)
    with pytest.raises(KeyboardInterrupt):
        Store.open(tmp_path / "p", "nope")
    monkeypatch.undo()
    doc = keyfile(tmp_path / "p")  # still valid JSON
    assert doc["wrapped"] != wrapped and len(doc["wrapped"]) == len(wrapped)
    with pytest.raises(ProfileWiped):  # the right passcode no longer opens it
        Store.open(tmp_path / "p", PASSCODE)


def test_set_wipe_after(tmp_path: Path) -> None:
    with make(tmp_path / "p") as store:
        with pytest.raises(WeakParameters):
            store.set_wipe_after(0)
        store.set_wipe_after(2)
    assert keyfile(tmp_path / "p")["wipe_after"] == 2
    with pytest.raises(WrongPasscode):
        Store.open(tmp_path / "p", "nope")
    with Store.open(tmp_path / "p", PASSCODE) as store:  # the success reset the count
        store.set_wipe_after(None)
    for _ in range(3):
        with pytest.raises(WrongPasscode):
            Store.open(tmp_path / "p", "nope")
    Store.open(tmp_path / "p", PASSCODE).close()


# -- passcode change


def test_change_passcode_rewraps_without_reencrypting(tmp_path: Path) -> None:
    with make(tmp_path / "p") as store, store.transaction() as conn:
        store.set_meta(conn, "k", b"v")
    db = (tmp_path / "p" / "profile.db").read_bytes()
    salt = keyfile(tmp_path / "p")["kdf"]["salt"]
    with Store.open(tmp_path / "p", PASSCODE) as store:
        with pytest.raises(WrongPasscode):
            store.change_passcode("not it", "new passcode")
        with pytest.raises(WeakParameters):
            store.change_passcode(PASSCODE, "")
        store.change_passcode(PASSCODE, "new passcode", params=TEST_PARAMS)
        assert (tmp_path / "p" / "profile.db").read_bytes() == db
    assert (tmp_path / "p" / "profile.db").read_bytes()[:4096] == db[:4096]
    assert keyfile(tmp_path / "p")["kdf"]["salt"] != salt
    with pytest.raises(WrongPasscode):
        Store.open(tmp_path / "p", PASSCODE)
    with Store.open(tmp_path / "p", "new passcode") as store:
        assert store.get_meta("k") == b"v"


def test_change_passcode_can_raise_the_parameters(tmp_path: Path) -> None:
    stronger = KdfParams(t=3, m_kib=65536, p=1)
    with make(tmp_path / "p") as store:
        with pytest.raises(WeakParameters):
            store.change_passcode(PASSCODE, "new", params=KdfParams(t=2, m_kib=65536, p=1))
        store.change_passcode(PASSCODE, "stronger passcode", params=stronger)
        assert store.kdf_params == stronger
    assert keyfile(tmp_path / "p")["kdf"]["t"] == 3
    assert keyfile(tmp_path / "p")["kdf"]["m_kib"] == 65536
    with Store.open(tmp_path / "p", "stronger passcode") as store:
        assert store.kdf_params == stronger


# -- tampering


def _edit(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    doc = keyfile(path)
    change(doc)
    (path / "keyfile.json").write_text(json.dumps(doc))


TAMPERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "other passes": lambda d: d["kdf"].update(t=2),
    "other memory": lambda d: d["kdf"].update(m_kib=16),
    "other salt": lambda d: d["kdf"].update(salt="AAAAAAAAAAAAAAAAAAAAAA=="),
    "short salt": lambda d: d["kdf"].update(salt="AAAA"),
    "flipped tag": lambda d: d.update(wrapped=d["wrapped"][:-4] + "AAAA"),
    "flipped nonce": lambda d: d.update(wrapped="AAAA" + d["wrapped"][4:]),
    "short wrapped": lambda d: d.update(wrapped=d["wrapped"][:40]),
    "not base64": lambda d: d.update(wrapped="!!"),
    "no wrapped": lambda d: d.pop("wrapped"),
    "version": lambda d: d.update(version=9),
    "algorithm": lambda d: d["kdf"].update(alg="scrypt"),
    "kdf not a dict": lambda d: d.update(kdf="argon2id"),
    "lanes above memory": lambda d: d["kdf"].update(p=2),
    "huge memory": lambda d: d["kdf"].update(m_kib=2**33),
    "huge passes": lambda d: d["kdf"].update(t=2**33),
    "zero passes": lambda d: d["kdf"].update(t=0),
    "bool passes": lambda d: d["kdf"].update(t=True),
    "failures a string": lambda d: d.update(failures="3"),
    "failures a bool": lambda d: d.update(failures=False),
    "failures negative": lambda d: d.update(failures=-1),
    "not_before NaN": lambda d: d.update(not_before=float("nan")),
    "wipe_after a string": lambda d: d.update(wipe_after="1"),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_a_tampered_keyfile_is_refused_not_crashed(tmp_path: Path, name: str) -> None:
    make(tmp_path / "p").close()
    _edit(tmp_path / "p", TAMPERS[name])
    with pytest.raises((WrongPasscode, CorruptProfile)):
        Store.open(tmp_path / "p", PASSCODE)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[]", b"null", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000],
)
def test_malformed_keyfile(tmp_path: Path, content: bytes) -> None:
    make(tmp_path / "p").close()
    (tmp_path / "p" / "keyfile.json").write_bytes(content)
    with pytest.raises(CorruptProfile):
        Store.open(tmp_path / "p", PASSCODE)


def test_a_swapped_or_missing_database_is_refused(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    make(tmp_path / "q").close()
    (tmp_path / "q" / "profile.db").replace(tmp_path / "p" / "profile.db")
    with pytest.raises(CorruptProfile):
        Store.open(tmp_path / "p", PASSCODE)
    (tmp_path / "p" / "profile.db").unlink()
    with pytest.raises(CorruptProfile):
        Store.open(tmp_path / "p", PASSCODE)


# -- schema migrations


def test_an_older_profile_is_migrated_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations_module, "MIGRATIONS", ())
    monkeypatch.setattr(migrations_module, "SCHEMA_VERSION", 1)
    with make(tmp_path / "p") as store:
        assert store.read().execute("PRAGMA user_version").fetchone()[0] == 1
        found = store.read().execute("SELECT count(*) FROM sqlite_master WHERE name='events'")
        assert found.fetchone()[0] == 0
    monkeypatch.undo()
    with Store.open(tmp_path / "p", PASSCODE) as store:
        conn = store.read()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM alarms").fetchone()[0] == 0
        # the dead schema of version 2 went again in version 8
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "kt_pins" in tables and "events" not in tables
        columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
        assert "receipts" in columns and "sender_device" not in columns


def test_a_failing_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(tmp_path / "p").close()
    broken = (*migrations_module.MIGRATIONS, "CREATE TABLE extra (x); CREATE TABLE meta (x);")
    monkeypatch.setattr(migrations_module, "MIGRATIONS", broken)
    monkeypatch.setattr(migrations_module, "SCHEMA_VERSION", 1 + len(broken))
    with pytest.raises(CorruptProfile):
        Store.open(tmp_path / "p", PASSCODE)
    monkeypatch.undo()
    with Store.open(tmp_path / "p", PASSCODE) as store:
        conn = store.read()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name='extra'").fetchall()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with make(tmp_path / "p") as store:
        store.read().execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(UnsupportedSchema) as info:
        Store.open(tmp_path / "p", PASSCODE)
    assert isinstance(info.value, CorruptProfile) and info.value.version == SCHEMA_VERSION + 1


# -- secrets at rest and in messages


def test_files_hold_no_plaintext_and_no_key(tmp_path: Path) -> None:
    rng = RecordingRng()
    store = Store.create(tmp_path / "p", PASSCODE, params=TEST_PARAMS, rng=rng)
    db_key = rng.out[0]
    with store.transaction() as conn:
        store.set_meta(conn, "secret", MARKER.encode())
        conn.execute(
            "INSERT INTO messages (message_uuid, peer, outgoing, body, sent_at, received_at, "
            "status) VALUES (?, ?, 0, ?, 0, 0, 'received')",
            (b"u" * 16, b"p" * 16, MARKER * 3),
        )
    names_open = {p.name for p in (tmp_path / "p").iterdir()}
    assert "profile.db-wal" in names_open  # the WAL is scanned while it exists
    blobs = all_bytes(tmp_path / "p")
    store.close()
    blobs += all_bytes(tmp_path / "p")
    assert MARKER.encode() not in blobs and MARKER.encode("utf-16-le") not in blobs
    for encoding in (db_key, db_key.hex().encode(), base64.b64encode(db_key)):
        assert encoding not in blobs
    assert PASSCODE.encode() not in blobs
    assert not (tmp_path / "p" / "profile.db").read_bytes().startswith(b"SQLite format 3")


def test_repr_holds_no_key(tmp_path: Path) -> None:
    rng = RecordingRng()
    store = Store.create(tmp_path / "p", PASSCODE, params=TEST_PARAMS, rng=rng)
    db_key = rng.out[0]
    for text in (repr(store), str(store), repr(store.kdf_params)):
        assert "x'" not in text and db_key.hex() not in text.lower()
        assert PASSCODE not in text and repr(db_key) not in text
    store.close()
    assert db_key.hex() not in repr(store)


def test_errors_never_contain_the_passcode(tmp_path: Path) -> None:
    secret = "Tr0ub4dor&3-distinctive"
    guess = "my-wrong-guess-42"
    Store.create(tmp_path / "p", secret, params=TEST_PARAMS, wipe_after=6).close()
    clock = Clock()
    errors: list[BaseException] = []
    for _ in range(5):
        with pytest.raises(StoreError) as info:
            Store.open(tmp_path / "p", guess, clock=clock)
        errors.append(info.value)
    with pytest.raises(TooManyAttempts) as waiting:
        Store.open(tmp_path / "p", secret, clock=clock)
    errors.append(waiting.value)
    clock.now += 3600
    with Store.open(tmp_path / "p", secret, clock=clock) as store:
        with pytest.raises(WrongPasscode) as info:
            store.change_passcode(guess, secret + "-new")
        errors.append(info.value)
    for _ in range(6):
        clock.now += 3600
        with pytest.raises(StoreError) as info:
            Store.open(tmp_path / "p", guess, clock=clock)
        errors.append(info.value)
    assert isinstance(errors[-1], ProfileWiped)
    with pytest.raises(WeakParameters) as weak:
        Store.create(tmp_path / "q", secret, params=KdfParams(t=1, m_kib=64, p=1))
    errors.append(weak.value)
    for error in errors:
        for text in (str(error), repr(error), repr(error.args)):
            assert secret not in text and guess not in text


# -- the counter under concurrency, file modes, read-only profiles


def test_concurrent_wrong_guesses_are_each_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tries at once must not read the same count and record one failure."""
    import threading

    make(tmp_path / "p").close()
    real_read = keyfile_module.KeyFile.read
    started = threading.Barrier(4)

    def slow_read(self: Any) -> dict[str, Any]:
        doc: dict[str, Any] = real_read(self)
        time.sleep(0.05)  # widen the read-to-write window a race needs
        return doc

    monkeypatch.setattr(keyfile_module.KeyFile, "read", slow_read)
    errors: list[BaseException] = []

    def guess() -> None:
        started.wait()
        try:
            Store.open(tmp_path / "p", "wrong guess")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guess) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.failures for e in errors if isinstance(e, WrongPasscode)) == [1, 2, 3, 4]
    assert keyfile(tmp_path / "p")["failures"] == 4


def test_every_profile_file_is_0600_and_the_directory_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = make(tmp_path / "p")
        with store.transaction() as conn:
            store.set_meta(conn, "x", b"y" * 10_000)
        # while open, SQLite's WAL and shared-memory files exist too
        names = {p.name for p in (tmp_path / "p").iterdir()}
        assert {"keyfile.json", "lock", "profile.db", "profile.db-wal"} <= names
        for path in (tmp_path / "p").iterdir():
            assert path.stat().st_mode & 0o777 == 0o600, path.name
        store.close()
        assert (tmp_path / "p").stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


def test_open_tightens_the_modes_of_an_older_profile(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    os.chmod(tmp_path / "p" / "profile.db", 0o644)
    os.chmod(tmp_path / "p", 0o755)
    Store.open(tmp_path / "p", PASSCODE).close()
    assert (tmp_path / "p" / "profile.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o700


def test_a_read_only_profile_opens_read_only(tmp_path: Path) -> None:
    with make(tmp_path / "p") as store, store.transaction() as conn:
        store.set_meta(conn, "greeting", b"hello")
    before = {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir()}
    with read_only(tmp_path / "p"):
        with Store.open(tmp_path / "p", PASSCODE, read_only=True) as store:
            assert store.get_meta("greeting") == b"hello"
            with pytest.raises(ReadOnlyProfile), store.transaction():
                pass
        with pytest.raises(WrongPasscode):
            Store.open(tmp_path / "p", "wrong", read_only=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir()} == before
