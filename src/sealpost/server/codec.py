"""Encodings shared by the handlers: base64 and hex fields, path parameters, JSON answers.

Request bodies are declared and decoded in :mod:`.schema`; what is left here is for
headers and path parameters, which are not JSON. Every failure is a 400
:class:`~sealpost.server.errors.ApiError` naming the field (never its value). Binary
fields travel as standard base64 with padding, ids as hex (either case).
"""

from __future__ import annotations

import base64
import binascii

from msgspec import Struct
from starlette.responses import Response

from sealpost.server.errors import bad_request
from sealpost.server.schema import encode

__all__ = ["b64", "decode_b64", "json_response", "parse_device_id", "parse_hex"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise bad_request(f"{what} is not valid base64") from None


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_hex(value: str, length: int, what: str) -> bytes:
    """Exactly ``2 * length`` hex digits (``bytes.fromhex`` alone would skip whitespace
    and return fewer bytes)."""
    if len(value) != 2 * length or not _HEX_DIGITS.issuperset(value):
        raise bad_request(f"{what} must be {2 * length} hex digits")
    return bytes.fromhex(value)


def parse_device_id(text: str) -> int:
    """A device id in a path: decimal digits only, at most 2**32 - 1."""
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > 0xFFFFFFFF:
        raise bad_request("device id must be a 32-bit unsigned integer")
    return int(text)


def json_response(value: Struct, status: int = 200) -> Response:
    """A response body declared in :mod:`.schema`, encoded by msgspec."""
    return Response(encode(value), status_code=status, media_type="application/json")
