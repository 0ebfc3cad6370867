"""QR codes in a terminal, drawn with Unicode half blocks (two module rows per line).

Dark modules are drawn as the terminal's background and light ones as blocks, with a quiet
zone around the code, so it scans on a dark-background terminal; ``invert=True`` for light
backgrounds. The code itself comes from ``segno``.
"""

from __future__ import annotations

import segno

__all__ = ["qr_matrix", "qr_text"]

_BLOCKS = {(False, False): "█", (False, True): "▀", (True, False): "▄", (True, True): " "}


def qr_matrix(data: bytes | str, border: int = 2) -> list[list[bool]]:
    """The code's modules (``True`` = dark), with a ``border`` of light modules."""
    code = segno.make(data, error="m", micro=False)
    return [[bool(v) for v in row] for row in code.matrix_iter(border=border)]


def qr_text(data: bytes | str, *, border: int = 2, invert: bool = False) -> str:
    """The code as lines of half blocks (``█``, ``▀``, ``▄``, space), one line per two
    module rows, to print on a dark-background terminal (``invert=True`` for a light one)."""
    matrix = qr_matrix(data, border)
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))
    lines = []
    for top, bottom in zip(matrix[::2], matrix[1::2], strict=True):
        line = []
        for t, b in zip(top, bottom, strict=True):
            if invert:
                t, b = not t, not b
            line.append(_BLOCKS[(t, b)])
        lines.append("".join(line))
    return "\n".join(lines)
