"""Request paths built from data stay in their segment; names are checked first."""

from __future__ import annotations

import httpx
import pytest

from sealpost.client.errors import ServerError, ServerUnavailable, UnknownContact
from sealpost.client.inbox import must_retry
from sealpost.client.paths import api_path, username_or_none
from sealpost.client.store import CorruptProfile


@pytest.mark.parametrize(
    "name", ["../keys/status", "../keys/00ff/1", "a/b", "..", ".", "x%2Fy", "bob?x=1", "b#c"]
)
def test_a_value_never_leaves_its_path_segment(name: str) -> None:
    path = api_path("accounts", name)
    url = httpx.URL("http://relay.example" + path)
    raw = url.raw_path.decode()  # as httpx sends it, after its own normalisation
    assert raw.split("/")[:3] == ["", "v1", "accounts"] and raw.count("/") == 3
    assert url.query == b"" and url.fragment == ""
    with pytest.raises(ValueError):
        api_path("accounts", "")


def test_username_rules() -> None:
    assert username_or_none("Alice_1.x-y") == "alice_1.x-y"
    for bad in ("ab", "a" * 33, "../keys/status", "bob/1", "bøb", "bob ", "", None, 7):
        assert username_or_none(bad) is None


def test_what_a_batch_retries_and_what_it_drops() -> None:
    assert must_retry(ServerUnavailable("down"))
    assert must_retry(ServerError(503, "unavailable", "later"))
    assert must_retry(ServerError(429, "rate_limited", "slow down"))
    assert must_retry(CorruptProfile("disk"))
    assert not must_retry(ServerError(404, "not_found", "no such attachment"))
    assert not must_retry(ServerError(401, "unauthorized", "signature"))
    assert not must_retry(ServerError(0, "bad_response", "malformed"))
    assert not must_retry(UnknownContact("x"))
    assert not must_retry(ValueError("a peer's bytes"))
