"""The plaintext format inside the encryption: round trips, padding, strict decoding."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpost.protocol.content import (
    DEVICE_LINKED,
    DEVICE_REMOVED,
    MAX_TEXT_BYTES,
    MAX_TIMER,
    PAD_BLOCK,
    Content,
    DeleteContent,
    DeviceNotice,
    GroupStateRequest,
    GroupUpdateContent,
    ReceiptContent,
    RevocationNotice,
    SenderKeyContent,
    SentTranscript,
    TextContent,
    TimerContent,
    decode_content,
    decode_unpadded,
    encode_content,
    encode_unpadded,
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


GROUP = b"\x33" * 32

ALL_KINDS = [
    TextContent(ID, 1, TOKEN, "alice", "with everything", GROUP, b"\x44" * 200, 3600),
    TextContent(ID, 1, TOKEN, "alice", "pairwise, timer only", expire_timer=30),
    GroupUpdateContent(2, TOKEN, "bob", b"\x55" * 300, b"\x66" * 120),
    GroupUpdateContent(2, TOKEN, "bob", None, b"", state_pointer=b"\x77" * 180),
    SenderKeyContent(3, TOKEN, "carol", b"\x88" * 150),
    TimerContent(ID, 4, TOKEN, "dave", 86400, GROUP),
    TimerContent(ID, 4, TOKEN, "dave", 0),
    DeleteContent(ID, 5, TOKEN, "erin", b"\x99" * 16, GROUP),
    DeleteContent(ID, 5, TOKEN, "erin", b"\x99" * 16),
    SentTranscript(6, b"\x01\x01inner", account_id=b"\xaa" * 16, name="frank"),
    SentTranscript(6, b"\x01\x01inner", group_id=GROUP),
    DeviceNotice(7, DEVICE_LINKED, 2, "laptop"),
    DeviceNotice(7, DEVICE_REMOVED, 3, "old-phone"),
    RevocationNotice(8, b"\x01\x06" + b"\xbb" * 92),
    # group messages name the state version (and its hash) they were sent under
    TextContent(ID, 1, TOKEN, "alice", "v3", GROUP, b"\x44" * 20, 0, 3, b"\xab" * 32),
    TimerContent(ID, 4, TOKEN, "dave", 60, GROUP, 7, b"\xcd" * 32),
    DeleteContent(ID, 5, TOKEN, "erin", b"\x99" * 16, GROUP, 2**32 - 1, b"\xef" * 32),
    GroupStateRequest(8, TOKEN, "bob", GROUP, 1),
]


@pytest.mark.parametrize("content", ALL_KINDS, ids=lambda c: type(c).__name__)
def test_every_kind_round_trips_padded_and_unpadded(content: Content) -> None:
    assert decode_content(encode_content(content)) == content
    assert decode_unpadded(encode_unpadded(content)) == content


@pytest.mark.parametrize("content", ALL_KINDS, ids=lambda c: type(c).__name__)
def test_every_truncation_and_extension_is_a_decode_error(content: Content) -> None:
    body = encode_unpadded(content)
    for cut in range(len(body)):
        with pytest.raises(DecodeError):
            decode_unpadded(body[:cut])
    with pytest.raises(DecodeError):
        decode_unpadded(body + b"\x00")


def test_unknown_flags_and_bad_fields_are_refused() -> None:
    text = encode_unpadded(TextContent(ID, 1, TOKEN, "alice", "hi"))
    flags_at = 2 + 16 + 8 + 32 + 1 + 5 + 4
    for flag in (0x04, 0x80):
        bad = text[:flags_at] + bytes((flag,)) + text[flags_at + 1 :]
        with pytest.raises(DecodeError):
            decode_unpadded(bad)
    with pytest.raises(DecodeError):
        TimerContent(ID, 1, TOKEN, "a", MAX_TIMER + 1)
    with pytest.raises(DecodeError):
        GroupUpdateContent(1, TOKEN, "a", b"x", state_pointer=b"y")  # both
    with pytest.raises(DecodeError):
        GroupUpdateContent(1, TOKEN, "a", None)  # neither
    with pytest.raises(DecodeError):
        SentTranscript(1, b"x", account_id=b"\x01" * 16, name="a", group_id=GROUP)
    with pytest.raises(DecodeError):
        DeviceNotice(1, 9, 2, "x")
    for revocation in (b"", b"x" * 513):
        with pytest.raises(DecodeError):
            RevocationNotice(1, revocation)
    with pytest.raises(DecodeError):
        TextContent(ID, 0, TOKEN, "bad\nname", "x")


def test_a_group_state_reference_is_checked() -> None:
    with pytest.raises(DecodeError):  # only a group message names a state
        TextContent(ID, 1, TOKEN, "alice", "hi", None, None, 0, 3, b"\xab" * 32)
    with pytest.raises(DecodeError):  # a version without its hash
        TextContent(ID, 1, TOKEN, "alice", "hi", GROUP, None, 0, 3, None)
    with pytest.raises(DecodeError):
        TimerContent(ID, 1, TOKEN, "a", 0, GROUP, 0, b"\xab" * 32)
    with pytest.raises(DecodeError):
        DeleteContent(ID, 1, TOKEN, "a", ID, GROUP, 1, b"\xab" * 31)
    with pytest.raises(DecodeError):
        GroupStateRequest(1, TOKEN, "a", GROUP, 0)
    # the state flag (4) without the group flag (1) is refused on the wire
    timer = encode_unpadded(TimerContent(ID, 1, TOKEN, "a", 0))
    at = 2 + 16 + 8 + 32 + 2
    with pytest.raises(DecodeError):
        decode_unpadded(timer[:at] + b"\x04" + b"\x00" * 36 + timer[at + 1 :])


def test_secret_material_stays_out_of_reprs() -> None:
    for content in ALL_KINDS:
        shown = repr(content)
        assert TOKEN.hex() not in shown and "\\x88" not in shown and "inner" not in shown


def test_a_gossiped_tree_head_travels_inside_the_padding_and_is_strict() -> None:
    from sealpost.protocol.content import GOSSIP_LEN, decode_content_with_gossip
    from sealpost.transparency.log import TREE_HEAD_LEN

    assert GOSSIP_LEN == TREE_HEAD_LEN
    text = TextContent(b"\x01" * 16, 1_700_000_000_000, b"\x02" * 32, "alice", "hi")
    head = b"\x01\x32" + bytes(range(144))
    plain = encode_content(text, head)
    assert len(plain) % PAD_BLOCK == 0
    assert decode_content_with_gossip(plain) == (text, head)
    assert decode_content(plain) == text
    assert decode_content_with_gossip(encode_content(text)) == (text, None)
    body = encode_unpadded(text)
    for bad in (
        head[:-1],  # one byte short
        head + b"\x00",  # one byte long
        b"\x01\x30" + head[2:],  # not a tree head
        b"\x01\x31" + head[2:112],  # a head of the first format (no map root)
    ):
        padded = body + bad + b"\x80"
        padded += b"\x00" * (-len(padded) % PAD_BLOCK)
        with pytest.raises(DecodeError):
            decode_content_with_gossip(padded)
    with pytest.raises(DecodeError):  # a transcript's embedded content gossips nothing
        decode_unpadded(body + head)
    with pytest.raises(ValueError):
        encode_content(text, head[:-1])
