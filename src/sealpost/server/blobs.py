"""Attachment blobs on disk: ``DATA/blobs/<64 hex digits>``.

Uploads stream into a temporary file in the same directory (so the final rename is atomic)
with the size limit enforced chunk by chunk; the whole blob is never in memory. A blob
becomes visible only after it is fsynced, renamed and its metadata committed. Ids are 32
random bytes chosen by the server, so a blob is only reachable by whoever was given its id;
contents are ciphertext the server cannot read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["BlobStore", "BlobTooLarge", "PendingBlob"]

ID_LEN = 32


#: While an upload streams in, what was written is flushed to disk in the background each
#: time this much more arrived (one flush at a time, in a worker thread), so the fsync that
#: makes the blob durable before it becomes visible finds little left to write: the disk
#: works while the network does, instead of after it.
FLUSH_EVERY = 8 * 1024 * 1024


class BlobTooLarge(Exception):
    pass


class PendingBlob:
    """A blob being written. ``commit`` makes it final, ``discard`` removes it. ``size``
    and ``sha256`` are the blob's (without ``trailer``, the bytes withheld after it)."""

    def __init__(self, tmp: Path, final: Path) -> None:
        self.tmp = tmp
        self.final = final
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.trailer = b""

    def commit(self) -> None:
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _absorb(fh: BinaryIO, pending: PendingBlob, data: bytes | memoryview) -> None:
    if not data:
        return
    pending.size += len(data)
    pending.sha256.update(data)
    view = memoryview(data)
    while view:  # an unbuffered write may be short
        view = view[fh.write(view) :]


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob("*.part"):  # uploads cut off by a crash
            leftover.unlink()

    def path(self, blob_id: bytes) -> Path:
        assert len(blob_id) == ID_LEN
        return self.root / blob_id.hex()

    async def receive(
        self, blob_id: bytes, chunks: AsyncIterator[bytes], *, limit: int, withhold: int = 0
    ) -> PendingBlob:
        """Write ``chunks`` to a temporary file; raise :class:`BlobTooLarge` (having removed
        it) as soon as more than ``limit`` bytes of blob arrived. The last ``withhold`` bytes
        of the stream are not part of the blob (neither written nor hashed): they are left
        in :attr:`PendingBlob.trailer` (a trailing signature). Hashing and writing happen in
        the event loop, piece by piece as uvicorn hands them over (about 256 KiB each):
        handing them to a thread measured slower on two cores (bench/attachment_bench.py);
        flushing to disk happens in the background (:data:`FLUSH_EVERY`)."""
        final = self.path(blob_id)
        pending = PendingBlob(final.with_suffix(".part"), final)
        loop = asyncio.get_running_loop()
        flushing: asyncio.Future[None] | None = None
        flushed = 0
        tail = b""
        try:
            with pending.tmp.open("xb", buffering=0) as fh:
                async for chunk in chunks:
                    parts: tuple[bytes | memoryview, ...] = (chunk,)
                    if withhold:
                        if len(chunk) >= withhold:
                            parts, tail = (tail, memoryview(chunk)[:-withhold]), chunk[-withhold:]
                        else:
                            joined = tail + chunk
                            parts, tail = (joined[:-withhold],), joined[-withhold:]
                    for part in parts:
                        if pending.size + len(part) > limit:
                            raise BlobTooLarge
                        _absorb(fh, pending, part)
                    if pending.size - flushed >= FLUSH_EVERY and (
                        flushing is None or flushing.done()
                    ):  # write back in the background what is written so far
                        flushed = pending.size
                        flushing = loop.run_in_executor(None, os.fdatasync, fh.fileno())
                if flushing is not None:
                    await flushing
                    flushing = None
                await loop.run_in_executor(None, os.fsync, fh.fileno())
        except BaseException:
            if flushing is not None:  # let the flush finish with the file first
                with contextlib.suppress(BaseException):
                    await asyncio.shield(flushing)
            pending.discard()
            raise
        pending.trailer = tail
        return pending

    def delete(self, blob_id: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(blob_id).unlink()
