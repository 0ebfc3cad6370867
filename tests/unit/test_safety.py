"""Safety numbers: Signal's algorithm (checked against libsignal's published vectors),
symmetric, 60 digits, sensitive to every input, pinned by a known answer; the QR
comparison, including a mirrored code and any malformed input; and the terminal QR render.
"""

from __future__ import annotations

import hashlib

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpost.client.qr import qr_matrix, qr_text
from sealpost.protocol.errors import DecodeError, UnsupportedVersion
from sealpost.protocol.safety import (
    ITERATIONS,
    _digits,
    _iterated_hash,
    compare_scanned,
    format_safety_number,
    safety_number,
    safety_number_lines,
    safety_qr_payload,
)

A_ID, A_KEY = bytes(range(16)), bytes(range(32, 64))
B_ID, B_KEY = bytes(range(100, 116)), bytes(range(200, 232))


def reference_half(account_id: bytes, key: bytes) -> str:
    """One party's 30 digits, written out from docs/PROTOCOL.md independently of the module
    (no shared helper or constant)."""
    buf = bytearray(b"sealpost safety number\x00")
    buf += b"\x00\x01"
    buf += key
    buf += account_id
    rounds = 0
    while rounds < 8192:
        h = hashlib.sha512()
        h.update(bytes(buf))
        h.update(key)
        buf = bytearray(h.digest())
        rounds += 1
    digits = []
    for start in (0, 5, 10, 15, 20, 25):
        value = 0
        for byte in buf[start : start + 5]:
            value = value * 256 + byte
        digits.append(str(value % 100000).zfill(5))
    return "".join(digits)


def test_iteration_count_is_pinned() -> None:
    # changing it changes every user's safety number
    assert ITERATIONS == 8192


def test_symmetric_and_matches_the_reference() -> None:
    ab = safety_number(A_ID, A_KEY, B_ID, B_KEY)
    assert ab == safety_number(B_ID, B_KEY, A_ID, A_KEY)
    assert len(ab) == 60 and ab.isdigit()
    assert ab == min(
        reference_half(A_ID, A_KEY) + reference_half(B_ID, B_KEY),
        reference_half(B_ID, B_KEY) + reference_half(A_ID, A_KEY),
    )


# Produced once by this implementation (and equal to reference_half above); any change to
# the algorithm, its domain string, version or iteration count breaks it.
KNOWN = "023950016364244047306562297775435200531715084883153522155640"
KNOWN_QR = bytes.fromhex(
    "01"
    "ea2abf8be02b60493985937504662cde10836d1b21f77f4a55ce481f05d89d67"
    "e4c7c94edba8a41bf0637a70cf9c347811c8247a4c615354b62bf18018ef43e1"
)


def test_known_answer() -> None:
    assert safety_number(A_ID, A_KEY, B_ID, B_KEY) == KNOWN
    assert safety_qr_payload(A_ID, A_KEY, B_ID, B_KEY) == KNOWN_QR


# libsignal's fingerprint test vectors (rust/protocol/src/fingerprint.rs, testVectorsVersion1
# in Java): version 0x0000 header, 33-byte identity keys, phone numbers, 5200 iterations.
# Our iterated hash with Signal's inputs gives Signal's numbers, so the only differences are
# the inputs and the count documented in the module.
SIGNAL_ALICE_KEY = bytes.fromhex(
    "0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868"
)
SIGNAL_BOB_KEY = bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
SIGNAL_DISPLAY = "300354477692869396892869876765458257569162576843440918079131"
SIGNAL_ALICE_SCANNABLE = "1e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
SIGNAL_BOB_SCANNABLE = "d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"


def test_the_iterated_hash_is_signals() -> None:
    alice = _iterated_hash(b"\x00\x00", SIGNAL_ALICE_KEY, b"+14152222222", 5200)
    bob = _iterated_hash(b"\x00\x00", SIGNAL_BOB_KEY, b"+14153333333", 5200)
    assert "".join(sorted([_digits(alice), _digits(bob)])) == SIGNAL_DISPLAY
    assert alice[:32].hex() == SIGNAL_ALICE_SCANNABLE
    assert bob[:32].hex() == SIGNAL_BOB_SCANNABLE


@pytest.mark.parametrize("which", range(4))
def test_every_input_changes_the_number(which: int) -> None:
    args = [A_ID, A_KEY, B_ID, B_KEY]
    changed = list(args)
    changed[which] = bytes([args[which][0] ^ 1]) + args[which][1:]
    assert safety_number(*changed) != safety_number(*args)
    assert safety_qr_payload(*changed) != safety_qr_payload(*args)


def test_format_and_lines() -> None:
    number = safety_number(A_ID, A_KEY, B_ID, B_KEY)
    formatted = format_safety_number(number)
    groups = formatted.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert formatted.replace(" ", "") == number
    lines = safety_number_lines(number)
    assert [len(line.split(" ")) for line in lines] == [4, 4, 4]
    assert " ".join(lines) == formatted


@pytest.mark.parametrize("bad", ["", "123", "1" * 59, "1" * 61, "a" * 60, "\u0661" * 60])
def test_format_refuses_what_is_not_60_digits(bad: str) -> None:
    with pytest.raises(DecodeError):
        format_safety_number(bad)


def test_qr_payload_compares_from_the_other_side() -> None:
    mine = safety_qr_payload(A_ID, A_KEY, B_ID, B_KEY)
    assert len(mine) == 65 and mine[0] == 1
    assert compare_scanned(mine, B_ID, B_KEY, A_ID, A_KEY)


def test_qr_payload_of_a_man_in_the_middle_does_not_match() -> None:
    # A holds a substituted key for B: B's scan of A's code fails.
    other = safety_qr_payload(A_ID, A_KEY, B_ID, bytes(32))
    assert not compare_scanned(other, B_ID, B_KEY, A_ID, A_KEY)


def test_own_qr_payload_scanned_back_does_not_match() -> None:
    # a mirror (or a relay showing us our own screen) must not verify
    mine = safety_qr_payload(A_ID, A_KEY, B_ID, B_KEY)
    assert not compare_scanned(mine, A_ID, A_KEY, B_ID, B_KEY)


def test_malformed_qr_payloads_are_refused() -> None:
    mine = safety_qr_payload(A_ID, A_KEY, B_ID, B_KEY)
    for bad in (b"", mine[:-1], mine + b"\x00", bytearray(mine)):
        with pytest.raises(DecodeError):
            compare_scanned(bad, B_ID, B_KEY, A_ID, A_KEY)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedVersion):
        compare_scanned(b"\x09" + mine[1:], B_ID, B_KEY, A_ID, A_KEY)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=80), st.binary(min_size=64, max_size=64).map(b"\x01".__add__)))
def test_compare_scanned_accepts_or_raises_decode_error(payload: bytes) -> None:
    try:
        result = compare_scanned(payload, B_ID, B_KEY, A_ID, A_KEY)
    except DecodeError:
        return
    assert result is False


@pytest.mark.parametrize(
    ("account_id", "key"),
    [(b"short", A_KEY), (A_ID + b"\x00", A_KEY), (A_ID, A_KEY[:31]), (A_ID, A_KEY + b"\x00")],
)
def test_bad_sizes_are_refused(account_id: bytes, key: bytes) -> None:
    with pytest.raises(DecodeError):
        safety_number(account_id, key, B_ID, B_KEY)
    with pytest.raises(DecodeError):
        safety_number(B_ID, B_KEY, account_id, key)
    with pytest.raises(DecodeError):
        safety_qr_payload(account_id, key, B_ID, B_KEY)


# The terminal QR code (sealpost.client.qr). It lives here beside the payload it shows.

HALF_BLOCKS = set("█▀▄ \n")


@pytest.mark.parametrize("border", [2, 3, 4])
@pytest.mark.parametrize("invert", [False, True])
def test_qr_text_is_half_blocks_of_segnos_matrix(border: int, invert: bool) -> None:
    code = segno.make(KNOWN_QR, error="m", micro=False)
    size, _ = code.symbol_size(border=0)
    text = qr_text(KNOWN_QR, border=border, invert=invert)
    assert text and set(text) <= HALF_BLOCKS
    lines = text.split("\n")
    assert len(lines) == (size + 2 * border + 1) // 2
    assert all(len(line) == size + 2 * border for line in lines)
    matrix = qr_matrix(KNOWN_QR, border)
    assert (len(matrix), len(matrix[0])) == code.symbol_size(border=border)


def test_qr_matrix_of_the_safety_payload() -> None:
    # 65 bytes at level M need version 5: 37 modules, plus the quiet zone
    assert segno.make(KNOWN_QR, error="m", micro=False).version == 5
    matrix = qr_matrix(KNOWN_QR, border=2)
    assert len(matrix) == 41 and all(len(row) == 41 for row in matrix)
    assert not any(matrix[0]) and not any(matrix[-1])  # quiet zone is light
    assert matrix[2][2:9] == [True] * 7  # finder pattern's top edge


def test_qr_text_draws_light_as_blocks_and_invert_swaps() -> None:
    text = qr_text(KNOWN_QR, border=2)
    inverted = qr_text(KNOWN_QR, border=2, invert=True)
    swap = str.maketrans("█▀▄ ", " ▄▀█")
    assert text.translate(swap) == inverted
    assert text.split("\n")[0] == "█" * 41  # two rows of quiet zone on a dark terminal
