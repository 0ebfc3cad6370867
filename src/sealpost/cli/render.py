"""How the command line shows text it did not write: data, never terminal control.

Message text, names, group names, file names, alarm details and server error messages
come from peers or from the server, either of which may be hostile. Printed raw, a
``\\n`` in a message forges a whole line (``[12:00] bank: your code is ...``), an ESC or
C1 byte starts an escape sequence the terminal obeys (colours, cursor moves, OSC 52
clipboard writes, window titles), and a bidi override reverses what follows it. So every
such value goes through one of two functions before it is printed:

:func:`text_block`
    a message body: each embedded line break (``\\n``, ``\\r``, ``\\r\\n``, U+0085,
    U+2028, U+2029) becomes a new line that starts with :data:`CONTINUATION`, which no
    message line starts with, so a continuation can never pass for a message of its own.
:func:`one_line`
    anything else (a name, a file name, a detail): line breaks are shown as ``\\n``.

Both show every other C0 or C1 control, DEL, the bidi embedding, override and isolate
characters, and the interlinear annotation characters as a visible escape (``\\x1b``,
``\\u202e``), and a tab as a space. Letters, emoji and joiners are kept as they are.

:func:`json_line` is JSON output: exact JSON (the value decodes to the very text that was
received), with the same characters escaped as ``\\uXXXX`` so that a JSON line read in a
terminal cannot drive it either (:func:`json.dumps` leaves C1 controls and U+2028 raw).
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

__all__ = ["CONTINUATION", "json_line", "one_line", "text_block", "timestamp"]

#: The start of every continuation line of a multi-line message.
CONTINUATION = "    │ "

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_ANNOTATION = "\ufff9\ufffa\ufffb"
# every character a terminal may act on, or that changes how the rest of a line reads
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_ANNOTATION}\u2028\u2029\ud800-\udfff]")
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\t":
        return " "
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def one_line(value: object) -> str:
    """``value`` as text that stays on one line and carries no control character."""
    return _UNSAFE.sub(_escape, _BREAK.sub("\\\\n", str(value)))


def text_block(value: str) -> str:
    """A message body: its lines joined by a new line and :data:`CONTINUATION`."""
    return ("\n" + CONTINUATION).join(one_line(line) for line in _BREAK.split(value))


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_line(doc: Any) -> str:
    """One JSON document on one line, safe to show in a terminal, exact to a parser."""
    # json.dumps escapes C0 controls itself; the rest can only occur inside strings, where
    # a \\uXXXX escape decodes to the same character (lone surrogates too).
    return _UNSAFE.sub(_json_escape, json.dumps(doc, ensure_ascii=False))


def timestamp(ms: int) -> str:
    """A local time for a message or an alarm."""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
