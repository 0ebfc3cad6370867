"""The receive pipeline's own signals (client/inbox.py): a dropped message is no user
error, and what a batch fetched before its locked phase is asked for, kept and replayed."""

from __future__ import annotations

import asyncio

import pytest

from sealpost.client.errors import ClientError, ServerUnavailable, UnknownContact
from sealpost.client.inbox import (
    Blob,
    DirectoryEntry,
    DropMessage,
    Lookup,
    Missing,
    Prefetched,
    Refresh,
    must_retry,
)
from sealpost.client.store.contacts import ContactRow


def test_dropping_a_message_is_no_client_error_and_no_reason_to_retry() -> None:
    assert not issubclass(DropMessage, ClientError)
    assert not issubclass(DropMessage, UnknownContact)
    assert must_retry(DropMessage("a message from a revoked device")) is False


def _fetch(prefetched: Prefetched, calls: list[object], fail: Exception | None = None) -> None:
    async def lookup(name: str) -> DirectoryEntry:
        calls.append(Lookup(name))
        if fail is not None:
            raise fail
        return (b"a" * 16, name, b"k" * 32, {})

    async def refresh(name: str) -> ContactRow:
        calls.append(Refresh(name))
        return ContactRow(b"a" * 16, name, b"k" * 32, False, False, None, {})

    async def download(pointer: bytes) -> bytes:
        calls.append(Blob(pointer))
        return b"blob"

    asyncio.run(prefetched.fetch(lookup=lookup, refresh=refresh, download=download))


def test_a_need_not_fetched_is_asked_for_then_answered_from_what_was_fetched() -> None:
    prefetched, calls = Prefetched(), []
    with pytest.raises(Missing) as missing:
        prefetched.lookup("carol")
    assert missing.value.need == Lookup("carol")
    with pytest.raises(Missing):
        prefetched.blob(b"pointer")
    assert prefetched.pending == {Lookup("carol"), Blob(b"pointer")}
    _fetch(prefetched, calls)
    assert sorted(map(repr, calls)) == sorted(map(repr, [Lookup("carol"), Blob(b"pointer")]))
    assert prefetched.pending == set()
    assert prefetched.lookup("carol")[1] == "carol"
    assert prefetched.blob(b"pointer") == b"blob"
    _fetch(prefetched, calls)  # nothing pending: nothing fetched again
    assert len(calls) == 2


def test_a_failure_that_is_the_messages_fault_is_kept_for_it() -> None:
    prefetched, calls = Prefetched(), []
    with pytest.raises(Missing):
        prefetched.lookup("nobody")
    _fetch(prefetched, calls, fail=UnknownContact("nobody"))
    assert prefetched.pending == set()
    for _ in range(2):  # raised again each time the message asks, never fetched again
        with pytest.raises(UnknownContact):
            prefetched.lookup("nobody")
    assert calls == [Lookup("nobody")]


def test_a_failure_that_is_not_the_messages_fault_stops_the_batch() -> None:
    prefetched: Prefetched = Prefetched()
    with pytest.raises(Missing):
        prefetched.lookup("carol")
    with pytest.raises(ServerUnavailable):
        _fetch(prefetched, [], fail=ServerUnavailable("down"))
    assert prefetched.pending == {Lookup("carol")}  # asked again by the next attempt
