"""Peer text shown by the command line can neither forge a line nor drive the terminal
(issue 14 item 9): one rendering function, used by every command."""

from __future__ import annotations

import json

import pytest

from sealpost.cli.render import CONTINUATION, json_line, one_line, text_block

FORGED = "hi\n[12:00] bank: your code is 1234"
HOSTILE = [
    FORGED,
    "a\r[12:00] bank: x",
    "a\r\n[12:00] bank: x",
    "a\u2028[12:00] bank: x",
    "a\u2029b\x85c",
    "\x1b[31mred\x1b[0m",  # CSI colour
    "\x1b]52;c;ZXZpbA==\x07",  # OSC 52: write the clipboard
    "\x1b]0;title\x1b\\",  # OSC window title, ST-terminated
    "\x9b31m C1 CSI \x9d0;t\x9c",  # C1 controls
    "\u202eevil\u202c \u2066iso\u2069 \u200fmark",  # bidi override, isolate, mark
    "bell\x07 del\x7f nul\x00 bs\x08",
]
UNSAFE = {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}
UNSAFE |= set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
UNSAFE |= {"\u2028", "\u2029"}


@pytest.mark.parametrize("text", HOSTILE)
def test_one_line_carries_no_control_character(text: str) -> None:
    shown = one_line(text)
    assert not UNSAFE & set(shown)


@pytest.mark.parametrize("text", HOSTILE)
def test_a_message_body_cannot_start_a_line_of_its_own(text: str) -> None:
    shown = text_block(text)
    first, *rest = shown.split("\n")
    assert all(line.startswith(CONTINUATION) for line in rest)
    assert not (UNSAFE - {"\n"}) & set(shown)
    assert not first.startswith("[")


def test_the_forged_line_is_shown_as_a_continuation() -> None:
    assert text_block(FORGED) == f"hi\n{CONTINUATION}[12:00] bank: your code is 1234"
    assert one_line(FORGED) == "hi\\n[12:00] bank: your code is 1234"


def test_escapes_are_visible_and_ordinary_text_is_kept() -> None:
    assert one_line("\x1b[31mred") == "\\x1b[31mred"
    assert one_line("\u202eabc") == "\\u202eabc"
    assert one_line("\x9b") == "\\x9b"
    assert one_line("tab\there") == "tab here"
    family = "Grüße 👨\u200d👩\u200d👧 日本語 مرحبا"  # joiners, accents, RTL letters
    assert one_line(family) == family
    assert text_block(family) == family


@pytest.mark.parametrize("text", HOSTILE)
def test_json_output_is_exact_and_terminal_safe(text: str) -> None:
    line = json_line({"text": text, "name": "Grüße"})
    assert json.loads(line) == {"text": text, "name": "Grüße"}
    assert "\n" not in line and not UNSAFE & set(line)
    assert "Grüße" in line  # readable, not \\u-escaped where there is no need
