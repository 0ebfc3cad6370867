"""No SQL in the client outside ``client/store/`` (issue 15): every statement is a method of
a repository. The scan finds SQL in any string literal (f-strings too) of the client's
modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sealpost.client

CLIENT = Path(sealpost.client.__file__).parent
SQL = re.compile(
    r"\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK"
    r"|SAVEPOINT|RELEASE)\s"
)


def sql_outside_the_store() -> list[str]:
    found = []
    for path in sorted(CLIENT.rglob("*.py")):
        relative = path.relative_to(CLIENT)
        if relative.parts[0] == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if literal and SQL.match(node.value):
                found.append(f"{relative}:{node.lineno}: {node.value.split()[0]}")
    return found


def test_the_scan_finds_sql() -> None:
    """The scan itself: it sees statements in plain and f-string literals, not prose."""
    assert SQL.match("SELECT x FROM t") and SQL.match("\n  DELETE FROM t")
    assert SQL.match("INSERT OR IGNORE INTO t")
    assert not SQL.match("Select the conversation") and not SQL.match("UPDATED")
    store_sql = [
        node.value
        for path in (CLIENT / "store").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value)
    ]
    assert len(store_sql) > 20  # the repositories' statements are all found


def test_no_sql_in_the_client_outside_the_store() -> None:
    assert sql_outside_the_store() == []
