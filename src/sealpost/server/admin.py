"""What ``sealpost admin`` does, on a server's data directory (SQLite) or database
(PostgreSQL) directly, while the server runs.

Every operation goes through the same :class:`~sealpost.server.storage.base.Storage`
methods the server uses, each one transaction, so what the server guarantees holds for
them too; a running server learns of a removal within a second (it polls
:meth:`Storage.removals`), forgets what it cached of the account, closes its devices'
streams and writes the audit line. Nothing here reads anything a thief of the server
could not: it sees counts, public log entries and the hashes of invite codes.

- :func:`stats`: counts and sizes (accounts, devices, queued messages and bytes, blobs and
  bytes, log size, the oldest queued message's age); nothing that identifies anyone.
- :func:`remove_account`: the account whole (devices, prekeys, queues, revocations,
  attachments and their blobs), a signed deletion entry in the key-transparency log, the
  name held for ``username_quarantine``.
- :func:`purge`: expire messages, nonces and attachments now.
- :func:`backup` / :func:`restore`: a tar file with a consistent online copy of the
  SQLite database (SQLite's backup API), the server and log keys and the blobs; with
  PostgreSQL the database part is ``pg_dump``'s (docs/OPERATIONS.md, "Backups").
- :func:`create_invite`, :func:`invites`, :func:`revoke_invite`.

Each refuses (:class:`AdminError`, one line saying what is wrong) when the server's data
is not where the configuration says: it never creates a database or a key.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from sealpost import __version__
from sealpost.crypto.sign import ED25519_LEN, SigningKey
from sealpost.entropy import Rng
from sealpost.server.blobs import BlobStore, DirectoryBlobStore
from sealpost.server.config import ServerConfig
from sealpost.server.invites import new_invite
from sealpost.server.storage.base import (
    InviteRecord,
    PurgeResult,
    RemovedAccount,
    Storage,
    StorageStats,
    UnknownAccount,
    UnknownInvite,
)
from sealpost.transparency.log import DeletionCause

__all__ = [
    "AdminError",
    "ServerStats",
    "backup",
    "create_invite",
    "invites",
    "purge",
    "remove_account",
    "restore",
    "revoke_invite",
    "stats",
]

DATABASE_FILE: Final = "sealpost.db"
KEY_FILES: Final = ("server_key", "log_key")
MANIFEST: Final = "sealpost-backup.json"
BACKUP_FORMAT: Final = 1
_BLOB_NAME: Final = re.compile(r"blobs/[0-9a-f]{64}")


class AdminError(Exception):
    """The operation cannot be done as asked (the message says why, in one line)."""


@dataclass(frozen=True, slots=True)
class ServerStats:
    storage: StorageStats
    blob_files: int
    blob_bytes: int

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self.storage)
        doc["blob_files"] = self.blob_files
        doc["blob_bytes"] = self.blob_bytes
        return doc


def _database(config: ServerConfig) -> Path:
    path = config.data / DATABASE_FILE
    if not config.database and not path.is_file():
        raise AdminError(
            f"no sealpost database at {path}: pass the server's --data directory "
            "(or --database for PostgreSQL)"
        )
    return path


def _log_key(config: ServerConfig) -> SigningKey:
    path = config.data / "log_key"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdminError(
            f"cannot read the log key {path} ({exc.strerror}): pass the server's --data "
            "directory, as the user the server runs as"
        ) from None
    if len(data) != ED25519_LEN:
        raise AdminError(f"{path} is not a sealpost log key")
    return SigningKey.from_private_bytes(data)


@contextlib.asynccontextmanager
async def opened(
    config: ServerConfig, *, log_key: SigningKey | None = None
) -> AsyncIterator[Storage]:
    """The server's storage, opened beside the running server (SQLite: no checkpoint at
    close; PostgreSQL: no migration, no process lock, never the leader, and refused if
    ``log_key``, about to sign, is not the key the deployment's processes serve)."""
    storage: Storage
    if config.database:
        from sealpost.server.storage.pg_cluster import ClusterError
        from sealpost.server.storage.postgres import PostgresStorage

        pg = storage = PostgresStorage(config.database, admin=True)
        try:
            await pg.open()
        except ClusterError as exc:
            raise AdminError(str(exc)) from None
        except Exception as exc:  # asyncpg: no such database, refused, unreachable
            raise AdminError(f"cannot open the database: {type(exc).__name__}: {exc}") from None
        if log_key is not None:
            try:
                await pg.check_log_key(log_key.public_key().public_bytes_raw())
            except ClusterError as exc:
                await pg.close()
                raise AdminError(str(exc)) from None
            except BaseException:
                await pg.close()
                raise
    else:
        from sealpost.server.storage.sqlite import SqliteStorage

        storage = SqliteStorage(_database(config), readers=1, checkpoint=False)
        try:
            await storage.open()
        except (sqlite3.Error, RuntimeError) as exc:
            raise AdminError(f"cannot open {_database(config)}: {exc}") from None
    try:
        yield storage
    finally:
        await storage.close()


def _blobs(config: ServerConfig) -> BlobStore:
    return DirectoryBlobStore(config.data / "blobs", upload_timeout=config.upload_timeout)


async def stats(config: ServerConfig) -> ServerStats:
    async with opened(config) as storage:
        counted = await storage.stats()
    files = total = 0
    root = config.data / "blobs"
    if root.is_dir():
        for path in root.iterdir():
            if path.is_file() and not path.name.endswith(".part"):
                files += 1
                total += path.stat().st_size
    return ServerStats(counted, files, total)


async def remove_account(
    config: ServerConfig, username: str, *, quarantine: int, now: float | None = None
) -> RemovedAccount:
    """Remove the account named ``username`` by the operator (see the module docstring);
    its name is held for ``quarantine`` seconds."""
    _database(config)  # said first: the data directory is not a server's at all
    key = _log_key(config)
    now = time.time() if now is None else now
    async with opened(config, log_key=key) as storage:
        account = await storage.account_by_username(username.lower())
        if account is None:
            raise AdminError(f"no account is named {username!r}")
        try:
            removed = await storage.remove_account(
                account.account_id,
                log_key=key,
                cause=DeletionCause.OPERATOR,
                now_ms=int(now * 1000),
                free_at=int(now) + quarantine,
            )
        except UnknownAccount:
            raise AdminError(f"no account is named {username!r} (removed meanwhile)") from None
    blobs = _blobs(config)
    for blob_id in removed.attachments:
        await blobs.delete(blob_id)
    return removed


async def purge(config: ServerConfig, *, now: float | None = None) -> PurgeResult:
    async with opened(config) as storage:
        result = await storage.purge(int(time.time() if now is None else now))
    blobs = _blobs(config)
    for blob_id in result.attachments:
        await blobs.delete(blob_id)
    return result


async def create_invite(
    config: ServerConfig, *, uses: int, expires_in: int, rng: Rng, now: float | None = None
) -> tuple[str, InviteRecord]:
    """A new invite for ``uses`` registrations, expiring ``expires_in`` seconds from now
    (0: never); its code (shown once: only its hash is kept) and its record."""
    if uses < 1:
        raise AdminError("an invite is for at least one registration")
    created = int(time.time() if now is None else now)
    code, invite_id, digest = new_invite(rng)
    record = InviteRecord(
        invite_id, uses, 0, created, created + expires_in if expires_in else 0, False
    )
    async with opened(config) as storage:
        await storage.create_invite(record, digest)
    return code, record


async def invites(config: ServerConfig) -> list[InviteRecord]:
    async with opened(config) as storage:
        return await storage.invites()


async def revoke_invite(config: ServerConfig, invite_id: str) -> None:
    async with opened(config) as storage:
        try:
            await storage.revoke_invite(invite_id.strip().lower()[:8])
        except UnknownInvite:
            raise AdminError(f"no invite has the id {invite_id!r}") from None


# ---------------------------------------------------------------------- backups


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def backup(config: ServerConfig, out: Path) -> dict[str, Any]:
    """Write the server's state to ``out`` (a tar file, mode 0600): a consistent online
    copy of the SQLite database made with SQLite's backup API (one read snapshot: writers
    go on meanwhile), then the keys and the blobs. With PostgreSQL the database is not in
    it: ``pg_dump`` makes that part (the manifest says so). The manifest is returned."""
    keys = {}
    for name in KEY_FILES:
        try:
            keys[name] = (config.data / name).read_bytes()
        except OSError as exc:
            raise AdminError(
                f"cannot read {config.data / name} ({exc.strerror}): pass the server's --data"
            ) from None
    if out.exists():
        raise AdminError(f"{out} exists: back up to a new file")
    manifest: dict[str, Any] = {
        "format": BACKUP_FORMAT,
        "sealpost": __version__,
        "created": int(time.time()),
        "database": "postgresql" if config.database else "sqlite",
    }
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
            if not config.database:
                with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
                    copy = Path(tmp) / DATABASE_FILE
                    manifest["log_entries"] = _copy_sqlite(_database(config), copy)
                    tar.add(copy, DATABASE_FILE)
            else:
                manifest["note"] = "the database is pg_dump's (docs/OPERATIONS.md, Backups)"
            for name, data in keys.items():
                _add_bytes(tar, name, data)
            blobs = 0
            root = config.data / "blobs"
            for path in sorted(root.iterdir()) if root.is_dir() else []:
                if _BLOB_NAME.fullmatch(f"blobs/{path.name}"):
                    with contextlib.suppress(FileNotFoundError):  # expired meanwhile
                        tar.add(path, f"blobs/{path.name}")
                        blobs += 1
            manifest["blobs"] = blobs
            _add_bytes(tar, MANIFEST, json.dumps(manifest, sort_keys=True).encode())
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return manifest


def _copy_sqlite(source: Path, target: Path) -> int:
    """SQLite's online backup of ``source`` into ``target``, in one step (one snapshot);
    how many log entries the copy holds."""
    src = sqlite3.connect(source)
    try:
        src.execute("PRAGMA busy_timeout=5000")
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            (size,) = dst.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries").fetchone()
        finally:
            dst.close()
    finally:
        src.close()
    return int(size)


def restore(archive: Path, data: Path) -> dict[str, Any]:
    """Unpack a :func:`backup` into the new data directory ``data`` (which must not exist
    or be empty: a restore never overwrites a server's data). The manifest is returned."""
    if data.exists() and (not data.is_dir() or any(data.iterdir())):
        raise AdminError(f"{data} is not empty: restore into a new data directory")
    try:
        tar = tarfile.open(archive, mode="r")  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as exc:
        raise AdminError(f"cannot read the backup {archive}: {exc}") from None
    with tar:
        members = {m.name: m for m in tar.getmembers()}
        if MANIFEST not in members:
            raise AdminError(f"{archive} is not a sealpost backup (no {MANIFEST})")
        manifest = json.loads(_read(tar, members[MANIFEST]))
        if manifest.get("format") != BACKUP_FORMAT:
            raise AdminError(f"{archive} is a backup of another format")
        allowed = {MANIFEST, DATABASE_FILE, *KEY_FILES}
        for name, member in members.items():
            if not member.isfile() or (name not in allowed and not _BLOB_NAME.fullmatch(name)):
                raise AdminError(f"{archive} holds something that is not sealpost's: {name!r}")
        if any(name not in members for name in KEY_FILES):
            raise AdminError(f"{archive} lacks the server's keys")
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o700)
        (data / "blobs").mkdir(mode=0o700, exist_ok=True)
        for name, member in members.items():
            if name == MANIFEST:
                continue
            source = tar.extractfile(member)
            if source is None:
                raise AdminError(f"cannot read {name!r} from the backup")
            fd = os.open(data / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(source, fh, 1024 * 1024)
                fh.flush()
                os.fsync(fh.fileno())
    database = data / DATABASE_FILE
    if database.exists():
        conn = sqlite3.connect(database)
        try:
            (check,) = conn.execute("PRAGMA integrity_check").fetchone()
        finally:
            conn.close()
        if check != "ok":
            raise AdminError(f"the restored database does not check out: {check}")
    return dict(manifest)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise AdminError(f"cannot read {member.name!r} from the backup")
    return fh.read()
