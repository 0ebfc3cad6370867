"""The passcode-wrapped SQLCipher store: round trips, wrong passcodes, wipe, passcode
change, tampering, and that the files hold no plaintext and no key in the clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealpost.client.store import (
    DEFAULT_PARAMS,
    TEST_PARAMS,
    CorruptProfile,
    KdfParams,
    NoProfile,
    ProfileExists,
    ProfileWiped,
    Store,
    TooManyAttempts,
    WeakParameters,
    WrongPasscode,
    delay_after,
)

MARKER = "the-eagle-lands-at-midnight"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make(path: Path, **kw: object) -> Store:
    return Store.create(path, "correct horse", params=TEST_PARAMS, **kw)  # type: ignore[arg-type]


def test_round_trip_and_rollback(tmp_path: Path) -> None:
    with make(tmp_path / "p") as store:
        with store.transaction() as conn:
            store.set_meta(conn, "greeting", b"hello")
        with pytest.raises(RuntimeError), store.transaction() as conn:
            store.set_meta(conn, "lost", b"never")
            raise RuntimeError("boom")
    with Store.open(tmp_path / "p", "correct horse") as store:
        assert store.get_meta("greeting") == b"hello"
        assert store.get_meta("lost") is None


def test_create_refuses_an_existing_profile_and_weak_parameters(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    with pytest.raises(ProfileExists):
        make(tmp_path / "p")
    with pytest.raises(WeakParameters):
        Store.create(tmp_path / "q", "pw", params=KdfParams(t=1, m_kib=1024, p=1))
    with pytest.raises(WeakParameters):
        Store.create(tmp_path / "q", "", params=TEST_PARAMS)
    with pytest.raises(NoProfile):
        Store.open(tmp_path / "nothing", "pw")


def test_default_parameters_are_rfc9106_second_set(tmp_path: Path) -> None:
    assert (DEFAULT_PARAMS.t, DEFAULT_PARAMS.m_kib, DEFAULT_PARAMS.p) == (3, 65536, 4)
    Store.create(tmp_path / "p", "pw-default").close()
    doc = json.loads((tmp_path / "p" / "keyfile.json").read_text())
    assert doc["kdf"]["t"] == 3 and doc["kdf"]["m_kib"] == 65536 and doc["kdf"]["p"] == 4
    with Store.open(tmp_path / "p", "pw-default") as store:
        assert store.kdf_params == DEFAULT_PARAMS


def test_wrong_passcodes_are_counted_and_delayed(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    clock = Clock()
    for expected in range(1, 5):
        with pytest.raises(WrongPasscode) as info:
            Store.open(tmp_path / "p", "wrong", clock=clock)
        assert info.value.failures == expected and info.value.retry_after == 0
        assert "wrong" not in str(info.value).replace("wrong passcode", "")
    with pytest.raises(WrongPasscode) as info:
        Store.open(tmp_path / "p", "wrong", clock=clock)
    assert info.value.retry_after == 30
    # even the right passcode must wait, and waiting tries are not counted
    with pytest.raises(TooManyAttempts):
        Store.open(tmp_path / "p", "correct horse", clock=clock)
    assert json.loads((tmp_path / "p" / "keyfile.json").read_text())["failures"] == 5
    clock.now += 31
    with pytest.raises(WrongPasscode) as info:
        Store.open(tmp_path / "p", "wrong", clock=clock)
    assert info.value.retry_after == 60
    clock.now += 61
    Store.open(tmp_path / "p", "correct horse", clock=clock).close()
    assert json.loads((tmp_path / "p" / "keyfile.json").read_text())["failures"] == 0
    assert [delay_after(n) for n in (4, 5, 6, 7, 8, 9, 50)] == [0, 30, 60, 300, 900, 3600, 3600]


def test_wipe_after_destroys_the_key(tmp_path: Path) -> None:
    with make(tmp_path / "p", wipe_after=3) as store, store.transaction() as conn:
        store.set_meta(conn, "x", b"y")
    before = (tmp_path / "p" / "keyfile.json").read_text()
    wrapped = json.loads(before)["wrapped"]
    for _ in range(2):
        with pytest.raises(WrongPasscode):
            Store.open(tmp_path / "p", "nope")
    with pytest.raises(ProfileWiped):
        Store.open(tmp_path / "p", "nope")
    after = (tmp_path / "p" / "keyfile.json").read_text()
    assert wrapped not in after and "wrapped" not in json.loads(after)
    assert not (tmp_path / "p" / "profile.db").exists()
    with pytest.raises(ProfileWiped):
        Store.open(tmp_path / "p", "correct horse")


def test_change_passcode_rewraps_without_reencrypting(tmp_path: Path) -> None:
    with make(tmp_path / "p") as store:
        with store.transaction() as conn:
            store.set_meta(conn, "k", b"v")
        store.close()
        page = (tmp_path / "p" / "profile.db").read_bytes()[:4096]
    with Store.open(tmp_path / "p", "correct horse") as store:
        with pytest.raises(WrongPasscode):
            store.change_passcode("not it", "new passcode")
        store.change_passcode("correct horse", "new passcode", params=TEST_PARAMS)
    assert (tmp_path / "p" / "profile.db").read_bytes()[:4096] == page
    with pytest.raises(WrongPasscode):
        Store.open(tmp_path / "p", "correct horse")
    with Store.open(tmp_path / "p", "new passcode") as store:
        assert store.get_meta("k") == b"v"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["kdf"].update(t=2),
        lambda d: d["kdf"].update(salt="AAAAAAAAAAAAAAAAAAAAAA=="),
        lambda d: d.update(wrapped=d["wrapped"][:-4] + "AAAA"),
        lambda d: d.update(wrapped="!!"),
        lambda d: d.update(version=9),
        lambda d: d["kdf"].update(alg="scrypt"),
    ],
)
def test_a_tampered_keyfile_is_refused_not_crashed(tmp_path: Path, tamper: object) -> None:
    make(tmp_path / "p").close()
    path = tmp_path / "p" / "keyfile.json"
    doc = json.loads(path.read_text())
    tamper(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))
    with pytest.raises((WrongPasscode, CorruptProfile)):
        Store.open(tmp_path / "p", "correct horse")


def test_malformed_keyfile(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    (tmp_path / "p" / "keyfile.json").write_text("{not json")
    with pytest.raises(CorruptProfile):
        Store.open(tmp_path / "p", "correct horse")


def test_files_hold_no_plaintext_and_no_key(tmp_path: Path) -> None:
    captured: list[bytes] = []

    def rng(n: int) -> bytes:
        import os

        data = os.urandom(n)
        captured.append(data)
        return data

    store = Store.create(tmp_path / "p", "correct horse", params=TEST_PARAMS, rng=rng)
    db_key = captured[0]
    with store.transaction() as conn:
        store.set_meta(conn, "secret", MARKER.encode())
        conn.execute(
            "INSERT INTO messages (message_uuid, peer, outgoing, body, sent_at, received_at, "
            "status) VALUES (?, ?, 0, ?, 0, 0, 'received')",
            (b"u" * 16, b"p" * 16, MARKER * 3),
        )
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "p").iterdir())
    store.close()
    blobs += b"".join(p.read_bytes() for p in (tmp_path / "p").iterdir())
    assert MARKER.encode() not in blobs
    for encoding in (db_key, db_key.hex().encode(), __import__("base64").b64encode(db_key)):
        assert encoding not in blobs
    assert not (tmp_path / "p" / "profile.db").read_bytes().startswith(b"SQLite format 3")
    assert "x'" not in repr(store) and db_key.hex() not in repr(store)


def test_transactions_do_not_nest(tmp_path: Path) -> None:
    from sealpost.client.store import StoreError

    with (
        make(tmp_path / "p") as store,
        store.transaction(),
        pytest.raises(StoreError),
        store.transaction(),
    ):
        pass
