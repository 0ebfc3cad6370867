"""The provisioning payload decoder: accept, or raise DecodeError, nothing else."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpost._errors import DecodeError
from sealpost.client.provisioning import Provisioning

HUGE = b"1" * 5000


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError inside json.loads
        b'{"version": 1, "contacts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"version": ' + HUGE + b"}",  # over the 4300-digit int limit
        b'{"version": 1, "device_id": ' + HUGE + b"}",
        b"\xff",
        b'{"version": 1, "contacts": [{"account_id": " ' + b"00" * 16 + b' "}]}',
    ],
)
def test_hostile_payloads_are_decode_errors(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        Provisioning.from_bytes(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["version", "contacts", "devices", "x"]), json_values))
def test_random_json_is_accepted_or_a_decode_error(doc: dict[str, object]) -> None:
    payload = json.dumps({"version": 1, **doc}).encode()
    with contextlib.suppress(DecodeError):
        Provisioning.from_bytes(payload)
