"""The client stands apart from the server (DESIGN.md section 7): ``sealpost.client`` imports
nothing from ``sealpost.server``, importing it (or running a client command of the CLI)
loads neither Starlette nor uvicorn, and the request signing both sides need lives in
``sealpost.protocol.signing``, which imports neither."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "sealpost"
SERVER_ONLY = ("starlette", "uvicorn", "uvloop", "httptools", "asyncpg", "redis")


def _loaded_after(code: str) -> list[str]:
    """The top-level packages and ``sealpost.server`` modules loaded by ``code``, run in a
    fresh interpreter (this one has long imported the server for other tests)."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in " + repr(SERVER_ONLY) + " or m.startswith('sealpost.server'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def _server_only(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m.split(".")[0] in SERVER_ONLY]


@pytest.mark.parametrize(
    "module",
    [
        "sealpost.client",
        "sealpost.client.client",
        "sealpost.client.transport",
        "sealpost.client.sockets",
        "sealpost.protocol.signing",
    ],
)
def test_importing_the_client_loads_no_server(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert loaded == [], f"import {module} loaded {loaded}"


def test_importing_the_cli_loads_neither_starlette_nor_uvicorn() -> None:
    """The command line builds the ``server`` command's flags from the server's config
    (a pure module); the server itself is imported only when ``sealpost server`` runs."""
    loaded = _loaded_after("import sealpost.cli, sealpost.cli.parser")
    assert _server_only(loaded) == []
    assert set(loaded) <= {"sealpost.server", "sealpost.server.config"}


def test_a_client_command_loads_neither_starlette_nor_uvicorn(tmp_path: Path) -> None:
    profile = tmp_path / "nobody"
    code = (
        "import contextlib\n"
        "from sealpost.cli import main\n"
        "with contextlib.suppress(SystemExit):\n"
        f"    main(['--profile', {str(profile)!r}, 'whoami'])\n"
    )
    loaded = _loaded_after(code)
    assert _server_only(loaded) == []


def test_the_client_sources_import_nothing_from_the_server() -> None:
    """Also the imports inside functions, which a fresh import does not run."""
    offenders = []
    for path in [*sorted((SRC / "client").rglob("*.py")), SRC / "protocol" / "signing.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                names = [node.module]
            for name in names:
                if name.startswith("sealpost.server") or name.split(".")[0] in SERVER_ONLY:
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    assert offenders == []


def test_the_server_imports_nothing_from_the_client() -> None:
    offenders = []
    for path in sorted((SRC / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("sealpost.client", "sealpost.cli")
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {node.module}")
    assert offenders == []


def test_the_server_checks_what_the_client_signs() -> None:
    """One format, one module: the server's checks use the very functions the client's
    transport signs with (no second copy of the signed message to drift)."""
    from sealpost.protocol import signing
    from sealpost.server import authn, stream
    from sealpost.server.handlers import attachments

    assert authn.request_message_for_digest is signing.request_message_for_digest
    assert authn.parse_auth_headers is signing.parse_auth_headers
    assert stream.websocket_message is signing.websocket_message
    assert attachments.trailer_message is signing.trailer_message
