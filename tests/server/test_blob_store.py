"""The directory blob store (:mod:`sealpost.server.blobs`) as several relay processes share
it: a store that opens (a process starting) removes only stale parts, never an upload that
another store is receiving; the purge sweeps stale parts and nothing else; a commit whose
part was removed meanwhile raises :class:`BlobLost` and keeps nothing; an opened blob reads
to its end even if deleted meanwhile. Each store here is a real one on a real directory;
two stores on one directory are two processes on one mounted volume."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sealpost.server import blobs
from sealpost.server.blobs import (
    PART_GRACE,
    READ_CHUNK,
    BlobLost,
    BlobStore,
    DirectoryBlobStore,
    PendingBlob,
    StoredBlob,
)

TIMEOUT = 900.0  # upload_timeout
STALE = TIMEOUT + PART_GRACE


def _store(root: Path, *, ahead: float = 0.0) -> DirectoryBlobStore:
    """A store on ``root`` whose clock is ``ahead`` seconds ahead of this machine's."""
    return DirectoryBlobStore(root, upload_timeout=TIMEOUT, clock=lambda: time.time() + ahead)


async def _chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def _read_all(blob: StoredBlob, start: int = 0, stop: int | None = None) -> bytes:
    try:
        return b"".join([p async for p in blob.chunks(start, blob.size if stop is None else stop)])
    finally:
        await blob.close()


def _part(root: Path, name: str, age: float) -> Path:
    path = root / f"{name}.part"
    path.write_bytes(b"partial")
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def test_a_store_opening_on_the_directory_keeps_the_upload_another_is_receiving(
    tmp_path: Path,
) -> None:
    """The audit's race: process A receives an upload, process B (re)starts on the same
    directory. B's open must leave A's part alone, and A's commit must then succeed."""
    root = tmp_path / "blobs"
    blob_id = os.urandom(32)

    async def main() -> bytes:
        first = _store(root)
        await first.open()
        halfway = asyncio.Event()
        go_on = asyncio.Event()

        async def upload() -> AsyncIterator[bytes]:
            yield b"a" * 1000
            halfway.set()
            await go_on.wait()
            yield b"b" * 1000

        receiving = asyncio.create_task(first.receive(blob_id, upload(), limit=10_000))
        await halfway.wait()
        assert [p.name for p in root.glob("*.part")] == [f"{blob_id.hex()}.part"]
        await _store(root).open()  # another process starts on the shared directory
        assert (root / f"{blob_id.hex()}.part").exists()
        go_on.set()
        pending = await receiving
        await pending.commit()
        blob = await _store(root).read(blob_id)  # and any process serves it
        assert blob is not None and blob.size == 2000
        return await _read_all(blob)

    assert asyncio.run(main()) == b"a" * 1000 + b"b" * 1000


def test_open_and_purge_remove_stale_parts_only(tmp_path: Path) -> None:
    """A part older than the upload deadline and its grace belongs to no upload: open and
    purge remove it. A younger part, and a blob however old, stay."""
    root = tmp_path / "blobs"
    root.mkdir()
    stale = _part(root, "aa" * 32, STALE + 5)
    young = _part(root, "bb" * 32, STALE - 60)  # past the deadline, within the grace
    fresh = _part(root, "cc" * 32, 1)
    old_blob = root / ("dd" * 32)
    old_blob.write_bytes(b"a committed blob")
    long_ago = time.time() - 10 * STALE
    os.utime(old_blob, (long_ago, long_ago))

    async def main() -> None:
        store = _store(root)
        await store.open()
        assert not stale.exists()
        assert young.exists() and fresh.exists() and old_blob.exists()
        later = _part(root, "ee" * 32, STALE + 5)  # left by a crash since
        assert await store.purge_parts() == 1
        assert not later.exists()
        assert young.exists() and fresh.exists() and old_blob.exists()
        assert await store.purge_parts() == 0

    asyncio.run(main())


def test_a_commit_whose_part_vanished_raises_blob_lost_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    """A process whose clock is far ahead takes a live part for stale and removes it: the
    uploader's commit raises the typed error (not FileNotFoundError), nothing is readable,
    and neither the error nor the pending blob's repr holds the id."""
    root = tmp_path / "blobs"
    blob_id = os.urandom(32)

    async def main() -> tuple[PendingBlob, BlobLost]:
        store = _store(root)
        await store.open()
        pending = await store.receive(blob_id, _chunks(b"x" * 5000), limit=10_000)
        assert await _store(root, ahead=2 * STALE).purge_parts() == 1
        with pytest.raises(BlobLost) as raised:
            await pending.commit()
        await pending.discard()  # still safe to call
        assert await store.read(blob_id) is None
        return pending, raised.value

    pending, error = asyncio.run(main())
    assert list(root.iterdir()) == []
    for text in (str(error), repr(error), repr(pending)):
        assert blob_id.hex() not in text and str(root) not in text


def test_an_opened_blob_reads_to_its_end_though_deleted_meanwhile(tmp_path: Path) -> None:
    """An expiry purge racing a download: the download that had opened the blob ends whole."""
    root = tmp_path / "blobs"
    blob_id = os.urandom(32)
    data = os.urandom(3 * READ_CHUNK + 17)

    async def main() -> tuple[bytes, StoredBlob | None]:
        store: BlobStore = _store(root)
        await store.open()
        pending = await store.receive(blob_id, _chunks(data[:1000], data[1000:]), limit=len(data))
        await pending.commit()
        blob = await store.read(blob_id)
        assert blob is not None and blob.size == len(data)
        await store.delete(blob_id)
        await store.delete(blob_id)  # deleting what is gone is nothing
        return await _read_all(blob), await store.read(blob_id)

    got, after = asyncio.run(main())
    assert got == data
    assert after is None


def test_a_range_of_a_blob_is_those_bytes_across_pieces(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    blob_id = os.urandom(32)
    data = os.urandom(2 * READ_CHUNK + 100)
    cuts = [(0, 0), (0, 1), (5, READ_CHUNK + 9), (READ_CHUNK, 2 * READ_CHUNK + 100)]

    async def main() -> list[bytes]:
        store = _store(root)
        await store.open()
        pending = await store.receive(blob_id, _chunks(data), limit=len(data))
        await pending.commit()
        got = []
        for start, stop in cuts:
            blob = await store.read(blob_id)
            assert blob is not None
            got.append(await _read_all(blob, start, stop))
        blob = await store.read(blob_id)
        assert blob is not None
        with pytest.raises(ValueError):
            await _read_all(blob, 0, len(data) + 1)
        return got

    assert asyncio.run(main()) == [data[a:b] for a, b in cuts]


def test_a_commit_fsyncs_the_directory_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed means durable: the rename is followed by an fsync of the directory (else
    a crash may lose the name of a blob whose metadata was committed), off the event
    loop's thread."""
    root = tmp_path / "blobs"
    synced: list[tuple[Path, bool]] = []
    loop_thread = threading.get_ident()

    def fsync_dir(directory: Path) -> None:
        synced.append((directory, threading.get_ident() != loop_thread))

    monkeypatch.setattr(blobs, "fsync_dir", fsync_dir)

    async def main() -> bytes:
        store = _store(root)
        await store.open()
        blob_id = os.urandom(32)
        pending = await store.receive(blob_id, _chunks(b"y" * 100), limit=10_000)
        await pending.commit()
        blob = await store.read(blob_id)
        assert blob is not None
        return await _read_all(blob)

    assert asyncio.run(main()) == b"y" * 100
    assert synced == [(root, True)]


def test_a_commit_whose_fsync_fails_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "blobs"

    def fsync_dir(directory: Path) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(blobs, "fsync_dir", fsync_dir)

    async def main() -> None:
        store = _store(root)
        await store.open()
        blob_id = os.urandom(32)
        pending = await store.receive(blob_id, _chunks(b"y" * 100), limit=10_000)
        with pytest.raises(OSError):
            await pending.commit()
        await pending.discard()
        assert await store.read(blob_id) is None

    asyncio.run(main())
    assert list(root.iterdir()) == []
