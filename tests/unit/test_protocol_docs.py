"""docs/PROTOCOL.md stays true to the code: every wire type in its table, every error code
the server answers listed (there and in sealpost.server.errors), every close code."""

from __future__ import annotations

import re
from pathlib import Path

from sealpost.protocol.wire import WireType
from sealpost.server import errors
from sealpost.server.frames import WEBSOCKETS

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = (ROOT / "docs" / "PROTOCOL.md").read_text()


def _codes_in_server() -> set[str]:
    codes = set()
    for path in (ROOT / "src" / "sealpost" / "server").rglob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'error_response\(\s*\d{3},\s*"([a-z_]+)"', text))
    return codes


def test_every_wire_type_is_in_the_type_table() -> None:
    table = PROTOCOL[PROTOCOL.index("| type | structure | size |") :]
    table = table[: table.index("\n\n")]
    for wire_type in WireType:
        assert f"| `0x{wire_type:02x}` |" in table, wire_type.name


def test_every_error_code_is_documented() -> None:
    codes = _codes_in_server()
    assert {"invalid_request", "already_provisioned", "gone", "unavailable"} <= codes
    for code in codes:
        assert f"``{code}``" in (errors.__doc__ or ""), code
        assert f"`{code}`" in PROTOCOL, code


def test_every_close_code_is_documented() -> None:
    for path, socket in WEBSOCKETS.items():
        for code in socket["close"]:
            assert code in PROTOCOL, (path, code)
    assert "4403 the device was removed" in PROTOCOL
