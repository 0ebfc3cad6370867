"""The FTS5 index of the history (client/store/search.py, migration 9): kept in the same
transaction as the messages, emptied of what is deleted or expired, secure-delete on,
built for profiles made before it, and queries that cannot inject FTS5 syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpost.client.store import TEST_PARAMS, Store
from sealpost.client.store.migrations import MIGRATIONS, SCHEMA_VERSION
from sealpost.client.store.search import fts_query

PEER, OTHER = b"p" * 16, b"o" * 16


def _insert(
    conn: object, n: int, body: str, peer: bytes = PEER, expires: int | None = None
) -> None:
    conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO messages (message_uuid, peer, outgoing, body, sent_at, received_at, "
        "status, expires_at) VALUES (?, ?, 0, ?, 1, 1, 'received', ?)",
        (bytes([n]) * 16, peer, body, expires),
    )


def _found(store: Store, text: str, peer: bytes | None = None) -> list[str]:
    return [r.body for r in store.repos().search.search(text, 10, 50, peer)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "p", "passcode", params=TEST_PARAMS)


def test_a_message_is_found_once_committed_and_never_after_a_rollback(store: Store) -> None:
    with store.transaction() as conn:
        _insert(conn, 1, "the pineapple plan")
        _insert(conn, 2, "nothing here", OTHER)
    assert _found(store, "pineapple") == ["the pineapple plan"]
    assert _found(store, '"pineapple plan"') == ["the pineapple plan"]
    assert _found(store, "pineapple", OTHER) == []
    assert _found(store, "plan pineapple nothing") == []  # every word is required
    with pytest.raises(RuntimeError), store.transaction() as conn:
        _insert(conn, 3, "a rolled back banana")
        raise RuntimeError
    assert _found(store, "banana") == []


def test_deleted_and_expired_messages_leave_the_index(store: Store) -> None:
    with store.transaction() as conn:
        _insert(conn, 1, "delete me kiwi")
        _insert(conn, 2, "expire me kiwi", expires=5)
    assert _found(store, "kiwi") == ["delete me kiwi"]  # the other one expired at 5 ms
    with store.unit() as repos:
        repos.messages.delete([bytes([1]) * 16], PEER)
        repos.messages.expire(10)
    assert _found(store, "kiwi") == []
    rows = store.read().execute("SELECT count(*) FROM messages_fts_idx").fetchone()
    terms = (
        store.read()
        .execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'kiwi'")
        .fetchone()
    )
    assert terms == (0,) and rows is not None
    (secure,) = (
        store.read()
        .execute("SELECT v FROM messages_fts_config WHERE k = 'secure-delete'")
        .fetchone()
    )
    assert secure == 1


def test_a_profile_from_before_the_index_is_indexed_when_opened(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "p", "passcode", params=TEST_PARAMS)
    assert len(MIGRATIONS) + 1 == SCHEMA_VERSION and SCHEMA_VERSION >= 9
    with store.transaction() as conn:
        _insert(conn, 1, "an old mango message")
    # make it a profile of schema 8, as the code before the index left it (the index is
    # migration 9, placeholders 10, pending sends 11)
    conn = store.read()
    conn.executescript(
        "BEGIN; DROP TRIGGER messages_fts_insert; DROP TRIGGER messages_fts_delete; "
        "DROP TRIGGER messages_fts_update; DROP TABLE messages_fts; "
        "ALTER TABLE messages DROP COLUMN gone; DROP TABLE pending_sends; "
        "PRAGMA user_version = 8; COMMIT;"
    )
    store.close()
    with Store.open(tmp_path / "p", "passcode") as reopened:
        assert _found(reopened, "mango") == ["an old mango message"]


def test_queries_are_words_never_fts_syntax(store: Store) -> None:
    with store.transaction() as conn:
        _insert(conn, 1, "body: NEAR(a b) OR x*")
    assert fts_query('body:secret OR "x') == '"body:secret" "OR" """x"'
    assert fts_query("   ") is None
    # words, not operators: no syntax error, and they match as the words they are
    assert _found(store, "NEAR(a") == ["body: NEAR(a b) OR x*"]
    assert _found(store, "NEAR(z") == []
    assert _found(store, "OR") == ["body: NEAR(a b) OR x*"]
    assert _found(store, 'body: "') == ["body: NEAR(a b) OR x*"]
