"""Reading a long conversation a page at a time, and the conversation list in one query
(client/store/messages.py ``page`` and ``overview``): keyset pages on the ``(peer, id)``
index, before or after a message, and per conversation its newest message and unread
count without reading its history."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpost.client.store import TEST_PARAMS, Store
from sealpost.client.store.messages import ReceivedRow

PEER, OTHER, EMPTY = b"p" * 16, b"o" * 16, b"e" * 16


def _uid(n: int) -> bytes:
    return n.to_bytes(16, "big")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.create(tmp_path / "p", "passcode", params=TEST_PARAMS)
    with store.transaction() as conn:
        rows = []
        for n in range(1, 251):  # 250 in PEER, every third outgoing; 10 in OTHER between
            rows.append((_uid(n), PEER, int(n % 3 == 0), f"text {n}", n, n, "received", None))
            if n % 25 == 0:
                rows.append((_uid(1000 + n), OTHER, 0, f"other {n}", n, n, "received", None))
        rows.append((_uid(999), PEER, 0, "gone soon", 251, 251, "received", 300))
        conn.executemany(
            "INSERT INTO messages (message_uuid, peer, outgoing, body, sent_at, received_at, "
            "status, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return store


def _texts(rows: list[object]) -> list[str]:
    return [r.body for r in rows]  # type: ignore[attr-defined]


def test_pages_walk_back_and_forth_from_any_message(store: Store) -> None:
    messages = store.repos().messages
    newest = messages.page(PEER, 400, 3)
    assert _texts(newest) == ["text 248", "text 249", "text 250"]  # "gone soon" expired
    before = messages.page(PEER, 400, 3, before=newest[0].message_id)
    assert _texts(before) == ["text 245", "text 246", "text 247"]
    after = messages.page(PEER, 400, 2, after=before[0].message_id)
    assert _texts(after) == ["text 246", "text 247"]
    assert _texts(messages.page(PEER, 400, 5, before=_uid(3))) == ["text 1", "text 2"]
    assert messages.page(PEER, 400, 5, before=_uid(1)) == []
    assert messages.page(PEER, 400, 5, after=_uid(250)) == []
    # before its timer ran out, the expiring message is the newest
    assert _texts(messages.page(PEER, 200, 1)) == ["gone soon"]


def test_a_cursor_from_another_conversation_or_none_at_all_gives_nothing(store: Store) -> None:
    messages = store.repos().messages
    assert messages.page(PEER, 400, 5, before=_uid(1025)) == []  # OTHER's message
    assert messages.page(PEER, 400, 5, after=b"\x00" * 16) == []
    with pytest.raises(ValueError, match="one cursor"):
        messages.page(PEER, 400, 5, before=_uid(5), after=_uid(3))


def test_a_page_is_a_search_of_the_peer_index_not_a_scan(store: Store) -> None:
    plan = store.read().execute(
        "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE peer = ? AND id < ? "
        "AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC LIMIT ?",
        (PEER, 100, 0, 50),
    )
    details = " ".join(str(row[-1]) for row in plan)
    assert "messages_peer" in details and "SCAN" not in details


def test_the_overview_gives_each_newest_message_and_its_unread_count(store: Store) -> None:
    messages = store.repos().messages
    found = messages.overview([(PEER, 240), (OTHER, 0), (EMPTY, 0)], 400, 100)
    last, unread = found[PEER]
    assert last is not None and last.body == "text 250"
    # incoming after the mark: 241..250 less the outgoing 243, 246, 249
    assert unread == 7
    other_last, other_unread = found[OTHER]
    assert other_last is not None and other_last.body == "other 250"
    assert other_unread == 10
    assert found[EMPTY] == (None, 0)
    # counted among the newest `scan` only (the list shows 99+)
    assert messages.overview([(PEER, 0)], 400, 30)[PEER][1] == 20
    # an expiring message counts until its time is up
    last, unread = messages.overview([(PEER, 250)], 200, 100)[PEER]
    assert last is not None and (last.body, unread) == ("gone soon", 1)


def test_the_overview_takes_many_conversations(store: Store) -> None:
    peers = [(n.to_bytes(16, "big"), 0) for n in range(900)] + [(PEER, 0)]
    found = store.repos().messages.overview(peers, 400, 100)
    assert len(found) == 901 and found[PEER][0] is not None
    assert all(found[p] == (None, 0) for p, _ in peers[:900])


def test_deleted_and_expired_messages_leave_placeholders_that_pages_keep(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(
            "UPDATE messages SET attachment = x'0102' WHERE message_uuid = ?", (_uid(249),)
        )
    with store.unit() as repos:
        repos.messages.delete([_uid(249)], PEER)  # this account's (3 | 249), for everyone
        repos.messages.delete_authored(_uid(247), PEER, PEER, 1)  # the peer's, for everyone
        repos.messages.delete_authored(_uid(248), PEER, OTHER, 1)  # not OTHER's: kept
        assert repos.messages.expire(400) == 1  # "gone soon"
    messages = store.repos().messages
    page = messages.page(PEER, 400, 5)
    assert [(m.body, m.gone) for m in page] == [
        ("", "deleted"),
        ("text 248", None),
        ("", "deleted"),
        ("text 250", None),
        ("", "expired"),
    ]
    assert [m.received_at for m in page] == [247, 248, 249, 250, 251]  # the time stays
    assert page[2].attachment is None and page[2].outgoing and page[4].expires_at is None
    # the history, what the CLI prints, leaves them out
    assert _texts(messages.history(PEER, 400, 3)) == ["text 246", "text 248", "text 250"]
    # their words left the index; they cannot be deleted again or stored again
    assert store.repos().search.search("soon", 400, 10) == []
    assert messages.is_outgoing(_uid(249), PEER) is None
    with store.unit() as repos:
        repos.messages.delete([_uid(249)], PEER)
        repos.messages.delete_authored(_uid(247), PEER, PEER, 1)
        assert not repos.messages.add_received(
            _uid(247), PEER, PEER, False, "text 247", 247, 247, None, None
        )
    assert [(m.body, m.gone) for m in messages.page(PEER, 400, 2, before=_uid(248))] == [
        ("text 246", None),
        ("", "deleted"),
    ]
    assert messages.tombstoned([_uid(247)]) == set()  # a placeholder, not a tombstone
    # the list shows the placeholder as the newest; placeholders are not unread
    last, unread = messages.overview([(PEER, 246)], 400, 100)[PEER]
    assert last is not None and last.gone == "expired" and unread == 2  # 248 and 250


def test_a_batch_of_arrivals_stores_the_new_ones_once_and_says_which(store: Store) -> None:
    """``add_received_all`` (the receive batch's one statement): an id already stored stays
    as it was, an id named twice in the batch is stored once (its first row), and the ids
    returned are exactly those stored now, in the order they came."""
    author = b"a" * 16
    rows = [
        ReceivedRow(_uid(5000 + n), OTHER, author, False, f"new {n}", n, n, None, None)
        for n in range(3)
    ]
    again = ReceivedRow(_uid(5001), OTHER, author, False, "twice", 9, 9, None, None)
    old = ReceivedRow(_uid(3), PEER, author, False, "not text 3", 3, 3, None, None)
    with store.unit() as repos:
        kept = repos.messages.add_received_all([rows[0], old, rows[1], again, rows[2]])
        assert repos.messages.add_received_all([]) == set()
    assert kept == {_uid(5000), _uid(5001), _uid(5002)}
    texts = _texts(store.repos().messages.page(OTHER, 0, 20))
    assert texts[-3:] == ["new 0", "new 1", "new 2"]
    assert "not text 3" not in _texts(store.repos().messages.page(PEER, 0, 300))
