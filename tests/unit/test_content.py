"""The plaintext format inside the encryption: round trips, padding, strict decoding."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpost.protocol.content import (
    MAX_TEXT_BYTES,
    PAD_BLOCK,
    ReceiptContent,
    TextContent,
    decode_content,
    encode_content,
)
from sealpost.protocol.errors import DecodeError

ID, TOKEN = b"\x11" * 16, b"\x22" * 32


@given(st.text(max_size=300), st.integers(0, 2**64 - 1))
def test_text_round_trip_and_padding(text: str, sent_at: int) -> None:
    content = TextContent(ID, sent_at, TOKEN, "alice", text)
    data = encode_content(content)
    assert len(data) % PAD_BLOCK == 0
    assert decode_content(data) == content


def test_receipt_round_trip() -> None:
    receipt = ReceiptContent(5, TOKEN, (b"\x01" * 16, b"\x02" * 16))
    assert decode_content(encode_content(receipt)) == receipt


def test_lengths_are_hidden_to_the_block() -> None:
    short = encode_content(TextContent(ID, 0, TOKEN, "a", "hi"))
    longer = encode_content(TextContent(ID, 0, TOKEN, "a", "hi there, how are you?"))
    assert len(short) == len(longer) == PAD_BLOCK


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * PAD_BLOCK,  # no 0x80 marker
        b"\x01\x01\x80" + b"\x00" * (PAD_BLOCK - 3),  # truncated text
        b"\x02\x01\x80" + b"\x00" * (PAD_BLOCK - 3),  # unknown version
        b"\x01\x09\x80" + b"\x00" * (PAD_BLOCK - 3),  # unknown kind
        b"\x80" + b"\x00" * (2 * PAD_BLOCK - 1),  # a whole block of padding too many
    ],
)
def test_malformed_content_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_content(data)


def test_bad_utf8_and_wrong_lengths() -> None:
    good = encode_content(TextContent(ID, 0, TOKEN, "bob", "hello"))
    body = good[: good.rindex(b"\x80")]
    for bad in (body[:-1] + b"\xff", body + b"x", body[:-2]):
        padded = bad + b"\x80"
        padded += b"\x00" * (-len(padded) % PAD_BLOCK)
        with pytest.raises(DecodeError):
            decode_content(padded)


def test_limits_are_enforced_on_construction() -> None:
    with pytest.raises(DecodeError):
        TextContent(ID, 0, TOKEN, "a", "x" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(DecodeError):
        TextContent(b"short", 0, TOKEN, "a", "x")
    with pytest.raises(DecodeError):
        ReceiptContent(0, TOKEN, ())
    with pytest.raises(DecodeError):
        TextContent(ID, 0, TOKEN, "", "x")


@given(st.binary(max_size=2 * PAD_BLOCK))
def test_decode_accepts_or_raises_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):  # anything else fails the test
        decode_content(data)


def test_repr_hides_text_and_token() -> None:
    content = TextContent(ID, 0, TOKEN, "alice", "my secret text")
    assert "secret" not in repr(content) and TOKEN.hex() not in repr(content)
