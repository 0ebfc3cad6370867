"""Encrypted attachments against a real server process: a 100 MiB round trip with flat
memory, a tampered or truncated blob on the server's disk, the upload's signatures, a
download's size and byte ranges, and an upload whose part another process removed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Client, Device, ServerProcess, unique_name

from sealpost.client.attachments import (
    AttachmentCorrupt,
    download,
    download_file,
    upload_file,
)
from sealpost.client.transport import Identity, Transport
from sealpost.protocol.attachment import AttachmentPointer
from sealpost.protocol.signing import sign_request, trailer_message

MiB = 1024 * 1024
RSS_ALLOWANCE_MIB = 64

# Runs in a child process: upload a file, download it, report the peak RSS (VmHWM) after
# a small warm-up round trip (imports, connection, buffers) and after the big one.
CHILD = r"""
import asyncio, json, sys
from pathlib import Path
from sealpost.client.attachments import download_file, upload_file
from sealpost.client.transport import Identity, Transport
from sealpost.crypto.sign import SigningKey

def hwm_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")

async def main(url, key_hex, account_hex, source, small, out_dir):
    identity = Identity(SigningKey.from_private_bytes(bytes.fromhex(key_hex)),
                        bytes.fromhex(account_hex), 1)
    async with Transport(url, identity) as transport:
        warm = await upload_file(transport, Path(small))
        await download_file(transport, warm, Path(out_dir) / "warm")
        baseline = hwm_kib()
        pointer = await upload_file(transport, Path(source))
        saved = await download_file(transport, pointer, Path(out_dir) / "big")
        peak = hwm_kib()
    print(json.dumps({"baseline_kib": baseline, "peak_kib": peak, "saved": str(saved),
                      "pointer": pointer.encode().hex()}))

asyncio.run(main(*sys.argv[1:]))
"""


def _identity(client: Client) -> Identity:
    assert client.device is not None
    return Identity(client.device.keys.signing_key, client.device.account_id, 1)


def _sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(MiB):
            digest.update(block)
    return digest.digest()


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
        fh.write(os.urandom(size % MiB))


def _upload(url: str, identity: Identity, path: Path) -> AttachmentPointer:
    async def run() -> AttachmentPointer:
        async with Transport(url, identity) as transport:
            return await upload_file(transport, path)

    return asyncio.run(run())


def _register(server: ServerProcess) -> Client:
    client = Client(server.url, Device.generate())
    assert client.register(unique_name("att")).status_code == 201
    return client


@pytest.fixture
def own_server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server("--rate-per-address", "0", "--rate-per-account", "0")


def test_100_mib_round_trip_with_flat_memory(own_server: ServerProcess, tmp_path: Path) -> None:
    size = 100 * MiB
    source = tmp_path / "big.bin"
    _write_random(source, size)
    small = tmp_path / "small.bin"
    _write_random(small, 3 * 256 * 1024 + 17)
    out = tmp_path / "out"
    with _register(own_server) as alice:
        assert alice.device is not None
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                own_server.url,
                alice.device.keys.signing_key.private_bytes_raw().hex(),
                alice.device.account_id.hex(),
                str(source),
                str(small),
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    grown_mib = (report["peak_kib"] - report["baseline_kib"]) / 1024
    assert grown_mib < RSS_ALLOWANCE_MIB, f"peak RSS grew by {grown_mib:.1f} MiB"
    saved = Path(report["saved"])
    assert saved == out / "big" / "big.bin"
    assert saved.stat().st_size == size
    assert _sha256_file(saved) == _sha256_file(source)
    pointer = AttachmentPointer.decode(bytes.fromhex(report["pointer"]))
    assert pointer.size == size and pointer.filename == "big.bin"
    blob = own_server.data / "blobs" / pointer.attachment_id.hex()
    assert blob.stat().st_size == pointer.ciphertext_size
    assert _sha256_file(blob) == pointer.digest  # the server holds exactly what was signed


def _fetch_fails(url: str, pointer: AttachmentPointer, directory: Path) -> None:
    async def run() -> None:
        async with Transport(url) as transport:
            with pytest.raises(AttachmentCorrupt):
                await download_file(transport, pointer, directory)
            with pytest.raises(AttachmentCorrupt):
                await download(transport, pointer, directory / "exact.bin")

    asyncio.run(run())


@pytest.mark.parametrize("offset", [0, 30, 300_000, -1])
def test_tampered_blob_is_rejected_and_leaves_no_file(
    own_server: ServerProcess, tmp_path: Path, offset: int
) -> None:
    source = tmp_path / "doc.pdf"
    _write_random(source, 700_000)
    with _register(own_server) as alice:
        pointer = _upload(own_server.url, _identity(alice), source)
    blob = own_server.data / "blobs" / pointer.attachment_id.hex()
    data = bytearray(blob.read_bytes())
    data[offset] ^= 0x01
    blob.write_bytes(bytes(data))
    save_dir = tmp_path / "saved"
    save_dir.mkdir()
    _fetch_fails(own_server.url, pointer, save_dir)
    assert list(save_dir.iterdir()) == []


@pytest.mark.parametrize("cut", ["final_chunk", "mid_chunk", "header"])
def test_truncated_blob_is_rejected(own_server: ServerProcess, tmp_path: Path, cut: str) -> None:
    source = tmp_path / "video.mp4"
    _write_random(source, 2 * 256 * 1024 + 1000)
    with _register(own_server) as alice:
        pointer = _upload(own_server.url, _identity(alice), source)
    blob = own_server.data / "blobs" / pointer.attachment_id.hex()
    data = blob.read_bytes()
    keep = {"final_chunk": len(data) - 1016, "mid_chunk": len(data) // 2, "header": 10}[cut]
    blob.write_bytes(data[:keep])
    save_dir = tmp_path / "saved"
    save_dir.mkdir()
    _fetch_fails(own_server.url, pointer, save_dir)
    assert list(save_dir.iterdir()) == []


def test_downloads_never_overwrite(own_server: ServerProcess, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"first version\n")
    with _register(own_server) as alice:
        pointer = _upload(own_server.url, _identity(alice), source)
    save_dir = tmp_path / "saved"

    async def run() -> list[Path]:
        async with Transport(own_server.url) as transport:
            return [await download_file(transport, pointer, save_dir) for _ in range(3)]

    paths = asyncio.run(run())
    assert [p.name for p in paths] == ["notes.txt", "notes (1).txt", "notes (2).txt"]
    assert all(p.read_bytes() == b"first version\n" for p in paths)
    assert sorted(p.name for p in save_dir.iterdir()) == sorted(p.name for p in paths)


# --------------------------------------------------------------------------- upload signatures


def _trailer_upload(
    client: Client,
    blob: bytes,
    *,
    trailer: bytes | None = None,
    nonce: bytes | None = None,
    header_as_trailer: bool = False,
) -> int:
    """POST /v1/attachments?signature=trailer by hand; returns the status."""
    assert client.device is not None
    target = "/v1/attachments?signature=trailer"
    headers = sign_request(
        client.device.keys.signing_key,
        client.device.account_id,
        1,
        "POST",
        target,
        b"",
        now=int(time.time()),
        nonce=nonce or os.urandom(16),
    )
    if header_as_trailer:
        trailer = base64.b64decode(headers["X-Sealpost-Signature"])
    if trailer is None:
        message = trailer_message(
            "POST",
            target,
            headers["X-Sealpost-Timestamp"],
            headers["X-Sealpost-Nonce"],
            hashlib.sha256(blob).digest(),
        )
        trailer = client.device.keys.signing_key.sign(message)
    response = client.http.post(target, content=blob + trailer, headers=headers)
    return response.status_code


def _blob_files(server: ServerProcess) -> set[str]:
    return {p.name for p in (server.data / "blobs").iterdir()}


def test_trailer_signature_is_checked_and_nothing_is_kept(own_server: ServerProcess) -> None:
    with _register(own_server) as alice:
        before = _blob_files(own_server)
        assert _trailer_upload(alice, b"x" * 1000) == 201
        assert len(_blob_files(own_server) - before) == 1
        before = _blob_files(own_server)
        # a signature over other bytes, no signature at all, a body shorter than one
        assert _trailer_upload(alice, b"x" * 1000, trailer=b"\x00" * 64) == 401
        assert _trailer_upload(alice, b"", trailer=b"") == 400
        assert _trailer_upload(alice, b"short", trailer=b"") == 400
        assert _blob_files(own_server) == before


def test_header_signature_is_checked_before_the_body(own_server: ServerProcess) -> None:
    with _register(own_server) as alice:
        nonce = os.urandom(16)
        assert _trailer_upload(alice, b"y" * 100, nonce=nonce) == 201
        before = _blob_files(own_server)
        # a replayed header is refused before a byte of its body is stored
        assert _trailer_upload(alice, b"z" * 100, nonce=nonce) == 401
        # a forged header signature likewise
        assert alice.device is not None
        headers = sign_request(
            Device.generate().keys.signing_key,
            alice.device.account_id,
            1,
            "POST",
            "/v1/attachments?signature=trailer",
            b"",
            now=int(time.time()),
            nonce=os.urandom(16),
        )
        response = alice.http.post(
            "/v1/attachments?signature=trailer", content=b"w" * 164, headers=headers
        )
        assert response.status_code == 401
        assert _blob_files(own_server) == before


def test_header_and_trailer_signatures_are_not_interchangeable(own_server: ServerProcess) -> None:
    with _register(own_server) as alice:
        assert _trailer_upload(alice, b"") == 201  # an empty blob with its proper trailer
        # the same request's header signature (over an empty body) is no trailer for b""
        assert _trailer_upload(alice, b"", header_as_trailer=True) == 401


# --------------------------------------------------------------------------- the blob store


def test_a_download_answers_its_size_and_one_byte_range(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    """Downloads stream through the blob store's interface, with the size the client
    checks before a byte, and one byte range (a resumed download)."""
    source = tmp_path / "clip.bin"
    _write_random(source, 600_000)
    with _register(own_server) as alice:
        pointer = _upload(own_server.url, _identity(alice), source)
        stored = (own_server.data / "blobs" / pointer.attachment_id.hex()).read_bytes()
        path = f"/v1/attachments/{pointer.attachment_id.hex()}"
        whole = alice.http.get(path)
        part = alice.http.get(path, headers={"Range": "bytes=1000-299999"})
        past = alice.http.get(path, headers={"Range": f"bytes={len(stored)}-"})
        head = alice.http.head(path)
    assert len(stored) == pointer.ciphertext_size
    assert whole.status_code == 200 and whole.content == stored
    assert whole.headers["content-length"] == str(len(stored))
    assert part.status_code == 206 and part.content == stored[1000:300_000]
    assert part.headers["content-range"] == f"bytes 1000-299999/{len(stored)}"
    assert past.status_code == 416
    assert head.status_code == 200 and head.headers["content-length"] == str(len(stored))


def test_an_upload_whose_part_vanished_is_refused_503_and_stores_nothing(
    own_server: ServerProcess,
) -> None:
    """While an upload streams in, another process on the same blob directory with a clock
    far ahead takes its part for stale and removes it. The upload is answered with a typed
    error (it was an unhandled FileNotFoundError, a 500), nothing is stored, and the log
    says what happened without naming the blob."""
    from sealpost.server.blobs import PART_GRACE, DirectoryBlobStore

    blobs = own_server.data / "blobs"
    elsewhere = DirectoryBlobStore(
        blobs, upload_timeout=900, clock=lambda: time.time() + 10 * (900 + PART_GRACE)
    )
    blob = os.urandom(300_000)
    with _register(own_server) as alice:
        assert alice.device is not None
        target = "/v1/attachments?signature=trailer"
        headers = sign_request(
            alice.device.keys.signing_key,
            alice.device.account_id,
            1,
            "POST",
            target,
            b"",
            now=int(time.time()),
            nonce=os.urandom(16),
        )
        message = trailer_message(
            "POST",
            target,
            headers["X-Sealpost-Timestamp"],
            headers["X-Sealpost-Nonce"],
            hashlib.sha256(blob).digest(),
        )
        trailer = alice.device.keys.signing_key.sign(message)
        swept: list[int] = []

        def body() -> Iterator[bytes]:
            yield blob[:100_000]
            deadline = time.monotonic() + 10
            while not list(blobs.glob("*.part")) and time.monotonic() < deadline:
                time.sleep(0.01)
            swept.append(asyncio.run(elsewhere.purge_parts()))
            yield blob[100_000:] + trailer

        headers["Content-Length"] = str(len(blob) + len(trailer))
        response = alice.http.post(target, content=body(), headers=headers)
    assert swept == [1]
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "upload_lost"
    assert list(blobs.iterdir()) == []
    log = (own_server.logs / "stderr.1.log").read_text()
    assert "part vanished" in log
    assert "Traceback" not in log and "FileNotFoundError" not in log
    assert re.search(r"[0-9a-f]{64}", log) is None


def test_stale_parts_go_at_start_and_by_the_purge_fresh_ones_stay(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """What a crashed upload left (a part older than upload_timeout and the grace) is
    removed when the server starts and by its periodic purge; a younger part (an upload
    another process may be receiving) is not."""
    from sealpost.server.blobs import PART_GRACE

    blobs = tmp_path / "server" / "data" / "blobs"
    blobs.mkdir(parents=True)

    def part(name: str, age: float) -> Path:
        path = blobs / f"{name * 64}.part"
        path.write_bytes(b"left over")
        os.utime(path, (time.time() - age, time.time() - age))
        return path

    stale_age = 900 + PART_GRACE + 60
    before_start, fresh = part("a", stale_age), part("b", 30)
    make_server("--purge-interval", "1")
    assert not before_start.exists()
    while_running = part("c", stale_age)
    deadline = time.monotonic() + 15
    while while_running.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not while_running.exists()
    assert fresh.exists()
