"""The HTTP answer of a download: a :class:`~sealpost.server.blobs.StoredBlob` streamed.

``200`` with ``Content-Length`` (the client checks it against the pointer's size before a
byte) and ``Accept-Ranges: bytes``; one byte range (``Range: bytes=a-b``, ``a-``, ``-n``)
gives ``206`` with ``Content-Range``, a range that starts past the end ``416`` with
``Content-Range: bytes */SIZE``. A ``Range`` the answer may ignore (RFC 9110 14.2) is
ignored, and the whole blob sent: another unit, a malformed one (a number of more than 18
digits too), several ranges, or any
``If-Range`` (the answer carries no validator for it to match). ``HEAD`` gets the headers
alone. No ``ETag`` or ``Last-Modified``: a blob never changes, and its time of upload is
nobody's business.

The body is read piece by piece as the socket takes it (uvicorn's ``send`` waits while its
buffer is full), so a download holds one piece of memory; a client that goes away ends the
reading at once (the request's ``receive`` is watched for the disconnect, as Starlette's
own streaming answers do under ASGI 2.3). The blob is closed however the answer ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Final

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sealpost.server.blobs import StoredBlob

__all__ = ["BlobResponse", "RangeNotSatisfiable", "byte_range"]

#: ASCII digits, 18 at most (a byte position below 2**63): a longer number is malformed and
#: the header ignored, rather than a number int() refuses (over 4,300 digits) or a cost.
_RANGE: Final = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


class RangeNotSatisfiable(Exception):
    """A ``Range`` that asks for none of the blob's bytes (answered ``416``)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``[start, stop)`` that ``header`` (a ``Range`` value) asks of ``size`` bytes, or
    None to send them all; raises :class:`RangeNotSatisfiable` if it asks for none of
    them."""
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None:  # another unit, several ranges, or malformed: ignored
        return None
    first, last = found.groups()
    if first:
        start = int(first)
        stop = size if not last else int(last) + 1
        if last and stop <= start:
            return None  # "a-b" with b < a is invalid: ignored
        if start >= size:
            raise RangeNotSatisfiable
        return start, min(stop, size)
    if not last:
        return None  # "bytes=-"
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable
    return max(size - suffix, 0), size


class BlobResponse(Response):
    """``blob`` as the answer to the request it is called with (see the module
    docstring); it owns ``blob`` and closes it."""

    media_type = "application/octet-stream"

    def __init__(self, blob: StoredBlob) -> None:
        self.blob = blob
        self.status_code = 200
        self.background = None
        self.init_headers({"accept-ranges": "bytes", "content-length": str(blob.size)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._answer(scope, receive, send)
        finally:
            await self.blob.close()

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = self.blob.size
        status, headers = 200, self.raw_headers
        start, stop = 0, size
        request = Headers(scope=scope)
        try:
            asked = None if "if-range" in request else byte_range(request.get("range"), size)
        except RangeNotSatisfiable:
            status, start, stop = 416, 0, 0
            headers = [
                (b"content-range", f"bytes */{size}".encode()),
                (b"content-length", b"0"),
            ]
        else:
            if asked is not None:
                status, (start, stop) = 206, asked
                headers = [
                    (b"content-type", self.media_type.encode()),
                    (b"accept-ranges", b"bytes"),
                    (b"content-range", f"bytes {start}-{stop - 1}/{size}".encode()),
                    (b"content-length", str(stop - start).encode()),
                ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope["method"] == "HEAD" or start == stop:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        streaming = asyncio.ensure_future(self._stream(send, start, stop))
        watching = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((streaming, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            streaming.cancel()  # done already unless the client went away
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            with contextlib.suppress(asyncio.CancelledError):
                await streaming  # a failure of the reading is raised here

    async def _stream(self, send: Send, start: int, stop: int) -> None:
        pieces = self.blob.chunks(start, stop)
        async for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
