"""docs/OPERATIONS.md documents every server setting (issue 14: five were missing)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from sealpost.server.config import ServerConfig, field_doc

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"


def test_operations_documents_every_setting() -> None:
    text = OPERATIONS.read_text()
    table = text[text.index("| setting |") : text.index("```toml")]
    documented = set(re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)?", table, re.MULTILINE))
    names = {name for pair in documented for name in pair if name}
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    assert fields - names == set(), "settings missing from docs/OPERATIONS.md"
    assert names - fields == set(), "docs/OPERATIONS.md names settings that do not exist"


def test_every_setting_has_its_reason() -> None:
    for f in dataclasses.fields(ServerConfig):
        assert field_doc(f.name), f.name
