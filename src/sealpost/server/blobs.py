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

__all__ = ["BlobStore", "BlobTooLarge", "PendingBlob"]

ID_LEN = 32


class BlobTooLarge(Exception):
    pass


class PendingBlob:
    """A blob being written. ``commit`` makes it final, ``discard`` removes it."""

    def __init__(self, tmp: Path, final: Path) -> None:
        self.tmp = tmp
        self.final = final
        self.size = 0
        self.sha256 = hashlib.sha256()

    def commit(self) -> None:
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


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
        self, blob_id: bytes, chunks: AsyncIterator[bytes], *, limit: int
    ) -> PendingBlob:
        """Write ``chunks`` to a temporary file; raise :class:`BlobTooLarge` (having removed
        it) as soon as more than ``limit`` bytes arrived."""
        final = self.path(blob_id)
        pending = PendingBlob(final.with_suffix(".part"), final)
        try:
            with pending.tmp.open("xb") as fh:
                async for chunk in chunks:
                    pending.size += len(chunk)
                    if pending.size > limit:
                        raise BlobTooLarge
                    pending.sha256.update(chunk)
                    fh.write(chunk)
                fh.flush()
                await asyncio.to_thread(os.fsync, fh.fileno())
        except BaseException:
            pending.discard()
            raise
        return pending

    def delete(self, blob_id: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(blob_id).unlink()
