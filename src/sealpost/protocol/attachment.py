"""Encrypted attachments: a chunked, streamable AEAD format and the pointer that names a blob.

A file travels as an opaque blob on the relay; the message that mentions it carries an
:class:`AttachmentPointer` (blob id, key, digest, sizes, name, type) inside its end-to-end
encryption. Nothing here does I/O: the caller feeds bytes in and writes bytes out, so a
100 MiB file is processed with one chunk in memory at a time.

Blob format (all integers big-endian)::

    header  = version (1) = 0x01 | type (1) = 0x31 | chunk_size (4) | salt (16)     22 bytes
    blob    = header | chunk_0 | chunk_1 | ... | chunk_n
    chunk_i = AES-256-GCM(K, nonce_i, plaintext_i, aad_i)        len(plaintext_i) + 16

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last holds
``0 .. chunk_size - 1`` bytes (an empty final chunk closes a file whose size is a multiple
of the chunk size, and the empty file). So the blob's length follows from the plaintext
size alone (:func:`ciphertext_size`), and a reader knows where every chunk starts.

Keys and nonces follow the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015)::

    K || P  = HKDF-SHA256(IKM = file_key (32, random per attachment), salt = salt,
                          info = "sealpost/v1/attachment" 0x00, L = 32 + 7)
    nonce_i = P (7) | i (4) | final_i (1)          final_i = 0x01 for the last chunk, else 0x00
    aad_i   = header (22) | i (4) | final_i (1)

The chunk index stops reordering, duplication and dropping of chunks in the middle; the
final flag stops truncation at a chunk boundary (a non-final chunk never decrypts as the
last) and appending after the end; the header in every AAD binds the version and chunk
size. The random salt gives each blob its own K and P even if a caller reused a file key,
so chunks cannot be swapped between two blobs either. Index and flag are in the nonce, as
in STREAM, and again in the AAD (belt and braces; it costs nothing).

On top of that the pointer carries ``digest = SHA-256(blob)``, which the reader checks in
constant time at the end, and the exact sizes. A reader releases plaintext only chunk by
chunk after each chunk authenticated, and the last chunk only once the digest and the
length have been checked as well.

Chunk size: 256 KiB by default (64 KiB to 1 MiB, powers of two, are accepted). Below
64 KiB the per-chunk work in Python shows; above 256 KiB AES-GCM is no faster
(bench/attachment_bench.py) and every buffer is larger. The overhead is 16 bytes a chunk:
at most 25,638 bytes for 100 MiB in 64 KiB chunks.

Errors::

    InvalidMessage (RemoteProtocolError)
    └── InvalidAttachment          a chunk or the digest does not authenticate (opaque: wrong
        │                          key, flipped bit, reordered, swapped, duplicated chunk)
        ├── TruncatedAttachment    the blob ends before its final chunk
        └── TrailingData           bytes after the final chunk
    DecodeError                    a malformed pointer (UnsupportedVersion)
    LocalProtocolError
    └── AttachmentTooLarge         more than MAX_ATTACHMENT_SIZE plaintext bytes fed

Example::

    enc = Encryptor(file_key, salt=rng(16))
    blob = enc.update(b"hello ") + enc.update(b"world") + enc.finalize()
    dec = Decryptor(file_key, size=11, digest=hashlib.sha256(blob).digest())
    assert dec.update(blob) + dec.finalize() == b"hello world"
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import unicodedata
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealpost._errors import (
    DecodeError,
    InvalidMessage,
    LocalProtocolError,
    UnsupportedVersion,
)
from sealpost.crypto.aead import KEY_LEN, TAG_LEN
from sealpost.crypto.kdf import hkdf

__all__ = [
    "ATTACHMENT_VERSION",
    "DEFAULT_CHUNK_SIZE",
    "DIGEST_LEN",
    "HEADER_LEN",
    "ID_LEN",
    "MAX_ATTACHMENT_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_CONTENT_TYPE",
    "MAX_FILENAME",
    "MIN_CHUNK_SIZE",
    "POINTER_TYPE",
    "SALT_LEN",
    "AttachmentPointer",
    "AttachmentTooLarge",
    "BlobHeader",
    "Decryptor",
    "Encryptor",
    "InvalidAttachment",
    "TrailingData",
    "TruncatedAttachment",
    "ciphertext_size",
    "sanitize_filename",
    "valid_content_type",
]

ATTACHMENT_VERSION: Final = 0x01
POINTER_TYPE: Final = 0x30
HEADER_TYPE: Final = 0x31

#: Largest plaintext an attachment may have (the issue's limit; the server's
#: ``max_attachment`` must allow its ciphertext, see :func:`ciphertext_size`).
MAX_ATTACHMENT_SIZE: Final = 100 * 1024 * 1024
MIN_CHUNK_SIZE: Final = 64 * 1024
MAX_CHUNK_SIZE: Final = 1024 * 1024
#: 256 KiB: as fast as 1 MiB for AES-GCM and the upload, a quarter of the memory.
DEFAULT_CHUNK_SIZE: Final = 256 * 1024
SALT_LEN: Final = 16
ID_LEN: Final = 32
DIGEST_LEN: Final = 32
#: A file name is at most 255 bytes of UTF-8 (the usual file system limit).
MAX_FILENAME: Final = 255
MAX_CONTENT_TYPE: Final = 127

_INFO: Final = b"sealpost/v1/attachment\x00"
_PREFIX_LEN: Final = 7
_HEADER = struct.Struct(">BBI16s")
HEADER_LEN: Final = _HEADER.size  # 22
_MAX_CHUNKS: Final = 2**32
_POINTER = struct.Struct(">BB32s32s32sQQI")
# RFC 6838 type/subtype characters, no parameters; 32 + 1 + 94 = MAX_CONTENT_TYPE at most.
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,32}/[A-Za-z0-9!#$&^_.+-]{1,94}")


class InvalidAttachment(InvalidMessage):
    """The blob does not authenticate under the pointer's key and digest. Deliberately
    says no more (wrong key, flipped bit, reordered, swapped or duplicated chunk)."""

    def __init__(self, message: str = "attachment could not be authenticated") -> None:
        super().__init__(message)


class TruncatedAttachment(InvalidAttachment):
    """The blob ended before its final chunk (or its header)."""

    def __init__(self) -> None:
        super().__init__("attachment is truncated: its final chunk is missing")


class TrailingData(InvalidAttachment):
    """There are bytes after the blob's final chunk."""

    def __init__(self) -> None:
        super().__init__("attachment has data after its final chunk")


class AttachmentTooLarge(LocalProtocolError):
    """More plaintext than :data:`MAX_ATTACHMENT_SIZE` was fed to an :class:`Encryptor`."""

    def __init__(self, limit: int = MAX_ATTACHMENT_SIZE) -> None:
        super().__init__(f"attachments are limited to {limit} bytes")
        self.limit = limit


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise DecodeError("chunk size must be a power of two from 64 KiB to 1 MiB")


def ciphertext_size(size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """The blob length for ``size`` plaintext bytes: header, full chunks, the final chunk."""
    full, rest = divmod(size, chunk_size)
    return HEADER_LEN + full * (chunk_size + TAG_LEN) + rest + TAG_LEN


@dataclass(frozen=True, slots=True)
class BlobHeader:
    """The 22 bytes at the start of every blob."""

    chunk_size: int
    salt: bytes

    def __post_init__(self) -> None:
        _check_chunk_size(self.chunk_size)
        if len(self.salt) != SALT_LEN:
            raise DecodeError("salt must be 16 bytes")

    def encode(self) -> bytes:
        return _HEADER.pack(ATTACHMENT_VERSION, HEADER_TYPE, self.chunk_size, self.salt)

    @classmethod
    def decode(cls, data: bytes) -> BlobHeader:
        if len(data) != HEADER_LEN:
            raise DecodeError(f"an attachment header is {HEADER_LEN} bytes")
        version, kind, chunk_size, salt = _HEADER.unpack(data)
        if version != ATTACHMENT_VERSION:
            raise UnsupportedVersion(version)
        if kind != HEADER_TYPE:
            raise DecodeError("not an attachment header")
        return cls(chunk_size, salt)


class _Keys:
    """The AES-GCM key and nonce prefix of one blob, and the per-chunk nonce and AAD."""

    __slots__ = ("_aead", "_header", "_prefix")

    def __init__(self, file_key: bytes, header: bytes, salt: bytes) -> None:
        if len(file_key) != KEY_LEN:
            raise LocalProtocolError("an attachment key is 32 bytes")
        okm = hkdf(file_key, salt=salt, info=_INFO, length=KEY_LEN + _PREFIX_LEN)
        self._aead = AESGCM(okm[:KEY_LEN])
        self._prefix = okm[KEY_LEN:]
        self._header = header

    def _nonce_aad(self, index: int, final: bool) -> tuple[bytes, bytes]:
        if index >= _MAX_CHUNKS:  # unreachable under MAX_ATTACHMENT_SIZE; kept for safety
            raise AttachmentTooLarge()
        tail = struct.pack(">IB", index, final)
        return self._prefix + tail, self._header + tail

    def seal(self, index: int, final: bool, plaintext: bytes | bytearray | memoryview) -> bytes:
        nonce, aad = self._nonce_aad(index, final)
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, index: int, final: bool, ciphertext: bytes | memoryview) -> bytes:
        nonce, aad = self._nonce_aad(index, final)
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except Exception:  # InvalidTag, or a ValueError for a malformed length
            raise InvalidAttachment() from None

    def __repr__(self) -> str:
        return "_Keys(<secret>)"


class Encryptor:
    """Incremental encryption of one attachment.

    Feed plaintext in pieces of any size to :meth:`update`; it returns the ciphertext of
    every chunk completed so far (the header first, with the first call). :meth:`finalize`
    returns the final chunk. The concatenation of all outputs is the blob. Output is
    deterministic given the key, salt and chunk size: encrypting the same file twice gives
    the same blob (the client hashes a first pass and streams a second)."""

    def __init__(
        self, file_key: bytes, *, salt: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        header = BlobHeader(chunk_size, salt)
        self.chunk_size = chunk_size
        self.header = header.encode()
        self._keys = _Keys(file_key, self.header, salt)
        self._buffer = bytearray()
        self._index = 0
        self._size = 0
        self._started = False
        self._done = False

    @property
    def size(self) -> int:
        """Plaintext bytes fed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._done:
            raise LocalProtocolError("this encryptor is finalized")
        self._size += len(data)
        if self._size > MAX_ATTACHMENT_SIZE:
            raise AttachmentTooLarge()
        out: list[bytes] = []
        if not self._started:
            self._started = True
            out.append(self.header)
        cs = self.chunk_size
        view = memoryview(data)
        if self._buffer:
            take = min(cs - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < cs:
                return b"".join(out)
            out.append(self._seal(self._buffer))
            self._buffer = bytearray()
        whole = len(view) - len(view) % cs
        for start in range(0, whole, cs):  # full chunks straight from the caller's buffer
            out.append(self._seal(view[start : start + cs]))
        self._buffer += view[whole:]
        return out[0] if len(out) == 1 else b"".join(out)

    def _seal(self, chunk: bytes | bytearray | memoryview) -> bytes:
        sealed = self._keys.seal(self._index, False, chunk)
        self._index += 1
        return sealed

    def finalize(self) -> bytes:
        """The final chunk (holding the last ``0 .. chunk_size - 1`` bytes)."""
        if self._done:
            raise LocalProtocolError("this encryptor is finalized")
        self._done = True
        head = b"" if self._started else self.header
        last = self._keys.seal(self._index, True, bytes(self._buffer))
        self._buffer = bytearray()
        return head + last

    def __repr__(self) -> str:
        return f"Encryptor(chunk_size={self.chunk_size}, size={self._size})"


class Decryptor:
    """Incremental checking and decryption of one blob whose pointer is known.

    Feed the blob in pieces of any split to :meth:`update`; it returns the plaintext of
    every non-final chunk that authenticated. :meth:`finalize` checks the final chunk, the
    total length and the digest (constant time) and only then returns the last plaintext.
    Any failure of the blob raises an :class:`InvalidAttachment` (``TruncatedAttachment``,
    ``TrailingData``; a header that is not the one the pointer implies is plain
    ``InvalidAttachment``); after a failure the decryptor refuses further input."""

    def __init__(
        self,
        file_key: bytes,
        *,
        size: int,
        digest: bytes,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        _check_chunk_size(chunk_size)
        if not 0 <= size <= MAX_ATTACHMENT_SIZE or len(digest) != DIGEST_LEN:
            raise LocalProtocolError("bad attachment size or digest")
        if len(file_key) != KEY_LEN:
            raise LocalProtocolError("an attachment key is 32 bytes")
        self._file_key = file_key
        self._digest = digest
        self.size = size
        self.chunk_size = chunk_size
        self.ciphertext_size = ciphertext_size(size, chunk_size)
        self._full_chunks = size // chunk_size
        self._keys: _Keys | None = None
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._received = 0
        self._index = 0
        self._failed = False
        self._done = False

    @classmethod
    def for_pointer(cls, pointer: AttachmentPointer) -> Decryptor:
        return cls(
            pointer.key, size=pointer.size, digest=pointer.digest, chunk_size=pointer.chunk_size
        )

    @property
    def received(self) -> int:
        """Blob bytes fed so far."""
        return self._received

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._failed or self._done:
            raise LocalProtocolError("this decryptor is finished")
        try:
            return self._update(data)
        except BaseException:
            self._failed = True
            raise

    def _update(self, data: bytes | bytearray | memoryview) -> bytes:
        self._received += len(data)
        if self._received > self.ciphertext_size:
            raise TrailingData()
        self._hash.update(data)
        self._buffer += data
        out: list[bytes] = []
        if self._keys is None:
            if len(self._buffer) < HEADER_LEN:
                return b""
            try:
                header = BlobHeader.decode(bytes(self._buffer[:HEADER_LEN]))
            except DecodeError:  # the pointer fixed the format: anything else is forged
                raise InvalidAttachment() from None
            if header.chunk_size != self.chunk_size:
                raise InvalidAttachment()
            self._keys = _Keys(self._file_key, bytes(self._buffer[:HEADER_LEN]), header.salt)
            del self._buffer[:HEADER_LEN]
        segment = self.chunk_size + TAG_LEN
        start = 0
        view = memoryview(self._buffer)
        try:
            while self._index < self._full_chunks and len(view) - start >= segment:
                out.append(self._keys.open(self._index, False, view[start : start + segment]))
                self._index += 1
                start += segment
        finally:
            view.release()
        if start:
            del self._buffer[:start]
        return out[0] if len(out) == 1 else b"".join(out)

    def finalize(self) -> bytes:
        """Check the final chunk, the length and the digest; return the last plaintext."""
        if self._failed or self._done:
            raise LocalProtocolError("this decryptor is finished")
        self._failed = True  # until proven otherwise
        if self._received < self.ciphertext_size or self._keys is None:
            raise TruncatedAttachment()
        assert self._index == self._full_chunks
        last = self._keys.open(self._index, True, bytes(self._buffer))
        if not hmac.compare_digest(self._hash.digest(), self._digest):
            raise InvalidAttachment()
        self._buffer = bytearray()
        self._failed = False
        self._done = True
        return last

    def __repr__(self) -> str:
        return f"Decryptor(size={self.size}, received={self._received})"


# --------------------------------------------------------------------------- file names

# Control, format (bidi overrides, zero-width), surrogate, private-use, line and paragraph
# separators. Unassigned code points are kept: which ones are unassigned depends on the
# Unicode version, and two clients must agree on which names are valid.
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def sanitize_filename(name: str, *, default: str = "attachment") -> str:
    """A name safe to create inside a download directory: the last path component only
    (``/`` and ``\\`` both separate), without control or format characters (no NUL, no
    newline, no bidirectional overrides that make ``exe.txt`` look like ``txt.exe``),
    without leading dots or surrounding spaces, never ``.`` or ``..``, at most 255 bytes
    of UTF-8 (the extension is kept when the stem is shortened). ``default`` when nothing
    is left."""
    base = re.split(r"[/\\]", name)[-1]
    base = "".join(c for c in base if unicodedata.category(c) not in _DROP_CATEGORIES)
    base = base.strip().lstrip(".").strip()
    if not base:
        return default
    if len(base.encode("utf-8")) > MAX_FILENAME:
        stem, dot, ext = base.rpartition(".")
        if dot and stem and 0 < len(ext.encode("utf-8")) <= 32:
            room = MAX_FILENAME - len(ext.encode("utf-8")) - 1
            base = _truncate_utf8(stem, room).rstrip() + "." + ext
        else:
            base = _truncate_utf8(base, MAX_FILENAME).rstrip()
    return base


def valid_content_type(text: str) -> bool:
    """Whether ``text`` is a content type a pointer accepts: a plain ``type/subtype``."""
    return _CONTENT_TYPE.fullmatch(text) is not None


# --------------------------------------------------------------------------- pointer


@dataclass(frozen=True, slots=True)
class AttachmentPointer:
    """Everything a recipient needs to fetch and check a blob; travels inside the
    end-to-end encryption (a text message's attachment, a group state too large to
    inline). Encoding::

        version (1) = 0x01 | type (1) = 0x30 | attachment_id (32) | key (32) |
        digest (32) | size (8) | ciphertext_size (8) | chunk_size (4) |
        filename length (1) | filename (UTF-8) | content type length (1) | content type

    Construction and :meth:`decode` are equally strict: a filename that
    :func:`sanitize_filename` would change, a content type that is not a plain
    ``type/subtype``, a size over the limit, a ``ciphertext_size`` that does not match
    ``size`` and ``chunk_size``, a bad length or a trailing byte is a :class:`DecodeError`.
    The repr shows no key."""

    attachment_id: bytes
    key: bytes
    digest: bytes
    size: int
    ciphertext_size: int
    filename: str
    content_type: str = "application/octet-stream"
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if len(self.attachment_id) != ID_LEN:
            raise DecodeError("an attachment id is 32 bytes")
        if len(self.key) != KEY_LEN or len(self.digest) != DIGEST_LEN:
            raise DecodeError("an attachment key and digest are 32 bytes")
        _check_chunk_size(self.chunk_size)
        if not 0 <= self.size <= MAX_ATTACHMENT_SIZE:
            raise DecodeError("attachment size out of range")
        if self.ciphertext_size != ciphertext_size(self.size, self.chunk_size):
            raise DecodeError("attachment ciphertext size does not match its size")
        if not self.filename or sanitize_filename(self.filename) != self.filename:
            raise DecodeError("attachment file name is not a plain, safe file name")
        if not valid_content_type(self.content_type):
            raise DecodeError("attachment content type must be a plain type/subtype")

    def encode(self) -> bytes:
        name = self.filename.encode("utf-8")
        kind = self.content_type.encode("ascii")
        return b"".join(
            (
                _POINTER.pack(
                    ATTACHMENT_VERSION,
                    POINTER_TYPE,
                    self.attachment_id,
                    self.key,
                    self.digest,
                    self.size,
                    self.ciphertext_size,
                    self.chunk_size,
                ),
                bytes((len(name),)),
                name,
                bytes((len(kind),)),
                kind,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> AttachmentPointer:
        """Parse, or raise :class:`DecodeError` (:class:`UnsupportedVersion`); nothing else."""
        data = bytes(data)
        if len(data) < 2:
            raise DecodeError("truncated attachment pointer")
        if data[0] != ATTACHMENT_VERSION:
            raise UnsupportedVersion(data[0])
        if data[1] != POINTER_TYPE:
            raise DecodeError("not an attachment pointer")
        if len(data) < _POINTER.size + 2:
            raise DecodeError("truncated attachment pointer")
        _, _, attachment_id, key, digest, size, ct_size, chunk_size = _POINTER.unpack_from(data)
        pos = _POINTER.size
        name_len = data[pos]
        name_raw = data[pos + 1 : pos + 1 + name_len]
        pos += 1 + name_len
        if len(name_raw) != name_len or pos >= len(data):
            raise DecodeError("truncated attachment pointer")
        kind_len = data[pos]
        kind_raw = data[pos + 1 : pos + 1 + kind_len]
        pos += 1 + kind_len
        if len(kind_raw) != kind_len or pos > len(data):
            raise DecodeError("truncated attachment pointer")
        if pos != len(data):
            raise DecodeError("trailing bytes after an attachment pointer")
        try:
            filename = name_raw.decode("utf-8")
            content_type = kind_raw.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("attachment file name or type is not valid text") from None
        return cls(attachment_id, key, digest, size, ct_size, filename, content_type, chunk_size)

    def __repr__(self) -> str:
        return (
            f"AttachmentPointer(attachment_id={self.attachment_id.hex()[:16]}…, "
            f"size={self.size}, filename={self.filename!r}, "
            f"content_type={self.content_type!r}, chunk_size={self.chunk_size})"
        )
