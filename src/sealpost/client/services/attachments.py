"""Attachments: files sent with a message, and group chains too large to send inline.

A file is encrypted in chunks while it is uploaded (memory stays flat) and goes as an
:class:`~sealpost.protocol.attachment.AttachmentPointer` inside the message; the receiver
downloads, checks and decrypts it only when asked (:meth:`Attachments.save`). The wire
and the checks are :mod:`sealpost.client.attachments`; this service binds them to the
profile's transport, randomness and store.

Example::

    row = await attachments.upload(Path("photo.jpg"), None)   # then sent in a TextContent
    path = await attachments.save(message_id, "downloads")     # on the receiving side
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sealpost.client import saved_files
from sealpost.client.attachments import download_bytes, download_file, upload_bytes, upload_file
from sealpost.client.context import ClientContext
from sealpost.client.errors import ClientError
from sealpost.client.rows import AttachmentRow
from sealpost.protocol.attachment import AttachmentPointer

__all__ = ["MAX_GROUP_STATE_BLOB", "Attachments"]

MAX_GROUP_STATE_BLOB = 16 * 1024 * 1024  # a group chain fetched as an attachment

Progress = Callable[[int, int], None]


class Attachments:
    """Uploads and downloads through the profile's transport."""

    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx

    async def upload(self, path: Path, progress: Progress | None) -> AttachmentRow:
        """Encrypt ``path`` in chunks while uploading it (memory stays flat)."""
        pointer = await upload_file(self._ctx.transport, path, progress=progress, rng=self._ctx.rng)
        return AttachmentRow(
            pointer.encode(), pointer.filename, pointer.size, pointer.content_type, None
        )

    async def upload_bytes(self, data: bytes, filename: str) -> AttachmentRow:
        pointer = await upload_bytes(self._ctx.transport, data, filename, rng=self._ctx.rng)
        return AttachmentRow(pointer.encode(), filename, pointer.size, pointer.content_type)

    async def download_bytes(self, pointer: bytes) -> bytes:
        """A blob sent as an attachment (a group chain), at most
        :data:`MAX_GROUP_STATE_BLOB` bytes."""
        return await download_bytes(
            self._ctx.transport, AttachmentPointer.decode(pointer), limit=MAX_GROUP_STATE_BLOB
        )

    async def save(
        self, message_id: bytes, directory: Path | str, *, progress: Progress | None = None
    ) -> Path:
        """Download, check and decrypt a message's attachment into ``directory`` (a file
        that fails any check is not left there); again if the file saved before is gone.
        A save that fails changes nothing, so it can be tried again. The file is deleted
        with the message (timer or delete for everyone) while it is still the file saved
        (:mod:`sealpost.client.saved_files`)."""
        found = self._ctx.store.repos().messages.attachment(message_id)
        if found is None:
            raise ClientError("that message has no attachment")
        raw, saved_before = found
        if saved_files.is_saved(saved_before):
            return Path(str(saved_files.saved_path(saved_before)))
        pointer = AttachmentPointer.decode(raw)
        directory = Path(directory).absolute()
        saved = await download_file(self._ctx.transport, pointer, directory, progress=progress)
        with self._ctx.store.unit() as repos:
            repos.messages.set_attachment_path(message_id, saved_files.record(saved))
        return saved
