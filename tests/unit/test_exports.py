"""Each package's ``__all__`` is complete and every name in it exists (httpx's
test_exported_members)."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "sealpost.crypto",
    "sealpost.protocol",
    "sealpost.protocol.errors",
    "sealpost.protocol.wire",
    "sealpost.protocol.keys",
    "sealpost.protocol.session",
    "sealpost.protocol.sealed",
    "sealpost.protocol.content",
    "sealpost.protocol.safety",
    "sealpost.client",
    "sealpost.client.errors",
    "sealpost.client.store",
    "sealpost.app",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    for exported in module.__all__:
        assert hasattr(module, exported), f"{name}.__all__ lists missing {exported}"


@pytest.mark.parametrize("name", ["sealpost.crypto", "sealpost.protocol", "sealpost.client.store"])
def test_all_is_complete(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
    }
    missing = public - set(module.__all__)
    assert not missing, f"{name} exposes {sorted(missing)} without listing them in __all__"


def test_every_error_derives_from_protocol_error() -> None:
    errors = importlib.import_module("sealpost.protocol.errors")
    for exported in errors.__all__:
        assert issubclass(getattr(errors, exported), errors.ProtocolError)
