"""Streaming attachment upload and download: the file is never held in memory whole.

Upload (:func:`upload_file`)
    A random 32-byte file key and salt per attachment; the file is read, encrypted in
    chunks (:mod:`sealpost.protocol.attachment`) and streamed in one pass as the body of
    ``POST /v1/attachments?signature=trailer``
    (:meth:`~sealpost.client.transport.Transport.post_streamed`): the headers are signed
    before the body, and the device's signature over SHA-256 of the blob follows the body,
    so the digest the pointer carries is computed while the bytes go out. (The relay's
    other mode, a header signature over SHA-256(body), would need a first pass over the
    file to hash the ciphertext before sending: about a quarter slower on loopback, twice
    the reads from a slow disk, and a window for the file to change between the passes.)
    A file whose size or modification time changes during the upload raises
    :class:`FileChanged`.

Download (:func:`download`, :func:`download_file`, :func:`download_bytes`)
    An unauthenticated streamed ``GET /v1/attachments/{id}`` into a temporary file in the
    destination directory; each chunk is authenticated before its plaintext is written,
    the digest and sizes are checked at the end, the file is fsynced and only then renamed
    into place. On any failure the partial file is removed.

Errors::

    ClientError
    ├── TransportError             (unreachable server, 404 for an expired attachment, ...)
    └── AttachmentError
        ├── AttachmentCorrupt      the blob failed a check (opaque; nothing was saved)
        ├── AttachmentTooLarge     over 100 MiB, or over the caller's limit
        └── FileChanged            the file changed while it was being uploaded

Example::

    pointer = await upload_file(transport, Path("photo.jpg"), progress=ProgressBar("photo"))
    saved = await download_file(transport, pointer, Path("~/Downloads").expanduser())
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TextIO

from sealpost.client.errors import ClientError, ServerError
from sealpost.client.relay import RelayTransport
from sealpost.entropy import Rng, system_rng
from sealpost.protocol.attachment import (
    DEFAULT_CHUNK_SIZE,
    ID_LEN,
    MAX_ATTACHMENT_SIZE,
    MAX_FILENAME,
    SALT_LEN,
    AttachmentPointer,
    Decryptor,
    Encryptor,
    InvalidAttachment,
    ciphertext_size,
    sanitize_filename,
    valid_content_type,
)

__all__ = [
    "AttachmentCorrupt",
    "AttachmentError",
    "AttachmentTooLarge",
    "FileChanged",
    "Progress",
    "ProgressBar",
    "download",
    "download_bytes",
    "download_file",
    "upload_bytes",
    "upload_file",
]

#: ``progress(done, total)``: plaintext bytes sent or received so far, of ``total``.
Progress = Callable[[int, int], None]

UPLOAD_PATH = "/v1/attachments"
OCTET_STREAM = "application/octet-stream"


class AttachmentError(ClientError):
    """Root of the attachment errors."""


class AttachmentCorrupt(AttachmentError):
    """The downloaded blob failed authentication, its digest or its size (on purpose, no
    more detail). Nothing was saved."""

    def __init__(self, reason: str = "the attachment failed its integrity checks") -> None:
        super().__init__(reason)


class AttachmentTooLarge(AttachmentError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"attachments are limited to {limit} bytes")
        self.limit = limit


class FileChanged(AttachmentError):
    def __init__(self) -> None:
        super().__init__("the file changed while it was being uploaded; nothing was sent")


# --------------------------------------------------------------------------- upload


def _content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed if guessed is not None and valid_content_type(guessed) else OCTET_STREAM


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


async def upload_file(
    transport: RelayTransport,
    path: Path | str,
    *,
    progress: Progress | None = None,
    rng: Rng = system_rng,
    filename: str | None = None,
    content_type: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> AttachmentPointer:
    """Encrypt ``path`` and upload it as an opaque blob, in one pass; return the pointer
    (key, digest, sizes, sanitized name) to send inside a message. Memory stays at a few
    chunks whatever the file size."""
    path = Path(path)
    name = sanitize_filename(filename if filename is not None else path.name)
    kind = content_type if content_type is not None else _content_type(name)
    key, salt = rng(32), rng(SALT_LEN)
    with path.open("rb") as fh:
        before = os.fstat(fh.fileno())
        size = before.st_size
        if size > MAX_ATTACHMENT_SIZE:
            raise AttachmentTooLarge(MAX_ATTACHMENT_SIZE)
        length = ciphertext_size(size, chunk_size)

        async def body() -> AsyncIterator[bytes]:
            encryptor = Encryptor(key, salt=salt, chunk_size=chunk_size)
            buf = bytearray(chunk_size)
            view = memoryview(buf)
            if progress is not None:
                progress(0, size)
            while n := fh.readinto(buf):
                if encryptor.size + n > size:
                    raise FileChanged()
                out = encryptor.update(view[:n])
                if out:
                    yield out
                if progress is not None:
                    progress(encryptor.size, size)
            if encryptor.size != size:
                raise FileChanged()
            yield encryptor.finalize()

        try:
            answer, digest = await transport.post_streamed(UPLOAD_PATH, body(), length=length)
        except ClientError:
            if _stamp(os.fstat(fh.fileno())) != _stamp(before):
                raise FileChanged() from None
            raise
        if _stamp(os.fstat(fh.fileno())) != _stamp(before):
            raise FileChanged()
    return AttachmentPointer(_blob_id(answer), key, digest, size, length, name, kind, chunk_size)


async def upload_bytes(
    transport: RelayTransport,
    data: bytes,
    filename: str,
    *,
    content_type: str = OCTET_STREAM,
    rng: Rng = system_rng,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> AttachmentPointer:
    """:func:`upload_file` for bytes already in memory (a large group state): one pass."""
    if len(data) > MAX_ATTACHMENT_SIZE:
        raise AttachmentTooLarge(MAX_ATTACHMENT_SIZE)
    key, salt = rng(32), rng(SALT_LEN)
    encryptor = Encryptor(key, salt=salt, chunk_size=chunk_size)
    blob = encryptor.update(data) + encryptor.finalize()

    async def body() -> AsyncIterator[bytes]:
        yield blob

    answer, digest = await transport.post_streamed(UPLOAD_PATH, body(), length=len(blob))
    return AttachmentPointer(
        _blob_id(answer),
        key,
        digest,
        len(data),
        len(blob),
        sanitize_filename(filename),
        content_type,
        chunk_size,
    )


def _blob_id(answer: object) -> bytes:
    blob_id = b""
    if isinstance(answer, dict):
        with contextlib.suppress(ValueError):
            blob_id = bytes.fromhex(str(answer.get("id")))
    if len(blob_id) != ID_LEN:
        raise ServerError(0, "bad_response", "the server did not return an attachment id")
    return blob_id


# --------------------------------------------------------------------------- download


async def _fetch(
    transport: RelayTransport,
    pointer: AttachmentPointer,
    sink: Callable[[bytes], object],
    progress: Progress | None,
) -> None:
    """Stream the blob through a :class:`Decryptor` into ``sink``; the last chunk reaches
    ``sink`` only after every check passed."""
    decryptor = Decryptor.for_pointer(pointer)
    done = 0
    if progress is not None:
        progress(0, pointer.size)
    try:
        async with transport.get_streamed(
            f"{UPLOAD_PATH}/{pointer.attachment_id.hex()}"
        ) as response:
            declared = response.headers.get("content-length")
            if declared is not None and declared != str(pointer.ciphertext_size):
                raise AttachmentCorrupt("the attachment on the server has the wrong size")
            async for piece in response.aiter_bytes():
                plain = decryptor.update(piece)
                if plain:
                    sink(plain)
                    done += len(plain)
                    if progress is not None:
                        progress(done, pointer.size)
        last = decryptor.finalize()
    except InvalidAttachment:
        raise AttachmentCorrupt() from None
    sink(last)
    if progress is not None:
        progress(pointer.size, pointer.size)


async def download(
    transport: RelayTransport,
    pointer: AttachmentPointer,
    dest: Path | str,
    *,
    progress: Progress | None = None,
) -> Path:
    """Download, check and decrypt into ``dest`` (replaced atomically if it exists)."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".sealpost-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            await _fetch(transport, pointer, out.write, progress)
            out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def _candidates(name: str) -> list[str]:
    """``name``, then ``name (1).ext``, ``name (2).ext``, ... each within 255 bytes."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    ext = "." + ext if ext else ""
    out = [name]
    for i in range(1, 1000):
        suffix = f" ({i}){ext}"
        room = MAX_FILENAME - len(suffix.encode("utf-8"))
        short = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
        out.append(short + suffix)
    return out


async def download_file(
    transport: RelayTransport,
    pointer: AttachmentPointer,
    directory: Path | str,
    *,
    progress: Progress | None = None,
) -> Path:
    """Download into ``directory`` (created if needed) under the pointer's sanitized file
    name, never overwriting a file: ``name (1).ext`` and so on. Returns the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".sealpost-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            await _fetch(transport, pointer, out.write, progress)
            out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        name = sanitize_filename(pointer.filename)
        for candidate in _candidates(name):
            final = directory / candidate
            try:  # claim the name exclusively, then move the checked file over it
                os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                continue
            try:
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    final.unlink()
                raise
            return final
        raise AttachmentError(f"too many files named like {name!r} in {directory}")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


async def download_bytes(
    transport: RelayTransport, pointer: AttachmentPointer, *, limit: int = MAX_ATTACHMENT_SIZE
) -> bytes:
    """Download, check and decrypt into memory, for small blobs (refused over ``limit``)."""
    if pointer.size > limit:
        raise AttachmentTooLarge(limit)
    parts: list[bytes] = []
    await _fetch(transport, pointer, parts.append, None)
    return b"".join(parts)


# --------------------------------------------------------------------------- progress bar


class ProgressBar:
    """A one-line progress bar on a terminal, usable as a ``progress`` callback.

    Draws on ``stream`` (stderr by default) only when it is a TTY, at most every
    ``interval`` seconds (and always at 100%); :meth:`close` ends the line. Use it as a
    context manager::

        with ProgressBar("photo.jpg") as bar:
            await upload_file(transport, path, progress=bar)
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self._stream, "isatty", lambda: False)())
        self.label = sanitize_filename(label, default="")  # no escape sequences on screen
        self._interval = interval
        self._clock = clock
        self._start = clock()
        self._last = -float("inf")
        self._drawn = False
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or self._finished:
            return
        now = self._clock()
        final = done >= total
        if not final and now - self._last < self._interval:
            return
        self._last = now
        self._stream.write("\r" + self.render(done, total, now - self._start))
        self._stream.flush()
        self._drawn = True
        if final:
            self.close()

    def render(self, done: int, total: int, elapsed: float) -> str:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        fraction = 1.0 if total <= 0 else min(1.0, done / total)
        rate = done / elapsed / 1e6 if elapsed > 0 else 0.0
        tail = f" {fraction * 100:3.0f}% {done / 2**20:7.1f}/{total / 2**20:.1f} MiB "
        tail += f"{rate:6.1f} MB/s"
        label = self.label[: max(0, width // 3)]
        room = max(10, width - len(label) - len(tail) - 3)
        filled = int(room * fraction)
        line = f"{label} [{'#' * filled}{'.' * (room - filled)}]{tail}"
        return line[:width].ljust(width)

    def close(self) -> None:
        if self._drawn and not self._finished:
            self._stream.write("\n")
            self._stream.flush()
        self._finished = True

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
