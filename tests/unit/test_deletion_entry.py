"""The key-transparency log's deletion entry (docs/PROTOCOL.md section 12, "DeletionEntry"):
its bytes frozen, signed by the log key, decoded strictly, told apart from a LogEntry."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpost._errors import BadSignature, DecodeError, UnsupportedVersion
from sealpost.crypto.sign import SigningKey
from sealpost.transparency import (
    DeletionCause,
    DeletionEntry,
    LogEntry,
    LogEntryError,
    decode_entry,
    leaf_hash,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOG_KEY = SigningKey.from_private_bytes(bytes(range(32, 64)))
KAT_DELETION = (
    "0134000102030405060708090a0b0c0d0e0f0000000000000003000001a0c4506c00"
    "1111111111111111111111111111111111111111111111111111111111111111"
    "01000001a15ecf3400"
    "05616c696365"
    "47530b8ae8ae47bceff3017c824f43248d2de2c4e760ef6f30cc9b8e0ec0d115"
    "db6f47aec2e3131719c64977e5bcaa68b76e2e6daef20c751cc3f7f19a8b9706"
)
KAT_DELETION_LEAF = "d7927e2bec429a3a81aceca79d94f7b188eb79e827fe3b7f43a6264b80292113"


def _deletion(**changes: object) -> DeletionEntry:
    fields: dict[str, object] = {
        "account_id": bytes(range(16)),
        "username": "alice",
        "account_key": b"\x11" * 32,
        "sequence": 3,
        "timestamp": 1790000000000,
        "cause": DeletionCause.OPERATOR,
        "free_after": 1792592000000,  # 30 days later
    }
    fields.update(changes)
    return DeletionEntry.sign(LOG_KEY, **fields)  # type: ignore[arg-type]


def test_deletion_entry_known_answer() -> None:
    entry = _deletion()
    data = entry.encode()
    assert data.hex() == KAT_DELETION
    assert len(data) == 76 + 5 + 64
    assert entry.leaf_hash().hex() == KAT_DELETION_LEAF == leaf_hash(data).hex()
    assert DeletionEntry.decode(data) == entry
    assert decode_entry(data) == entry
    entry.verify(LOG_KEY.public_key())


def test_a_deletion_signed_by_another_key_or_altered_does_not_verify() -> None:
    entry = _deletion()
    with pytest.raises(BadSignature):
        entry.verify(SigningKey.from_private_bytes(bytes(32)).public_key())
    later = dataclasses.replace(entry, free_after=entry.free_after + 1)  # same signature
    with pytest.raises(BadSignature):
        later.verify(LOG_KEY.public_key())


def test_decode_entry_tells_the_two_kinds_apart() -> None:
    log_entry = LogEntry(bytes(16), "bob", b"\x22" * 32, b"\x33" * 32, 1, 5)
    assert decode_entry(log_entry.encode()) == log_entry
    with pytest.raises(DecodeError):
        LogEntry.decode(_deletion().encode())
    with pytest.raises(DecodeError):
        DeletionEntry.decode(log_entry.encode())


def test_each_leaf_decoder_names_its_own_kind_in_its_errors() -> None:
    """The two leaf decoders share one framing; each error still says which one refused."""
    log_entry = LogEntry(bytes(16), "bob", b"\x22" * 32, b"\x33" * 32, 1, 5).encode()
    deletion = _deletion().encode()
    with pytest.raises(DecodeError, match=r"^not a log entry$"):
        LogEntry.decode(deletion)
    with pytest.raises(DecodeError, match=r"^a log entry of the wrong length$"):
        LogEntry.decode(log_entry[:-1])
    with pytest.raises(DecodeError, match=r"^not a deletion entry$"):
        DeletionEntry.decode(log_entry)
    with pytest.raises(DecodeError, match=r"^a deletion entry of the wrong length$"):
        DeletionEntry.decode(deletion + b"\x00")


@pytest.mark.parametrize(
    "changes",
    [
        {"account_id": b"\x00" * 15},
        {"account_key": b"\x00" * 31},
        {"username": "Alice"},
        {"username": "al"},
        {"sequence": 1},  # an account's first entry is never its deletion
        {"sequence": 2**64},
        {"free_after": -1},
        {"cause": 3},
    ],
)
def test_deletion_entry_refuses_fields_it_cannot_encode(changes: dict[str, object]) -> None:
    with pytest.raises((LogEntryError, ValueError)):
        _deletion(**changes)


def test_deletion_entry_decode_is_strict() -> None:
    good = bytes.fromhex(KAT_DELETION)
    with pytest.raises(UnsupportedVersion):
        DeletionEntry.decode(b"\x02" + good[1:])
    for bad in (
        b"",
        b"\x01\x34",
        good[:-1],
        good + b"\x00",
        good[:66] + b"\x03" + good[67:],  # an unknown cause
        good[:75] + b"\x06" + good[76:],  # a username length that does not fit
        good[:76] + b"ALICE" + good[81:],
        good[:18] + bytes(7) + b"\x01" + good[26:],  # sequence 1
    ):
        with pytest.raises(DecodeError):
            DeletionEntry.decode(bad)


@FUZZ
@given(st.binary(min_size=76, max_size=180))
def test_deletion_entry_decode_accepts_or_raises_decode_error(tail: bytes) -> None:
    data = b"\x01\x34" + tail
    try:
        entry = DeletionEntry.decode(data)
    except DecodeError:
        return
    assert entry.encode() == data
