"""The sealpost relay server (DESIGN.md section 5).

An ASGI application (Starlette on uvicorn) that stores and forwards opaque envelopes. It
holds public keys and ciphertext only: no message content, no private key, and for sealed
messages no sender. Modules, one concept each:

- :mod:`.config` settings (flags, environment, TOML); :mod:`.run` the uvicorn runner
- :mod:`.app` routes and wiring; :mod:`.handlers` one module per resource;
  :mod:`.stream` the WebSocket
- :mod:`.authn` checking signed requests (the format, shared with clients, is
  :mod:`sealpost.protocol.signing`)
- :mod:`.storage` the storage interface and SQLite; :mod:`.fanout` wake-ups for sockets
- :mod:`.schema` every HTTP body and :mod:`.frames` every WebSocket frame, declared once
  (msgspec Structs: they decode the requests); :mod:`.routes` the route table;
  :mod:`.openapi` the document generated from those
- :mod:`.blobs` the blob store's interface and its directory implementation (attachment
  bytes), :mod:`.blob_response` a download's answer; :mod:`.ratelimit`, :mod:`.metrics`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sealpost.protocol.signing import sign_request, sign_websocket_challenge
from sealpost.server.config import ServerConfig, load_config

if TYPE_CHECKING:
    from sealpost.server.app import create_app

__all__ = ["ServerConfig", "create_app", "load_config", "sign_request", "sign_websocket_challenge"]


def __getattr__(name: str) -> Any:
    """``create_app`` is imported on first use: the package's pure parts (its config,
    which the command line reads to build its flags) then load without Starlette."""
    if name == "create_app":
        from sealpost.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
