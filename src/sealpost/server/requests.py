"""Reading requests safely: bounded bodies and the client's address.

A body is read chunk by chunk and refused (413) as soon as it passes its limit, whatever
``Content-Length`` claimed, so a client cannot make the server buffer more than the limit;
and it must arrive within the deadline the application put in the request's scope under
:data:`BODY_TIMEOUT` (``body_timeout``), else 408 and the connection is closed, so a client
trickling a body byte by byte cannot hold a connection.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, HTTPConnection, Request

from sealpost.server.errors import ApiError, too_large

__all__ = ["BODY_TIMEOUT", "body_too_slow", "client_address", "raw_target", "read_body"]

#: The scope key of the seconds a body may take (set by :mod:`sealpost.server.app`).
BODY_TIMEOUT = "sealpost.body_timeout"


def body_too_slow() -> ApiError:
    return ApiError(
        408,
        "timeout",
        "the request body did not arrive in time",
        headers={"Connection": "close"},
    )


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid_request", "bad Content-Length")
        if int(declared) > limit:
            raise too_large(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(request.scope.get(BODY_TIMEOUT)):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(f"request body over {limit} bytes")
                chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "invalid_request", "client disconnected") from None
    except TimeoutError:
        raise body_too_slow() from None
    return b"".join(chunks)


def client_address(conn: HTTPConnection) -> str:
    """The peer address (after trusted proxy headers, which uvicorn applies)."""
    return conn.client.host if conn.client is not None else "unknown"


def raw_target(conn: HTTPConnection) -> str:
    """The request target exactly as sent: raw path plus query, for signature checks."""
    raw = conn.scope.get("raw_path") or conn.scope["path"].encode("utf-8")
    query = conn.scope.get("query_string") or b""
    target: bytes = raw + (b"?" + query if query else b"")
    return target.decode("latin-1")
