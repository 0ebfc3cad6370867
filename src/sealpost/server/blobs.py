"""The blob store: where attachment bytes live, behind an interface of whole operations.

Handlers see only :class:`BlobStore` (receive an upload, read a blob with its size, delete
one, sweep stale partial uploads) and the objects it hands out, :class:`PendingBlob` and
:class:`StoredBlob`; never a path. :class:`DirectoryBlobStore` implements it over one
directory, ``DATA/blobs/<64 hex digits>``, which several relay processes may share (a
mounted volume). An object store can implement the same interface later with the same
guarantees; none is built.

What holds, for any implementation:

- a blob becomes readable only once :meth:`PendingBlob.commit` returned, and then whole:
  durable, under its final id, never a prefix of it;
- an upload that is discarded, refused (:class:`BlobTooLarge`) or cut off leaves nothing
  readable; what a crash leaves behind is a stale part, removed by
  :meth:`BlobStore.purge_parts` (and :meth:`BlobStore.open`) once older than the upload
  deadline, and **never before**: another process sharing the store may be writing it;
- a :class:`StoredBlob` that was opened can be read to its end even if the blob is deleted
  meanwhile (an expiry racing a download ends the download, not in the middle of it);
- ids are 32 random bytes chosen by the server, so a blob is only reachable by whoever was
  given its id; contents are ciphertext the server cannot read. Neither an id nor a byte
  of content is in any error message or log line of this module.

Errors::

    BlobError                 the blob store's root
    ├── BlobTooLarge          an upload went over its limit (nothing kept)
    └── BlobLost              an upload's part was gone at commit (nothing kept)

:class:`DirectoryBlobStore`: uploads stream into ``<id>.part`` in the same directory (so the
final rename is atomic) with the size limit enforced chunk by chunk; the whole blob is never
in memory. A blob becomes visible only after it is fsynced and renamed, the directory
fsynced after the rename (and its metadata committed, by the handler). Reads go through an
open file descriptor, in a worker thread, :data:`READ_CHUNK` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from sealpost._files import fsync_dir

__all__ = [
    "ID_LEN",
    "PART_GRACE",
    "BlobError",
    "BlobLost",
    "BlobStore",
    "BlobTooLarge",
    "DirectoryBlobStore",
    "PendingBlob",
    "StoredBlob",
]

log = logging.getLogger("sealpost.server")

ID_LEN = 32

#: While an upload streams in, what was written is flushed to disk in the background each
#: time this much more arrived (one flush at a time, in a worker thread), so the fsync that
#: makes the blob durable before it becomes visible finds little left to write: the disk
#: works while the network does, instead of after it.
FLUSH_EVERY = 8 * 1024 * 1024

#: A download reads this much at a time (one read in a worker thread per piece). The piece
#: is the memory a download holds beyond the socket's buffer, and four times the 64 KiB
#: Starlette's FileResponse read, so a quarter of the thread hand-offs.
READ_CHUNK = 256 * 1024

#: A part is stale, and may be removed, once it was last written more than the upload
#: deadline (``upload_timeout``) and this many seconds ago. An upload's part lives no
#: longer than its deadline (the handler's timeout covers the write and the fsync; the
#: signature check and the rename after it take microseconds), and a write touches the
#: part's mtime, so a part this old belongs to no upload any more. The margin is for the
#: clocks of the machines that share a mounted volume: the mtime is the file server's, the
#: ``now`` it is compared with the purging process's.
PART_GRACE = 300.0

_PART = ".part"


class BlobError(Exception):
    """The blob store's root error; each says only what happened, never a blob's id."""


class BlobTooLarge(BlobError):
    """More than the upload's limit arrived; the part was removed."""


class BlobLost(BlobError):
    """An upload's part was gone when it was to become the blob (removed by a process that
    took it for stale: a clock far ahead, an operator); nothing was stored."""


class PendingBlob(Protocol):
    """An upload received whole but not yet visible. ``size`` and ``digest`` (SHA-256) are
    the blob's, without ``trailer`` (the bytes withheld after it). Exactly one of
    :meth:`commit` (which may raise :class:`BlobLost`, having kept nothing) or
    :meth:`discard` (idempotent, also after a failed commit) is called."""

    @property
    def size(self) -> int: ...

    @property
    def digest(self) -> bytes: ...

    @property
    def trailer(self) -> bytes: ...

    async def commit(self) -> None: ...

    async def discard(self) -> None: ...


class StoredBlob(Protocol):
    """A blob opened for reading: its ``size``, and its bytes from ``start`` to ``stop``.
    :meth:`close` (idempotent) is called once the reader is done, whatever happened."""

    @property
    def size(self) -> int: ...

    def chunks(self, start: int, stop: int) -> AsyncIterator[bytes]:
        """The bytes ``[start, stop)`` (``0 <= start <= stop <= size``), in pieces."""
        ...

    async def close(self) -> None: ...


class BlobStore(Protocol):
    """Where attachment bytes live. See the module docstring for the guarantees."""

    async def open(self) -> None:
        """Make the store ready; remove stale parts (as :meth:`purge_parts`), never fresh
        ones: other processes sharing the store may be receiving them."""

    async def receive(
        self, blob_id: bytes, chunks: AsyncIterator[bytes], *, limit: int, withhold: int = 0
    ) -> PendingBlob:
        """Store ``chunks`` as the pending blob ``blob_id``; raise :class:`BlobTooLarge`
        (having kept nothing) as soon as more than ``limit`` bytes of blob arrived. The
        last ``withhold`` bytes of the stream are not part of the blob (neither stored nor
        hashed): they are the pending blob's ``trailer`` (a trailing signature). Any other
        exception (the client went away, the deadline passed) also leaves nothing."""

    async def read(self, blob_id: bytes) -> StoredBlob | None:
        """The blob ``blob_id`` opened for reading, or None if there is none."""

    async def delete(self, blob_id: bytes) -> None:
        """Remove the blob ``blob_id``; nothing happens if there is none."""

    async def purge_parts(self) -> int:
        """Remove the parts of uploads that ended without commit or discard (a crashed
        process) once stale (:data:`PART_GRACE`); how many were removed. Never a part that
        an upload may still be writing."""


class _Part:
    """:class:`PendingBlob` of :class:`DirectoryBlobStore`: ``tmp`` becomes ``final``."""

    def __init__(self, tmp: Path, final: Path) -> None:
        self.tmp = tmp
        self.final = final
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.trailer = b""

    def __repr__(self) -> str:  # the paths hold the blob's id, a capability
        return f"<pending blob of {self.size} bytes>"

    @property
    def digest(self) -> bytes:
        return self.sha256.digest()

    async def commit(self) -> None:
        """The rename and the directory's fsync (durable: the name survives a crash) run in
        a worker thread; a commit that raises, or is cancelled, has kept nothing."""
        renaming = asyncio.get_running_loop().run_in_executor(
            None, _rename_durably, self.tmp, self.final
        )
        try:
            await asyncio.shield(renaming)
        except FileNotFoundError:
            raise BlobLost("the upload's part was removed before it was stored") from None
        except BaseException:
            with contextlib.suppress(BaseException):
                await renaming  # cancelled: the thread ends first, then its blob is removed
            with contextlib.suppress(FileNotFoundError):
                self.final.unlink()
            raise

    async def discard(self) -> None:
        self.remove()

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _rename_durably(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    fsync_dir(final.parent)


class _OpenFile:
    """:class:`StoredBlob` of :class:`DirectoryBlobStore`: an open descriptor, read with
    ``pread`` in a worker thread. :meth:`close` waits for a read still running (a download
    cancelled in the middle of one) before it closes the descriptor, so the thread never
    reads a descriptor number that meanwhile names another file."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size
        self._reading: asyncio.Future[bytes] | None = None

    def __repr__(self) -> str:
        return f"<stored blob of {self.size} bytes>"

    async def chunks(self, start: int, stop: int) -> AsyncIterator[bytes]:
        if not 0 <= start <= stop <= self.size:
            raise ValueError("a range outside the blob")
        loop = asyncio.get_running_loop()
        while start < stop:
            self._reading = loop.run_in_executor(
                None, os.pread, self._fd, min(READ_CHUNK, stop - start), start
            )
            piece = await asyncio.shield(self._reading)
            self._reading = None
            if not piece:  # blobs are never rewritten: only a damaged volume does this
                raise BlobError("a blob ended before its size")
            start += len(piece)
            yield piece

    async def close(self) -> None:
        if self._fd < 0:
            return
        if self._reading is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._reading)
            self._reading = None
        fd, self._fd = self._fd, -1
        os.close(fd)


def _absorb(fh: BinaryIO, pending: _Part, data: bytes | memoryview) -> None:
    if not data:
        return
    pending.size += len(data)
    pending.sha256.update(data)
    view = memoryview(data)
    while view:  # an unbuffered write may be short
        view = view[fh.write(view) :]


def _open_for_reading(path: Path) -> _OpenFile | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return _OpenFile(fd, os.fstat(fd).st_size)
    except BaseException:
        os.close(fd)
        raise


class DirectoryBlobStore:
    """:class:`BlobStore` over the directory ``root``, which other processes may share.
    ``upload_timeout`` is the uploads' deadline (every process sharing the directory
    should have the same): a part last written longer ago than it and :data:`PART_GRACE`
    is stale. ``clock`` gives the current time (Unix seconds), compared with parts'
    mtimes."""

    def __init__(
        self, root: Path, *, upload_timeout: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = root
        self._stale_after = upload_timeout + PART_GRACE
        self._clock = clock

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        removed = await self.purge_parts()
        if removed:
            log.info("removed %d stale partial uploads", removed)

    def _path(self, blob_id: bytes) -> Path:
        if len(blob_id) != ID_LEN:
            raise ValueError(f"a blob id is {ID_LEN} bytes")
        return self.root / blob_id.hex()

    async def receive(
        self, blob_id: bytes, chunks: AsyncIterator[bytes], *, limit: int, withhold: int = 0
    ) -> PendingBlob:
        """See :meth:`BlobStore.receive`. Hashing and writing happen in the event loop,
        piece by piece as uvicorn hands them over (about 256 KiB each): handing them to a
        thread measured slower on two cores (bench/attachment_bench.py); flushing to disk
        happens in the background (:data:`FLUSH_EVERY`)."""
        final = self._path(blob_id)
        pending = _Part(final.with_suffix(_PART), final)
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
                            raise BlobTooLarge("the upload is over its limit")
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
            pending.remove()
            raise
        pending.trailer = tail
        return pending

    async def read(self, blob_id: bytes) -> StoredBlob | None:
        path = self._path(blob_id)
        return await asyncio.get_running_loop().run_in_executor(None, _open_for_reading, path)

    async def delete(self, blob_id: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(blob_id).unlink()

    async def purge_parts(self) -> int:
        """See :meth:`BlobStore.purge_parts`. The directory is listed in a worker thread:
        it holds every blob, and the leader lists it each ``purge_interval``."""
        before = self._clock() - self._stale_after
        return await asyncio.get_running_loop().run_in_executor(None, self._sweep, before)

    def _sweep(self, before: float) -> int:
        removed = 0
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.name.endswith(_PART):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime >= before:
                        continue  # an upload may be writing it, here or on another process
                    os.unlink(entry.path)
                except FileNotFoundError:  # committed, discarded or swept meanwhile
                    continue
                removed += 1
        return removed
