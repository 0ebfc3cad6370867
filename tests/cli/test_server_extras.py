"""``sealpost server --database`` / ``--redis`` where the ``postgres`` extra is not
installed (asyncpg, redis hidden from the import system): one line saying what to install,
exit status 1, no ``ModuleNotFoundError`` traceback; an import error of anything else is
not dressed up as a missing extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sealpost.cli import main

DATABASE = "postgresql://nobody@127.0.0.1:1/none"  # never connected to: refused before that
REDIS = "redis://127.0.0.1:1/0"


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """``import package`` fails as if it were not installed, and every module of ours that
    imports it is imported afresh (then restored, with ``sys.modules``, after the test)."""
    ours = (
        "sealpost.server.storage.p",
        "sealpost.server.fanout.redis",
        "sealpost.server.ratelimit_",
    )
    for name in list(sys.modules):
        if name.partition(".")[0] == package or name.startswith(ours):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("package", "flags", "said"),
    [
        ("asyncpg", ["--database", DATABASE], "--database needs asyncpg"),
        ("redis", ["--database", DATABASE, "--redis", REDIS], "--redis needs redis"),
    ],
)
def test_a_missing_extra_is_one_line_saying_what_to_install(
    package: str,
    flags: list[str],
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _hide(monkeypatch, package)
    code = main(["server", "--data", str(tmp_path / "data"), "--port", "0", *flags])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        f"sealpost: cannot start the server: {said}, which is not installed: "
        "pip install 'sealpost[postgres]'\n"
    )


def test_another_import_error_is_not_called_a_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in sys.modules if n.startswith("sealpost.server.storage.p")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sealpost.server.storage.pg_keys", None)  # type: ignore[arg-type]
    with pytest.raises(ImportError, match=r"sealpost\.server\.storage\.pg_keys"):
        main(["server", "--data", str(tmp_path / "data"), "--port", "0", "--database", DATABASE])
