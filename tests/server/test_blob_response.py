"""A download's answer (:mod:`sealpost.server.blob_response`) over a real directory blob
store: the size in ``Content-Length``, one byte range (206, 416), the ranges it may ignore
answered whole, ``HEAD`` without a body, and a client that goes away mid-body stopping the
reading and closing the blob."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sealpost.server.blob_response import BlobResponse, RangeNotSatisfiable, byte_range
from sealpost.server.blobs import READ_CHUNK, DirectoryBlobStore, StoredBlob

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=990-", (990, 1000)),
        ("bytes=990-5000", (990, 1000)),
        ("bytes=-10", (990, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=999-999", (999, 1000)),
        ("bytes=0-0,5-9", None),  # several: may be ignored, and are
        ("items=0-9", None),
        ("bytes=9-0", None),
        ("bytes=-", None),
        ("bytes=x-1", None),
        ("bytes=" + "0" * 17 + "1-", (1, 1000)),
        # too long for int() (4,300 digits), or past 18: malformed, ignored
        pytest.param("bytes=" + "9" * 5000 + "-", None, id="bytes=5000 digits-"),
        pytest.param("bytes=0-" + "9" * 5000, None, id="bytes=0-5000 digits"),
        pytest.param("bytes=-" + "9" * 5000, None, id="bytes=-5000 digits"),
        pytest.param("bytes=" + "0" * 19 + "-", None, id="bytes=19 zeros-"),
        ("bytes=\u0661-\u0662", None),  # digits, but not ASCII ones
    ],
)
def test_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=999999999999999999-"]
)
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, SIZE)


def _serving(tmp_path: Path, data: bytes) -> tuple[Starlette, bytes]:
    store = DirectoryBlobStore(tmp_path / "blobs", upload_timeout=900)
    blob_id = os.urandom(32)

    async def put() -> None:
        await store.open()

        async def body() -> Any:
            yield data

        pending = await store.receive(blob_id, body(), limit=len(data))
        await pending.commit()

    asyncio.run(put())

    async def download(request: Request) -> Response:
        blob = await store.read(bytes.fromhex(request.path_params["id"]))
        assert blob is not None
        return BlobResponse(blob)

    return Starlette(routes=[Route("/b/{id}", download)]), blob_id


def test_answers_carry_the_size_and_one_range(tmp_path: Path) -> None:
    data = os.urandom(3 * READ_CHUNK + 5)
    app, blob_id = _serving(tmp_path, data)
    path = f"/b/{blob_id.hex()}"

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return [
                await client.get(path),
                await client.get(path, headers={"Range": f"bytes=10-{READ_CHUNK + 20}"}),
                await client.get(path, headers={"Range": "bytes=-7"}),
                await client.get(path, headers={"Range": f"bytes={len(data)}-"}),
                await client.get(path, headers={"Range": "bytes=0-1,5-9"}),
                await client.get(path, headers={"Range": "bytes=0-9", "If-Range": '"x"'}),
                await client.get(path, headers={"Range": "bytes=" + "1" * 5000 + "-"}),
                await client.head(path),
            ]

    whole, middle, suffix, past, several, if_range, huge, head = asyncio.run(main())
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-length"] == str(len(data))
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "application/octet-stream"
    assert "etag" not in whole.headers and "last-modified" not in whole.headers
    assert middle.status_code == 206 and middle.content == data[10 : READ_CHUNK + 21]
    assert middle.headers["content-range"] == f"bytes 10-{READ_CHUNK + 20}/{len(data)}"
    assert middle.headers["content-length"] == str(READ_CHUNK + 11)
    assert suffix.status_code == 206 and suffix.content == data[-7:]
    assert past.status_code == 416 and past.content == b""
    assert past.headers["content-range"] == f"bytes */{len(data)}"
    assert several.status_code == 200 and several.content == data
    assert if_range.status_code == 200 and if_range.content == data
    assert huge.status_code == 200 and huge.content == data  # malformed: ignored
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data))


class _OpenCount:
    """A stored blob that reports how much was read and whether it was closed."""

    def __init__(self, blob: StoredBlob) -> None:
        self.blob = blob
        self.pieces = 0
        self.closed = False

    @property
    def size(self) -> int:
        return self.blob.size

    async def chunks(self, start: int, stop: int) -> Any:
        async for piece in self.blob.chunks(start, stop):
            self.pieces += 1
            yield piece

    async def close(self) -> None:
        self.closed = True
        await self.blob.close()


def test_a_client_that_goes_away_stops_the_reading_and_closes_the_blob(tmp_path: Path) -> None:
    """The ASGI server's ``send`` blocks (a full socket buffer) after the first piece, then
    the client disconnects: the answer returns at once, having read one piece of 40."""
    store = DirectoryBlobStore(tmp_path / "blobs", upload_timeout=900)
    blob_id = os.urandom(32)
    data = os.urandom(40 * READ_CHUNK)

    async def main() -> tuple[_OpenCount, list[dict[str, Any]]]:
        await store.open()

        async def body() -> Any:
            yield data

        pending = await store.receive(blob_id, body(), limit=len(data))
        await pending.commit()
        opened = await store.read(blob_id)
        assert opened is not None
        counted = _OpenCount(opened)
        sent: list[dict[str, Any]] = []
        gone = asyncio.Event()
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not sent:
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                gone.set()  # the client leaves while its socket is full
                await never.wait()

        scope = {"type": "http", "method": "GET", "headers": [], "path": "/"}
        await asyncio.wait_for(BlobResponse(counted)(scope, receive, send), 5)
        return counted, sent

    counted, sent = asyncio.run(main())
    assert counted.closed
    assert counted.pieces == 1
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
