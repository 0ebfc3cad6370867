"""The test tree itself: pytest imports test modules by their file name (the folders have
no ``__init__.py``), so two test files of one name in different folders stop the whole
suite at collection ("import file mismatch"). Caught here, in the fast unit run, rather
than only by a whole-suite run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_file_name() -> None:
    where: defaultdict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if "__snapshots__" in path.parts:
            continue
        if path.name.startswith("test_"):
            where[path.name].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
