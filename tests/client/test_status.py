"""The message status table: every legal move is taken, every other one refused, and the
stored strings stay the public ones."""

from __future__ import annotations

import doctest
import itertools
import sqlite3

import pytest

from sealpost.client import status as status_module
from sealpost.client.errors import ClientError
from sealpost.client.status import (
    INITIAL,
    TRANSITIONS,
    IllegalTransition,
    MessageStatus,
    advance,
    sources,
)

S = MessageStatus
LEGAL = {
    (S.QUEUED, S.SENT),
    (S.QUEUED, S.DELIVERED),
    (S.QUEUED, S.FAILED),
    (S.QUEUED, S.DELETED),
    (S.SENT, S.DELIVERED),
    (S.SENT, S.READ),
    (S.SENT, S.DELETED),
    (S.DELIVERED, S.READ),
    (S.DELIVERED, S.DELETED),
    (S.READ, S.DELETED),
    (S.FAILED, S.DELIVERED),
    (S.FAILED, S.DELETED),
    (S.RECEIVED, S.READ),
    (S.RECEIVED, S.DELETED),
}
ALL_PAIRS = list(itertools.product(MessageStatus, MessageStatus))


def test_the_public_strings_are_the_ones_messages_always_had() -> None:
    assert {s.value for s in MessageStatus} == {
        "sending",
        "sent",
        "delivered",
        "read",
        "failed",
        "deleted",
        "received",
    }
    assert S.QUEUED == "sending" and S("sending") is S.QUEUED
    assert {S.QUEUED, S.SENT, S.RECEIVED} == INITIAL


def test_the_table_is_exactly_the_legal_moves() -> None:
    assert set(TRANSITIONS) == set(MessageStatus)
    assert {(a, b) for a, moves in TRANSITIONS.items() for b in moves} == LEGAL


@pytest.mark.parametrize(("current", "new"), sorted(LEGAL))
def test_a_legal_move_is_taken(current: MessageStatus, new: MessageStatus) -> None:
    assert advance(current, new) is new
    assert advance(current.value, new.value) is new  # as read from the store


@pytest.mark.parametrize(("current", "new"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_every_illegal_move_is_refused(current: MessageStatus, new: MessageStatus) -> None:
    with pytest.raises(IllegalTransition) as refused:
        advance(current, new)
    assert refused.value.current is current and refused.value.new is new
    assert isinstance(refused.value, ClientError)


def test_nothing_comes_back_from_deleted_and_nothing_becomes_queued_again() -> None:
    assert TRANSITIONS[S.DELETED] == frozenset()
    assert all(S.QUEUED not in moves for moves in TRANSITIONS.values())
    assert all(S.RECEIVED not in moves for moves in TRANSITIONS.values())


def test_a_string_that_is_no_status_is_refused() -> None:
    with pytest.raises(ValueError, match="MessageStatus"):
        advance("sending", "lost")
    with pytest.raises(ValueError, match="MessageStatus"):
        advance("queued", "sent")  # the name is not the stored string


@pytest.mark.parametrize("new", list(MessageStatus))
def test_sources_are_the_table_read_backwards(new: MessageStatus) -> None:
    assert set(sources(new)) == {a.value for a, b in LEGAL if b is new}


def test_an_update_written_with_sources_moves_only_what_the_table_allows() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
    db.executemany("INSERT INTO messages (id, status) VALUES (?, ?)", enumerate(MessageStatus))
    marks = ",".join("?" * len(sources(S.SENT)))
    db.execute(
        f"UPDATE messages SET status = ? WHERE status IN ({marks})",
        (S.SENT, *sources(S.SENT)),
    )
    after = dict(db.execute("SELECT id, status FROM messages"))
    for row_id, before in enumerate(MessageStatus):
        expected = S.SENT if before is S.QUEUED else before
        assert after[row_id] == expected.value


def test_the_module_example_holds() -> None:
    assert doctest.testmod(status_module, raise_on_error=False).failed == 0
