"""The attachment format: chunked AES-GCM (STREAM), the blob digest, the pointer, file names.

One named test per attack on a stored blob: truncation, reordering, duplication, swapping
chunks between blobs, flipped bits, wrong key, wrong digest, data after the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpost.client.attachments import ProgressBar, _candidates
from sealpost.protocol.attachment import (
    DEFAULT_CHUNK_SIZE,
    HEADER_LEN,
    MAX_ATTACHMENT_SIZE,
    MAX_FILENAME,
    MIN_CHUNK_SIZE,
    AttachmentPointer,
    AttachmentTooLarge,
    BlobHeader,
    Decryptor,
    Encryptor,
    InvalidAttachment,
    TrailingData,
    TruncatedAttachment,
    _Keys,
    ciphertext_size,
    sanitize_filename,
)
from sealpost.protocol.errors import (
    DecodeError,
    InvalidMessage,
    LocalProtocolError,
    UnsupportedVersion,
)
from sealpost.server.config import ServerConfig

CS = MIN_CHUNK_SIZE  # small chunks keep the tests fast
KEY = bytes(range(32))
SALT = b"\x07" * 16
TAG = 16


def encrypt(data: bytes, *, key: bytes = KEY, salt: bytes = SALT, cs: int = CS) -> bytes:
    enc = Encryptor(key, salt=salt, chunk_size=cs)
    return enc.update(data) + enc.finalize()


def decrypt(
    blob: bytes,
    size: int,
    *,
    key: bytes = KEY,
    digest: bytes | None = None,
    cs: int = CS,
    split: int = 10_007,
) -> bytes:
    dec = Decryptor(key, size=size, digest=digest or hashlib.sha256(blob).digest(), chunk_size=cs)
    out = [dec.update(blob[i : i + split]) for i in range(0, len(blob), split)]
    return b"".join(out) + dec.finalize()


def chunks_of(blob: bytes, cs: int = CS) -> tuple[bytes, list[bytes]]:
    """The header and the chunk ciphertexts of a blob."""
    body = blob[HEADER_LEN:]
    seg = cs + TAG
    return blob[:HEADER_LEN], [body[i : i + seg] for i in range(0, len(body), seg)]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "size", [0, 1, CS - 1, CS, CS + 1, 2 * CS, 3 * CS + 5, 5 * CS - 1, 200_000]
)
def test_round_trip_sizes(size: int) -> None:
    data = os.urandom(size)
    blob = encrypt(data)
    assert len(blob) == ciphertext_size(size, CS)
    assert decrypt(blob, size) == data


@pytest.mark.parametrize("cs", [64 * 1024, 128 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024])
def test_every_chunk_size(cs: int) -> None:
    data = os.urandom(2 * cs + 3)
    blob = encrypt(data, cs=cs)
    assert BlobHeader.decode(blob[:HEADER_LEN]).chunk_size == cs
    assert decrypt(blob, len(data), cs=cs, split=cs // 3) == data


@given(st.lists(st.integers(0, 3 * CS), max_size=6), st.integers(1, 3 * CS))
def test_any_split_of_input_and_output(pieces: list[int], split: int) -> None:
    data = os.urandom(sum(pieces))
    enc = Encryptor(KEY, salt=SALT, chunk_size=CS)
    pos, out = 0, []
    for n in pieces:
        out.append(enc.update(data[pos : pos + n]))
        pos += n
    blob = b"".join(out) + enc.finalize()
    assert blob == encrypt(data)  # deterministic, whatever the feeding
    assert decrypt(blob, len(data), split=split) == data


def test_exact_multiples_end_with_an_empty_final_chunk() -> None:
    _, chunks = chunks_of(encrypt(os.urandom(2 * CS)))
    assert [len(c) for c in chunks] == [CS + TAG, CS + TAG, TAG]


def test_plaintext_is_released_only_after_each_chunk_authenticates() -> None:
    data = os.urandom(2 * CS + 10)
    blob = encrypt(data)
    dec = Decryptor(KEY, size=len(data), digest=hashlib.sha256(blob).digest(), chunk_size=CS)
    assert dec.update(blob[: HEADER_LEN + CS + TAG - 1]) == b""  # chunk 0 not complete
    assert dec.update(blob[HEADER_LEN + CS + TAG - 1 : HEADER_LEN + CS + TAG]) == data[:CS]
    # the final chunk is held back until finalize() has checked length and digest
    assert dec.update(blob[HEADER_LEN + CS + TAG :]) == data[CS : 2 * CS]
    assert dec.finalize() == data[2 * CS :]


def test_a_fresh_salt_gives_a_different_blob_under_the_same_key() -> None:
    data = os.urandom(100)
    assert encrypt(data, salt=b"\x01" * 16)[HEADER_LEN:] != encrypt(data)[HEADER_LEN:]


# --------------------------------------------------------------------------- attacks


def test_truncation_dropping_the_final_chunk() -> None:
    data = os.urandom(2 * CS + 10)
    blob = encrypt(data)
    header, chunks = chunks_of(blob)
    cut = header + b"".join(chunks[:-1])
    with pytest.raises(TruncatedAttachment):
        decrypt(cut, len(data), digest=hashlib.sha256(blob).digest())


@pytest.mark.parametrize("keep", [0, 1, HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 100, -1])
def test_truncation_anywhere(keep: int) -> None:
    data = os.urandom(CS + 10)
    blob = encrypt(data)
    with pytest.raises(TruncatedAttachment):
        decrypt(blob[:keep], len(data), digest=hashlib.sha256(blob).digest())


def test_truncation_at_a_chunk_boundary_with_a_lying_size() -> None:
    """Drop the tail and claim the file was shorter: the last full chunk is not final."""
    data = os.urandom(2 * CS)
    header, chunks = chunks_of(encrypt(data))
    forged = header + chunks[0] + chunks[1][:TAG]  # 'an empty final chunk' of the right size
    with pytest.raises(InvalidAttachment):
        decrypt(forged, CS)


def test_a_non_final_chunk_never_opens_as_the_final_one() -> None:
    keys = _Keys(KEY, b"h" * HEADER_LEN, SALT)
    sealed = keys.seal(3, False, b"chunk")
    assert keys.open(3, False, sealed) == b"chunk"
    with pytest.raises(InvalidAttachment):
        keys.open(3, True, sealed)
    with pytest.raises(InvalidAttachment):
        keys.open(4, False, sealed)


def test_reordered_chunks() -> None:
    data = os.urandom(3 * CS + 1)
    header, chunks = chunks_of(encrypt(data))
    chunks[0], chunks[1] = chunks[1], chunks[0]
    with pytest.raises(InvalidAttachment):
        decrypt(header + b"".join(chunks), len(data))


def test_duplicated_chunk() -> None:
    data = os.urandom(3 * CS + 1)
    header, chunks = chunks_of(encrypt(data))
    chunks[1] = chunks[0]
    with pytest.raises(InvalidAttachment):
        decrypt(header + b"".join(chunks), len(data))


def test_chunk_swapped_in_from_another_blob_under_the_same_key() -> None:
    data, other = os.urandom(2 * CS + 1), os.urandom(2 * CS + 1)
    header, chunks = chunks_of(encrypt(data))
    _, foreign = chunks_of(encrypt(other, salt=b"\x09" * 16))  # same key, its own salt
    chunks[1] = foreign[1]
    with pytest.raises(InvalidAttachment):
        decrypt(header + b"".join(chunks), len(data))


@pytest.mark.parametrize("where", ["version", "chunk_size", "salt", "chunk", "tag", "final"])
def test_flipped_bit(where: str) -> None:
    data = os.urandom(2 * CS + 100)
    blob = bytearray(encrypt(data))
    position = {
        "version": 0,
        "chunk_size": 4,
        "salt": 10,
        "chunk": HEADER_LEN + 1000,
        "tag": HEADER_LEN + CS + TAG - 1,
        "final": len(blob) - 50,
    }[where]
    blob[position] ^= 0x10
    with pytest.raises(InvalidAttachment):  # also with the digest recomputed over the forgery
        decrypt(bytes(blob), len(data))


def test_wrong_key() -> None:
    data = os.urandom(CS + 1)
    with pytest.raises(InvalidAttachment):
        decrypt(encrypt(data), len(data), key=b"\x01" * 32)


def test_wrong_digest() -> None:
    data = os.urandom(CS + 1)
    with pytest.raises(InvalidAttachment) as info:
        decrypt(encrypt(data), len(data), digest=b"\x00" * 32)
    assert type(info.value) is InvalidAttachment  # opaque: says no more
    assert isinstance(info.value, InvalidMessage)


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(16), os.urandom(CS + TAG)])
def test_data_after_the_final_chunk(extra: bytes) -> None:
    data = os.urandom(CS + 1)
    blob = encrypt(data)
    with pytest.raises(TrailingData):
        decrypt(blob + extra, len(data))


def test_size_mismatch_is_refused() -> None:
    data = os.urandom(CS + 10)
    blob = encrypt(data)
    with pytest.raises(TruncatedAttachment):
        decrypt(blob, len(data) + 1)  # the pointer claims a byte more
    with pytest.raises(TrailingData):
        decrypt(blob, len(data) - 1)


def test_a_failed_decryptor_refuses_more_input() -> None:
    data = os.urandom(CS + 1)
    blob = bytearray(encrypt(data))
    blob[HEADER_LEN] ^= 1
    dec = Decryptor(KEY, size=len(data), digest=hashlib.sha256(blob).digest(), chunk_size=CS)
    with pytest.raises(InvalidAttachment):
        dec.update(bytes(blob))
    with pytest.raises(LocalProtocolError):
        dec.update(b"")
    with pytest.raises(LocalProtocolError):
        dec.finalize()


def test_the_encryptor_refuses_more_than_the_limit() -> None:
    enc = Encryptor(KEY, salt=SALT)
    with pytest.raises(AttachmentTooLarge):
        enc.update(bytes(MAX_ATTACHMENT_SIZE + 1))  # calloc'd: refused before it is read


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(DecodeError):
        Encryptor(KEY, salt=SALT, chunk_size=100_000)  # not a power of two
    with pytest.raises(DecodeError):
        Encryptor(KEY, salt=SALT, chunk_size=32 * 1024)
    with pytest.raises(LocalProtocolError):
        Encryptor(b"short", salt=SALT)
    with pytest.raises(LocalProtocolError):
        Decryptor(KEY, size=MAX_ATTACHMENT_SIZE + 1, digest=b"\x00" * 32)


def test_header_decoding() -> None:
    header = BlobHeader(DEFAULT_CHUNK_SIZE, SALT)
    assert BlobHeader.decode(header.encode()) == header
    with pytest.raises(UnsupportedVersion):
        BlobHeader.decode(b"\x02" + header.encode()[1:])
    with pytest.raises(DecodeError):
        BlobHeader.decode(header.encode()[:-1])


# --------------------------------------------------------------------------- pointer


def pointer(**fields: object) -> AttachmentPointer:
    values: dict[str, object] = {
        "attachment_id": b"\x01" * 32,
        "key": b"\x02" * 32,
        "digest": b"\x03" * 32,
        "size": 1000,
        "ciphertext_size": ciphertext_size(1000),
        "filename": "holiday photo.jpg",
        "content_type": "image/jpeg",
        "chunk_size": DEFAULT_CHUNK_SIZE,
    }
    values.update(fields)
    return AttachmentPointer(**values)  # type: ignore[arg-type]


def test_pointer_round_trip() -> None:
    p = pointer()
    data = p.encode()
    assert AttachmentPointer.decode(data) == p
    assert len(data) == 2 + 96 + 20 + 2 + len("holiday photo.jpg") + len("image/jpeg")


def test_pointer_with_a_unicode_name_of_255_bytes() -> None:
    name = "é" * 125 + "x.pdf"
    assert len(name.encode()) == MAX_FILENAME
    p = pointer(filename=name)
    assert AttachmentPointer.decode(p.encode()).filename == name


def test_pointer_decoding_is_strict() -> None:
    data = pointer().encode()
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            AttachmentPointer.decode(data[:cut])
    with pytest.raises(DecodeError):
        AttachmentPointer.decode(data + b"\x00")
    with pytest.raises(UnsupportedVersion):
        AttachmentPointer.decode(b"\x02" + data[1:])
    with pytest.raises(DecodeError):
        AttachmentPointer.decode(data[:1] + b"\x10" + data[2:])


@pytest.mark.parametrize(
    "fields",
    [
        {"filename": "../etc/passwd"},
        {"filename": "a/b"},
        {"filename": "a\\b"},
        {"filename": "bad\x00name"},
        {"filename": "line\nbreak"},
        {"filename": "\u202egnp.exe"},
        {"filename": ".."},
        {"filename": ""},
        {"filename": "x" * 256},
        {"content_type": "text/html; charset=utf-8"},
        {"content_type": "nonsense"},
        {"content_type": ""},
        {
            "size": MAX_ATTACHMENT_SIZE + 1,
            "ciphertext_size": ciphertext_size(MAX_ATTACHMENT_SIZE + 1),
        },
        {"ciphertext_size": ciphertext_size(1000) + 1},
        {"chunk_size": 3000},
        {"key": b"\x02" * 31},
        {"attachment_id": b"\x01" * 33},
    ],
)
def test_pointer_refuses_bad_fields(fields: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        pointer(**fields)


def test_pointer_decode_refuses_an_unsafe_name_on_the_wire() -> None:
    good = pointer(filename="abc").encode()
    evil = good.replace(b"\x03abc", b"\x03a/c")
    with pytest.raises(DecodeError):
        AttachmentPointer.decode(evil)


@given(st.binary(max_size=400))
def test_pointer_decode_accepts_or_raises_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        AttachmentPointer.decode(b"\x01\x30" + data)


def test_no_secret_in_reprs() -> None:
    p = pointer(key=bytes(range(100, 132)))
    for text in (repr(p), str(p)):
        assert p.key.hex()[:12] not in text
    assert KEY.hex()[:12] not in repr(Encryptor(KEY, salt=SALT))
    assert KEY.hex()[:12] not in repr(Decryptor(KEY, size=0, digest=b"\x00" * 32))


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\evil.exe", "evil.exe"),
        ("dir/", "attachment"),
        ("nul\x00byte.txt", "nulbyte.txt"),
        ("tab\tand\nnewline", "tabandnewline"),
        ("\x1b[31mred\x1b[0m.txt", "[31mred[0m.txt"),
        ("\u202egnp.exe", "gnp.exe"),
        ("zero\u200bwidth", "zerowidth"),
        (".", "attachment"),
        ("..", "attachment"),
        (".bashrc", "bashrc"),
        ("  spaced  ", "spaced"),
        ("", "attachment"),
        ("日本語.txt", "日本語.txt"),
    ],
)
def test_sanitize_filename(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


def test_sanitize_keeps_the_extension_when_shortening() -> None:
    name = sanitize_filename("é" * 300 + ".tar.gz")
    assert len(name.encode()) <= MAX_FILENAME
    assert name.endswith("é.gz") or name.endswith(".gz")
    assert name.endswith(".gz")


@given(st.text(max_size=400))
def test_sanitize_is_idempotent_and_safe(name: str) -> None:
    clean = sanitize_filename(name)
    assert sanitize_filename(clean) == clean
    assert clean and "/" not in clean and "\\" not in clean
    assert len(clean.encode()) <= MAX_FILENAME
    assert clean not in (".", "..")
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in clean)


def test_download_name_candidates_stay_within_the_limit() -> None:
    name = sanitize_filename("x" * 300 + ".txt")
    candidates = _candidates(name)
    assert candidates[0] == name
    assert candidates[1].endswith(" (1).txt")
    assert all(len(c.encode()) <= MAX_FILENAME for c in candidates)
    assert _candidates("README")[2] == "README (2)"


# --------------------------------------------------------------------------- limits, progress


def test_server_default_allows_100_mib_of_plaintext() -> None:
    config = ServerConfig(data=Path("unused"))
    assert config.max_attachment >= ciphertext_size(MAX_ATTACHMENT_SIZE, MIN_CHUNK_SIZE)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal_and_rate_limits() -> None:
    quiet = io.StringIO()
    bar = ProgressBar("file.bin", stream=quiet)
    bar(50, 100)
    bar(100, 100)
    assert quiet.getvalue() == ""

    now = [0.0]
    tty = _Tty()
    bar = ProgressBar("file\x1b]0;evil\x07.bin", stream=tty, interval=0.5, clock=lambda: now[0])
    for done in range(0, 100, 10):
        now[0] += 0.1
        bar(done, 100)
    drawn = tty.getvalue().count("\r")
    assert 1 <= drawn <= 3
    bar(100, 100)  # the end is always drawn, then the line is ended
    assert tty.getvalue().count("\r") == drawn + 1
    assert tty.getvalue().endswith("\n")
    assert "\x1b" not in tty.getvalue() and "\x07" not in tty.getvalue()
    assert "100%" in tty.getvalue()


def test_random_splits_round_trip_many_times() -> None:
    rnd = random.Random(7)
    for _ in range(20):
        data = os.urandom(rnd.randrange(0, 4 * CS))
        assert decrypt(encrypt(data), len(data), split=rnd.randrange(1, 2 * CS)) == data
