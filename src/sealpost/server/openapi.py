"""The OpenAPI 3.1 description of every HTTP endpoint, served at ``/openapi.json``.

Written by hand, next to the routes in :mod:`.app`: a test checks that every route is
described. The WebSocket frames are described in :mod:`.stream` and docs/PROTOCOL.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_B64 = {"type": "string", "format": "byte"}
_AUTH: list[dict[str, list[str]]] = [{"deviceSignature": []}]
_AUTH_OPTIONAL: list[dict[str, list[str]]] = [{}, {"deviceSignature": []}]


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def _op(
    summary: str,
    ok: dict[str, dict[str, Any]],
    *,
    errors: tuple[int, ...] = (400, 429),
    security: list[dict[str, list[str]]] | None = None,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**ok, **_errors(*errors)}}
    op["security"] = security if security is not None else []
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": name != "after",
        "description": description,
        "schema": {"type": "integer", "minimum": 0},
    }


def _json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": required, "properties": properties}
            }
        },
    }


_PREKEYS = {
    "signed_prekey": {**_B64, "description": "wire SignedPreKey"},
    "kem_last_resort": {**_B64, "description": "wire KemPreKey, kind last-resort"},
    "one_time_prekeys": {"type": "array", "items": {**_B64, "description": "wire OneTimePreKey"}},
    "kem_one_time_prekeys": {"type": "array", "items": {**_B64, "description": "wire KemPreKey"}},
}


def openapi_document(version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Liveness and storage check", {"200": _json("ok")}, errors=())},
        "/metrics": {
            "get": _op(
                "Prometheus metrics (counts and latencies only)",
                {"200": {"description": "text exposition format"}},
                errors=(),
            )
        },
        "/openapi.json": {"get": _op("This document", {"200": _json("OpenAPI 3.1")}, errors=())},
        "/v1/accounts": {
            "post": _op(
                "Register an account with its first device (signed by that device)",
                {"201": _json("registered")},
                errors=(400, 401, 409, 413, 429),
                security=_AUTH,
                body=_json_body(
                    {
                        "username": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{3,32}$"},
                        "account_key": {**_B64, "description": "Ed25519 AIK, 32 bytes"},
                        "certificate": {**_B64, "description": "wire DeviceCertificate"},
                        "delivery_token": {**_B64, "description": "32 bytes"},
                        "sealed_from_anyone": {"type": "boolean", "default": True},
                        **_PREKEYS,
                    },
                    [
                        "username",
                        "account_key",
                        "certificate",
                        "delivery_token",
                        "signed_prekey",
                        "kem_last_resort",
                    ],
                ),
            )
        },
        "/v1/accounts/{username}": {
            "get": _op(
                "Look up an account and its certified devices by username",
                {"200": _json("account")},
                errors=(404, 429),
                params=[_path_param("username", "case-insensitive")],
            )
        },
        "/v1/devices": {
            "post": _op(
                "Add a device certified by the registered account key (signed by the new device)",
                {"201": _json("registered")},
                errors=(400, 401, 404, 409, 413, 429),
                security=_AUTH,
                body=_json_body(
                    {"certificate": {**_B64, "description": "wire DeviceCertificate"}, **_PREKEYS},
                    ["certificate", "signed_prekey", "kem_last_resort"],
                ),
            )
        },
        "/v1/devices/{device_id}": {
            "delete": _op(
                "Remove a device with the account key's signed revocation (wire "
                "DeviceRevocation); its prekeys and queue go, its id is never reused",
                {"200": _json("removed")},
                errors=(400, 401, 404, 409, 413, 429),
                security=_AUTH,
                body=_json_body(
                    {"revocation": {**_B64, "description": "wire DeviceRevocation"}},
                    ["revocation"],
                ),
            )
        },
        "/v1/link/{channel_id}": {
            "get": _op(
                "The ML-KEM public key a new device opened a link channel with",
                {"200": _json("the key")},
                errors=(400, 401, 404, 429),
                security=_AUTH,
            ),
            "put": _op(
                "Forward a provisioning message to the new device waiting on the channel",
                {"200": _json("delivered")},
                errors=(400, 401, 404, 409, 410, 413, 429),
                security=_AUTH,
                body=_json_body(
                    {"body": {**_B64, "description": "provisioning message"}}, ["body"]
                ),
            ),
        },
        "/v1/messages/multi": {
            "put": _op(
                "A multi-recipient send. With body (a group-sealed envelope, 0x01 0x23 ...) "
                "every recipient [account hex, device id] gets the body as it is; the legacy "
                "form has shared and [account hex, device id, 48-byte wrap], and each device "
                "gets 0x01 0x22 || wrap || shared",
                {"200": _json("stored")},
                errors=(400, 403, 404, 409, 413, 429, 507),
                body=_json_body(
                    {
                        "body": _B64,
                        "shared": _B64,
                        "recipients": {
                            "type": "array",
                            "items": {
                                "type": "array",
                                "description": "[account hex, id] or, with shared, "
                                "[account hex, id, wrap]",
                            },
                        },
                        "tokens": {"type": "object"},
                    },
                    ["recipients"],
                ),
            )
        },
        "/v1/keys": {
            "put": _op(
                "Upload prekeys (each verified under the device signing key)",
                {"200": _json("the device's prekey stock")},
                errors=(400, 401, 409, 413, 429),
                security=_AUTH,
                body=_json_body(_PREKEYS, []),
            )
        },
        "/v1/keys/status": {
            "get": _op(
                "This device's prekey stock and whether to refill",
                {"200": _json("stock")},
                errors=(401, 429),
                security=_AUTH,
            )
        },
        "/v1/keys/{account_id}/{device_id}": {
            "get": _op(
                "Fetch a prekey bundle; consumes one one-time prekey of each kind",
                {"200": _json("bundle", {"type": "object", "properties": {"bundle": _B64}})},
                errors=(400, 401, 404, 429),
                security=_AUTH_OPTIONAL,
                params=[
                    _path_param("account_id", "32 hex digits"),
                    _path_param("device_id", "decimal"),
                ],
            )
        },
        "/v1/messages": {
            "put": _op(
                "Send envelopes, one per destination device; sealed (unauthenticated, with "
                "X-Sealpost-Delivery-Token) or signed. Answered after durable commit.",
                {"200": _json("stored")},
                errors=(400, 401, 403, 404, 409, 413, 429, 507),
                security=_AUTH_OPTIONAL,
                body=_json_body(
                    {
                        "messages": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["account_id", "device_id", "body"],
                                "properties": {
                                    "account_id": {"type": "string"},
                                    "device_id": {"type": "integer"},
                                    "body": _B64,
                                },
                            },
                        }
                    },
                    ["messages"],
                ),
            ),
            "get": _op(
                "Fetch this device's queued messages, oldest first",
                {"200": _json("messages")},
                errors=(401, 429),
                security=_AUTH,
            ),
        },
        "/v1/messages/{message_id}": {
            "delete": _op(
                "Acknowledge (delete) a message from this device's queue",
                {"204": {"description": "deleted"}},
                errors=(400, 401, 404, 429),
                security=_AUTH,
                params=[_path_param("message_id", "32 hex digits")],
            )
        },
        "/v1/certificate/sender": {
            "get": _op(
                "Issue a short-lived sender certificate for sealed sender",
                {"200": _json("certificate")},
                errors=(401, 429),
                security=_AUTH,
            )
        },
        "/v1/certificate/server": {
            "get": _op("The server's Ed25519 public key", {"200": _json("key")}, errors=(429,))
        },
        "/v1/log/key": {
            "get": _op("The key-transparency log's Ed25519 public key", {"200": _json("key")})
        },
        "/v1/log/head": {
            "get": _op("The newest signed tree head of the log", {"200": _json("tree head")})
        },
        "/v1/log/consistency": {
            "get": _op(
                "RFC 9162 consistency proof between two tree sizes",
                {"200": _json("proof")},
                errors=(400, 429),
                params=[_query_param("from", "smaller size"), _query_param("to", "larger size")],
            )
        },
        "/v1/log/inclusion": {
            "get": _op(
                "RFC 9162 inclusion proof of an entry at a tree size",
                {"200": _json("proof")},
                errors=(400, 429),
                params=[_query_param("index", "leaf index"), _query_param("size", "tree size")],
            )
        },
        "/v1/log/accounts/{account_id}": {
            "get": _op(
                "An account's log entries, with what each commits to and its inclusion proof",
                {"200": _json("entries and the head their proofs are against")},
                errors=(400, 429),
                params=[
                    _path_param("account_id", "32 hex digits"),
                    _query_param("after", "only entries with a larger index"),
                ],
            )
        },
        "/v1/attachments": {
            "post": _op(
                "Upload an encrypted attachment (streamed; signed over its SHA-256)",
                {"201": _json("attachment id")},
                errors=(400, 401, 413, 429),
                security=_AUTH,
                body={
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                },
            )
        },
        "/v1/attachments/{attachment_id}": {
            "get": _op(
                "Download an attachment by its random id",
                {"200": {"description": "the blob"}},
                errors=(400, 404, 429),
                params=[_path_param("attachment_id", "64 hex digits")],
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "sealpost relay", "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "deviceSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Sealpost-Signature",
                    "description": "Ed25519 request signature; see sealpost.server.auth",
                }
            },
        },
        "x-websocket": {"/v1/stream": "frames described in sealpost.server.stream"},
    }
