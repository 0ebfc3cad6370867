"""Strict decoding of request bodies and path parameters.

JSON bodies must be objects; every field is checked for type and encoding here, and every
failure becomes a 400 :class:`~sealpost.server.errors.ApiError` naming the field (never its
value). Binary fields travel as standard base64 with padding, account ids as lowercase or
uppercase hex.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sealpost.server.errors import ApiError, bad_request, too_large

__all__ = [
    "b64",
    "get_b64",
    "get_b64_list",
    "get_bool",
    "get_int",
    "get_list",
    "get_str",
    "parse_hex",
    "parse_json_object",
]

U32_MAX = 0xFFFFFFFF


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise bad_request(f"{what} is not valid base64") from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # also an integer over 4300 digits
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "malformed_json", "the request body must be a JSON object")
    return doc


def get_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    return value


def get_int(doc: dict[str, Any], key: str, *, lo: int = 0, hi: int = U32_MAX) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise bad_request(f"{key} must be an integer in {lo}..{hi}")
    return value


def get_bool(doc: dict[str, Any], key: str, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false")
    return value


def get_b64(doc: dict[str, Any], key: str, *, length: int | None = None) -> bytes:
    data = decode_b64(get_str(doc, key), key)
    if length is not None and len(data) != length:
        raise bad_request(f"{key} must be {length} bytes")
    return data


def get_list(doc: dict[str, Any], key: str, *, limit: int, required: bool = True) -> list[Any]:
    if key not in doc and not required:
        return []
    value = doc.get(key)
    if not isinstance(value, list):
        raise bad_request(f"{key} must be a list")
    if len(value) > limit:
        raise too_large(f"{key} holds more than {limit} items")
    return value


def get_b64_list(doc: dict[str, Any], key: str, *, limit: int) -> list[bytes]:
    items = get_list(doc, key, limit=limit, required=False)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise bad_request(f"{key} must be a list of base64 strings")
        out.append(decode_b64(item, key))
    return out


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_hex(value: str, length: int, what: str) -> bytes:
    """Exactly ``2 * length`` hex digits (``bytes.fromhex`` alone would skip whitespace
    and return fewer bytes)."""
    if len(value) != 2 * length or not _HEX_DIGITS.issuperset(value):
        raise bad_request(f"{what} must be {2 * length} hex digits")
    return bytes.fromhex(value)
