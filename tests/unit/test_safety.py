"""Safety numbers: symmetric, 60 digits, sensitive to every input, pinned by a known
answer, and the QR comparison."""

from __future__ import annotations

import hashlib

import pytest

from sealpost.protocol.errors import DecodeError
from sealpost.protocol.safety import (
    ITERATIONS,
    compare_scanned,
    format_safety_number,
    safety_number,
    safety_number_lines,
    safety_qr_payload,
)

A_ID, A_KEY = bytes(range(16)), bytes(range(32, 64))
B_ID, B_KEY = bytes(range(100, 116)), bytes(range(200, 232))


def reference_half(account_id: bytes, key: bytes) -> str:
    """The algorithm written out independently of the module."""
    h = hashlib.sha512()
    h.update(b"sealpost safety number\x00")
    h.update((1).to_bytes(2, "big"))
    h.update(key)
    h.update(account_id)
    digest = h.digest()
    i = 0
    while i < ITERATIONS:
        digest = hashlib.sha512(digest + key).digest()
        i += 1
    out = ""
    for chunk in range(6):
        value = int.from_bytes(digest[chunk * 5 : chunk * 5 + 5], "big")
        out += str(value % 100000).rjust(5, "0")
    return out


def test_symmetric_and_matches_the_reference() -> None:
    ab = safety_number(A_ID, A_KEY, B_ID, B_KEY)
    assert ab == safety_number(B_ID, B_KEY, A_ID, A_KEY)
    assert len(ab) == 60 and ab.isdigit()
    assert ab == "".join(sorted([reference_half(A_ID, A_KEY), reference_half(B_ID, B_KEY)]))


def test_known_answer() -> None:
    # produced once by this implementation; any change to the algorithm breaks it
    assert safety_number(A_ID, A_KEY, B_ID, B_KEY) == KNOWN


KNOWN = "627492351754774467023067211602994864508356799083789883927086"


@pytest.mark.parametrize("which", range(4))
def test_every_input_changes_the_number(which: int) -> None:
    args = [A_ID, A_KEY, B_ID, B_KEY]
    changed = list(args)
    changed[which] = bytes([args[which][0] ^ 1]) + args[which][1:]
    assert safety_number(*changed) != safety_number(*args)


def test_format_and_lines() -> None:
    number = safety_number(A_ID, A_KEY, B_ID, B_KEY)
    groups = format_safety_number(number).split(" ")
    assert len(groups) == 12 and all(len(g) == 5 for g in groups)
    assert [len(line.split(" ")) for line in safety_number_lines(number)] == [4, 4, 4]
    with pytest.raises(DecodeError):
        format_safety_number("123")


def test_qr_payload_compares_from_the_other_side() -> None:
    mine = safety_qr_payload(A_ID, A_KEY, B_ID, B_KEY)
    assert compare_scanned(mine, B_ID, B_KEY, A_ID, A_KEY)
    other = safety_qr_payload(A_ID, A_KEY, B_ID, bytes(32))
    assert not compare_scanned(other, B_ID, B_KEY, A_ID, A_KEY)
    for bad in (b"", mine[:-1], b"\x09" + mine[1:]):
        with pytest.raises(DecodeError):
            compare_scanned(bad, B_ID, B_KEY, A_ID, A_KEY)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(DecodeError):
        safety_number(b"short", A_KEY, B_ID, B_KEY)
    with pytest.raises(DecodeError):
        safety_number(A_ID, A_KEY[:31], B_ID, B_KEY)
