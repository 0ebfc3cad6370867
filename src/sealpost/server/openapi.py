"""The OpenAPI 3.1 document served at ``/openapi.json``, generated, never written by hand.

Paths come from the route table (:data:`.routes.OPERATIONS`), request and response bodies
from the msgspec declarations that decode and encode them (:mod:`.schema`, through
``msgspec.json.schema_components``), and the WebSockets from :data:`.frames.WEBSOCKETS`
under ``x-websockets`` (OpenAPI has no WebSocket object). Every route can answer 429 and
503 ``busy`` (both with ``Retry-After``) and 500; the other error statuses are per route.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from sealpost.protocol.signing import (
    ACCOUNT_HEADER,
    DEVICE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from sealpost.server.frames import WEBSOCKETS
from sealpost.server.routes import OCTETS, OPERATIONS, TEXT, Operation
from sealpost.server.schema import AccountNotFoundError, ErrorBody

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{name}"
_ERRORS = {
    400: "malformed_json, invalid_request (the field is named) or invalid_key",
    401: "unauthorized, clock_skew or replayed",
    403: "forbidden: sealed delivery refused",
    404: "not_found",
    408: "timeout: the body did not arrive within body_timeout (upload_timeout)",
    409: "a conflict (the code says which)",
    410: "gone: the new device left",
    413: "too_large: a body, list or item over its limit",
    429: "rate_limited",
    500: "internal: a bug, logged without request data",
    503: "busy (the server is at max_connections), unavailable or upload_lost; try again",
    507: "queue_full, attachment_quota or insufficient_storage (low on disk)",
}
#: The request-signature headers (sealpost.protocol.signing), all five or none.
_AUTH_HEADERS = {
    "account": (ACCOUNT_HEADER, "account id, 32 hex digits"),
    "device": (DEVICE_HEADER, "device id, decimal"),
    "timestamp": (TIMESTAMP_HEADER, "seconds since the epoch, decimal"),
    "nonce": (NONCE_HEADER, "16 random bytes, 32 hex digits, used once"),
    "signature": (SIGNATURE_HEADER, "base64 Ed25519 signature by the device signing key"),
}
_SIGNED: list[dict[str, list[str]]] = [{name: [] for name in _AUTH_HEADERS}]


def _schema_of(kind: Any, schemas: dict[str, Any], cache: dict[Any, Any]) -> Any:
    if kind not in cache:
        (found,), components = msgspec.json.schema_components([kind], ref_template=_REF)
        schemas.update(components)
        cache[kind] = found
    return cache[kind]


def _content(kind: Any, schemas: dict[str, Any], cache: dict[Any, Any]) -> dict[str, Any]:
    if kind == OCTETS:
        return {OCTETS: {"schema": {"type": "string", "contentMediaType": OCTETS}}}
    if kind == TEXT:
        return {TEXT: {"schema": {"type": "string"}}}
    return {"application/json": {"schema": _schema_of(kind, schemas, cache)}}


def _error(status: int, op: Operation, schemas: dict[str, Any], cache: dict[Any, Any]) -> Any:
    schema = _schema_of(ErrorBody, schemas, cache)
    other = dict(op.other_bodies).get(status)
    if other is not None:  # mismatched_devices on a send; /healthz degraded
        schema = {"oneOf": [schema, _schema_of(other, schemas, cache)]}
    if status == 404 and op.handler == "accounts.lookup":  # with the proof of absence
        schema = {"oneOf": [schema, _schema_of(AccountNotFoundError, schemas, cache)]}
    answer: dict[str, Any] = {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": schema}},
    }
    if status in (429, 503):
        answer["headers"] = {
            "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
        }
    return answer


def _operation(op: Operation, schemas: dict[str, Any], cache: dict[Any, Any]) -> dict[str, Any]:
    placeholders = re.findall(r"{(\w+)}", op.path)
    declared = [p.name for p in op.params if p.where == "path"]
    if placeholders != declared:
        raise ValueError(f"{op.method} {op.path}: path parameters {declared}")
    ok: dict[str, Any] = {"description": "success"}
    if op.response is not None:
        ok["content"] = _content(op.response, schemas, cache)
    responses = {str(op.status): ok}
    always = {429, 500, 503} | ({408} if op.body is not None else set())
    for status in sorted({*op.errors, *always}):
        responses[str(status)] = _error(status, op, schemas, cache)
    out: dict[str, Any] = {
        "operationId": op.handler,
        "summary": op.summary,
        "responses": responses,
        "security": {"none": [], "required": _SIGNED, "optional": [{}, *_SIGNED]}[op.auth],
    }
    if op.params:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": _schema_of(p.kind, schemas, cache),
            }
            for p in op.params
        ]
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": _content(op.body, schemas, cache)}
    return out


def _websockets(schemas: dict[str, Any], cache: dict[Any, Any]) -> dict[str, Any]:
    return {
        path: {
            "summary": socket["summary"],
            "client_frames": [_schema_of(f, schemas, cache) for f in socket["client"]],
            "server_frames": [_schema_of(f, schemas, cache) for f in socket["server"]],
            "close_codes": socket["close"],
        }
        for path, socket in WEBSOCKETS.items()
    }


def openapi_document(version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    cache: dict[Any, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas, cache)
    websockets = _websockets(schemas, cache)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sealpost relay",
            "version": version,
            "description": "Request bodies are decoded strictly: unknown fields are refused "
            "(invalid_request naming the field). Errors are {error, message}; the message "
            "names the field, never its value. See docs/PROTOCOL.md.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                name: {"type": "apiKey", "in": "header", "name": header, "description": text}
                for name, (header, text) in _AUTH_HEADERS.items()
            },
        },
        "x-websockets": websockets,
    }
