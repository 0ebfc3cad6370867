"""The profile's local store: a SQLCipher database whose key is wrapped by the passcode.

A profile directory (mode 0700) holds two files, and a third, ``lock`` (0600, a pid): one
process at a time has a profile open (:mod:`sealpost.client.profilelock`; a second opener
waits up to ``lock_timeout`` seconds, then gets :class:`ProfileBusy`). Every rewrite of the
keyfile goes through a temp file of its own name.

``keyfile.json`` (mode 0600, always replaced atomically)
    the database key (32 random bytes) wrapped with AES-256-GCM under a key derived from
    the passcode with Argon2id (RFC 9106's second recommended set by default: t=3,
    m=64 MiB, p=4), with the parameters and salt beside it so they can be raised later,
    and the count of wrong passcodes. The AEAD's associated data binds the format version,
    the KDF parameters and the salt, so they cannot be swapped for weaker ones: a keyfile
    whose parameters were edited fails like a wrong passcode. Parameters outside sane bounds
    are refused as :class:`CorruptProfile` before Argon2id runs.
``profile.db``
    the SQLCipher database (every page encrypted; ``PRAGMA key`` with the raw key; WAL,
    ``synchronous=FULL``, foreign keys, ``secure_delete``). Its schema is versioned with
    ``PRAGMA user_version``; :data:`_MIGRATIONS` moves an older profile forward when opened.

Wrong passcodes. Each try is counted in the keyfile *before* Argon2id runs (so killing the
process mid-try still counts it) and the counter is reset by a success. The first four
failures cost nothing; from the fifth on, the next try must wait (:func:`delay_after`:
30 s, 1 min, 5 min, 15 min, then 1 h each), like a phone. A try during the wait raises
:class:`TooManyAttempts` without running Argon2id and without being counted. If the clock
went backwards, the wait is never longer than the schedule says. With ``wipe_after=N``, the
Nth failure in a row destroys the wrapped key (crypto erasure: the database is then noise)
and overwrites and deletes the database, best effort (SSDs, copy-on-write file systems and
journals may keep old blocks; without the key they are noise). See docs/THREAT_MODEL.md for
what a software counter cannot stop: an attacker with a copy of the files guesses offline,
paying only Argon2id's price per guess, and anyone who can write the keyfile can reset
the counter (by editing it, not only by restoring an old copy).

Every file of the profile (keyfile, ``lock``, the database and SQLite's ``-wal`` and
``-shm`` beside it) is mode 0600 and the directory 0700, whatever the umask: the database
file is made 0600 before SQLite writes a byte (SQLite gives its -wal and -shm the
database's mode), and an open tightens the modes of a profile made otherwise.

Changing the passcode re-wraps the same database key under a new salt (and optionally
stronger parameters); the database is not re-encrypted.

Errors (all :class:`StoreError`; none carries a passcode or key)::

    StoreError
    ├── ProfileExists       create() where a profile already is
    ├── NoProfile           open() where there is none
    ├── WrongPasscode       .failures, .retry_after
    ├── TooManyAttempts     a try before the delay has passed; .retry_after
    ├── ProfileBusy         another process has the profile open; .pid
    ├── ProfileWiped        the key was destroyed after too many failures
    ├── ReadOnlyProfile     a write to a store opened read-only
    ├── CorruptProfile      the keyfile or database is damaged
    │   └── UnsupportedSchema   the database was written by a newer sealpost
    └── WeakParameters      (also a ValueError) empty passcode, KDF parameters out of bounds

Example::

    store = Store.create(Path("profile"), "a long passcode", params=TEST_PARAMS)
    with store.transaction() as conn:
        store.set_meta(conn, "greeting", b"hello")
    store.close()
    with Store.open(Path("profile"), "a long passcode") as store:
        assert store.get_meta("greeting") == b"hello"
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlcipher3.dbapi2 as sqlcipher  # type: ignore[import-untyped]
from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw

from sealpost._errors import ProtocolError
from sealpost.client.profilelock import LOCK_FILE, LockHeld, ProfileLock
from sealpost.crypto.aead import aead_decrypt, aead_encrypt
from sealpost.entropy import Rng, system_rng

__all__ = [
    "DEFAULT_PARAMS",
    "TEST_PARAMS",
    "CorruptProfile",
    "KdfParams",
    "NoProfile",
    "ProfileBusy",
    "ProfileExists",
    "ProfileWiped",
    "ReadOnlyProfile",
    "Store",
    "StoreError",
    "TooManyAttempts",
    "UnsupportedSchema",
    "WeakParameters",
    "WrongPasscode",
    "delay_after",
]

KEYFILE = "keyfile.json"
DATABASE = "profile.db"
#: Every file a profile's directory holds (SQLite makes the -wal and -shm files).
PROFILE_FILES = (KEYFILE, LOCK_FILE, DATABASE, DATABASE + "-wal", DATABASE + "-shm")
FORMAT_VERSION = 1
KEY_LEN = 32
SALT_LEN = 16
NONCE_LEN = 12
TAG_LEN = 16
WRAPPED_LEN = NONCE_LEN + KEY_LEN + TAG_LEN
FREE_TRIES = 4
DELAYS = (30.0, 60.0, 300.0, 900.0, 3600.0)  # after failure 5, 6, 7, 8, then 9 and on
# Upper bounds on Argon2id parameters read from a keyfile: generous (RFC 9106's first
# recommended set is t=1, 2 GiB, p=4), but an edited keyfile must not make open() run for
# days or allocate terabytes before failing.
MAX_T = 64
MAX_M_KIB = 4 * 1024 * 1024
MAX_P = 64
_WIPE_CHUNK = 1024 * 1024
# How long opening a profile waits for another process to close it (profilelock.py): long
# enough for a command started while another one finishes, short enough to say why.
LOCK_TIMEOUT = 10.0

# Version 1 of the schema, frozen: profiles written with it exist. Change it only through
# a new entry in _MIGRATIONS.
_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE prekeys (
    kind TEXT NOT NULL, key_id INTEGER NOT NULL, record BLOB NOT NULL,
    created INTEGER NOT NULL, PRIMARY KEY (kind, key_id));
CREATE TABLE contacts (
    account_id BLOB PRIMARY KEY, username TEXT NOT NULL, account_key BLOB NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0, key_changed INTEGER NOT NULL DEFAULT 0,
    previous_key BLOB, delivery_token BLOB, added INTEGER NOT NULL);
CREATE UNIQUE INDEX contacts_username ON contacts(username);
CREATE TABLE contact_devices (
    account_id BLOB NOT NULL REFERENCES contacts(account_id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL, certificate BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id));
CREATE TABLE sessions (
    account_id BLOB NOT NULL, device_id INTEGER NOT NULL, state BLOB NOT NULL,
    updated INTEGER NOT NULL, PRIMARY KEY (account_id, device_id));
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, message_uuid BLOB NOT NULL UNIQUE, peer BLOB NOT NULL,
    outgoing INTEGER NOT NULL, body TEXT NOT NULL, sent_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL, status TEXT NOT NULL);
CREATE INDEX messages_peer ON messages(peer, id);
CREATE TABLE processed (server_id BLOB PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE outbox (id INTEGER PRIMARY KEY, message_uuid BLOB NOT NULL, payload BLOB NOT NULL);
"""

#: ``_MIGRATIONS[i]`` takes a database from schema version ``i + 1`` to ``i + 2``. Each
#: runs in one transaction together with the ``user_version`` bump. Append, never edit.
_MIGRATIONS: tuple[str, ...] = (
    # 2: which of the peer's devices sent a message; a durable event log.
    """
    ALTER TABLE messages ADD COLUMN sender_device INTEGER;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL, at INTEGER NOT NULL);
    """,
    # 3: groups and sender keys, the account's other devices, disappearing messages,
    # attachments and deletions.
    """
    ALTER TABLE messages ADD COLUMN author BLOB;
    ALTER TABLE messages ADD COLUMN expires_at INTEGER;
    ALTER TABLE messages ADD COLUMN attachment BLOB;
    ALTER TABLE messages ADD COLUMN attachment_path TEXT;
    CREATE INDEX messages_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE own_devices (
        device_id INTEGER PRIMARY KEY, certificate BLOB, name TEXT NOT NULL,
        added INTEGER NOT NULL);
    CREATE TABLE revoked_devices (
        account_id BLOB NOT NULL, device_id INTEGER NOT NULL, revocation BLOB,
        PRIMARY KEY (account_id, device_id));
    CREATE TABLE groups (
        group_id BLOB PRIMARY KEY, state BLOB NOT NULL, name TEXT NOT NULL,
        member INTEGER NOT NULL DEFAULT 1, rotate INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL);
    CREATE TABLE sender_keys (
        group_id BLOB NOT NULL, account_id BLOB NOT NULL, device_id INTEGER NOT NULL,
        chain_id INTEGER NOT NULL, state BLOB NOT NULL, updated INTEGER NOT NULL,
        PRIMARY KEY (group_id, account_id, device_id, chain_id));
    CREATE TABLE own_sender_keys (group_id BLOB PRIMARY KEY, state BLOB NOT NULL);
    CREATE TABLE sender_key_shared (
        group_id BLOB NOT NULL, account_id BLOB NOT NULL, device_id INTEGER NOT NULL,
        chain_id INTEGER NOT NULL, PRIMARY KEY (group_id, account_id, device_id));
    CREATE TABLE timers (peer BLOB PRIMARY KEY, seconds INTEGER NOT NULL);
    CREATE TABLE tombstones (
        message_uuid BLOB PRIMARY KEY, author BLOB NOT NULL, at INTEGER NOT NULL);
    """,
    # 4: key-transparency alarms (the log key, newest head and monitor position are meta).
    """
    CREATE TABLE alarms (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL,
        detail TEXT NOT NULL, evidence BLOB NOT NULL, raised INTEGER NOT NULL,
        dismissed INTEGER NOT NULL DEFAULT 0, UNIQUE (kind, subject, detail));
    """,
    # 5: group-sealed envelopes name the sender chain by its envelope id; the members that
    # confirmed delivery of a group message this account sent (16-byte account ids).
    """
    ALTER TABLE sender_keys ADD COLUMN envelope_id BLOB;
    ALTER TABLE messages ADD COLUMN receipts BLOB;
    CREATE INDEX sender_keys_envelope ON sender_keys(envelope_id)
        WHERE envelope_id IS NOT NULL;
    """,
    # 6: key transparency: each looked-up account's newest log entry seen (a lookup that
    # goes back is refused), and gossiped heads the server has not yet proven consistent.
    """
    CREATE TABLE kt_pins (
        account_id BLOB PRIMARY KEY, username TEXT NOT NULL, sequence INTEGER NOT NULL,
        log_index INTEGER NOT NULL);
    CREATE TABLE kt_unproven (
        head BLOB PRIMARY KEY, source TEXT NOT NULL, first_failed INTEGER NOT NULL);
    """,
    # 7: a group's chain of signed states from its root (NULL: a group stored before
    # chains, or provisioned by another device: its state alone), and the newest version a
    # member's message named above this device's (0: none) with that member's account id.
    """
    ALTER TABLE groups ADD COLUMN chain BLOB;
    ALTER TABLE groups ADD COLUMN behind INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE groups ADD COLUMN behind_from BLOB;
    """,
)
#: The schema version this code writes (``PRAGMA user_version`` of a current profile).
SCHEMA_VERSION = 1 + len(_MIGRATIONS)


class StoreError(Exception):
    """Root of the local store's errors. No message contains a passcode or a key."""


class ProfileExists(StoreError):
    pass


class NoProfile(StoreError):
    pass


class WrongPasscode(StoreError):
    """The passcode did not unwrap the key. ``failures`` in a row so far (0 when not
    counted, as in :meth:`Store.change_passcode`); ``retry_after`` seconds to wait."""

    def __init__(self, failures: int, retry_after: float) -> None:
        super().__init__(f"wrong passcode ({failures} failed tries)")
        self.failures = failures
        self.retry_after = retry_after


class TooManyAttempts(StoreError):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many wrong passcodes; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


class ProfileWiped(StoreError):
    pass


class ProfileBusy(StoreError):
    """Another process has this profile open (:mod:`sealpost.client.profilelock`);
    ``pid`` is its process id, when known."""

    def __init__(self, pid: int | None) -> None:
        holder = "another sealpost process" if pid is None else f"sealpost process {pid}"
        super().__init__(f"this profile is in use by {holder}; wait for it to finish or stop it")
        self.pid = pid


class CorruptProfile(StoreError):
    pass


class UnsupportedSchema(CorruptProfile):
    def __init__(self, version: int) -> None:
        super().__init__(f"the profile's schema version {version} is newer than this sealpost")
        self.version = version


class WeakParameters(StoreError, ValueError):
    pass


class ReadOnlyProfile(StoreError):
    """A write to a store opened read-only, or a read-only profile that cannot open."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost: ``t`` passes over ``m_kib`` KiB with ``p`` lanes."""

    t: int = 3
    m_kib: int = 65536
    p: int = 4

    def to_json(self) -> dict[str, Any]:
        return {"alg": "argon2id", "t": self.t, "m_kib": self.m_kib, "p": self.p}

    @classmethod
    def from_json(cls, doc: Any) -> KdfParams:
        if not isinstance(doc, dict) or doc.get("alg") != "argon2id":
            raise CorruptProfile("unknown key derivation")
        values = [doc.get(k) for k in ("t", "m_kib", "p")]
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if len(ints) != 3:
            raise CorruptProfile("bad key derivation parameters")
        params = cls(*ints)
        if not params.in_bounds():
            raise CorruptProfile("bad key derivation parameters")
        return params

    def in_bounds(self) -> bool:
        """Whether Argon2id accepts these and they are not absurdly large."""
        return (
            1 <= self.t <= MAX_T and 1 <= self.p <= MAX_P and 8 * self.p <= self.m_kib <= MAX_M_KIB
        )


DEFAULT_PARAMS = KdfParams()
#: Fast parameters for tests only; accepted only when passed explicitly.
TEST_PARAMS = KdfParams(t=1, m_kib=8, p=1)
_FLOOR = KdfParams(t=3, m_kib=65536, p=1)


def _check_params(params: KdfParams) -> None:
    if params == TEST_PARAMS:
        return
    if params.t < _FLOOR.t or params.m_kib < _FLOOR.m_kib or params.p < _FLOOR.p:
        raise WeakParameters("Argon2id parameters under t=3, m=64 MiB, p=1 are refused")
    if not params.in_bounds():
        raise WeakParameters(
            f"Argon2id parameters above t={MAX_T}, m={MAX_M_KIB} KiB, p={MAX_P} are refused"
        )


def _check_wipe_after(wipe_after: int | None) -> None:
    if wipe_after is not None and (
        not isinstance(wipe_after, int) or isinstance(wipe_after, bool) or wipe_after < 1
    ):
        raise WeakParameters("wipe_after must be None or at least 1")


def delay_after(failures: int) -> float:
    """Seconds the next try must wait after ``failures`` wrong passcodes in a row.

    0 for the first four, then 30 s, 1 min, 5 min, 15 min, and 1 h for every one after.
    """
    if failures <= FREE_TRIES:
        return 0.0
    return DELAYS[min(failures - FREE_TRIES, len(DELAYS)) - 1]


def _derive(passcode: str, salt: bytes, params: KdfParams) -> bytes:
    try:
        return hash_secret_raw(
            passcode.encode("utf-8"),
            salt,
            time_cost=params.t,
            memory_cost=params.m_kib,
            parallelism=params.p,
            hash_len=KEY_LEN,
            type=Type.ID,
        )
    except (HashingError, OverflowError):
        # not reachable with bounded parameters, but never let argon2's error escape
        raise CorruptProfile("the key derivation failed") from None


def _aad(params: KdfParams, salt: bytes) -> bytes:
    doc = {"version": FORMAT_VERSION, "kdf": params.to_json(), "salt": salt.hex()}
    return b"sealpost/v1/keyfile\x00" + json.dumps(doc, sort_keys=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise CorruptProfile("keyfile field is not base64")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise CorruptProfile("keyfile field is not base64") from None


def _lock(directory: Path, timeout: float) -> ProfileLock:
    try:
        return ProfileLock.acquire(directory, timeout)
    except LockHeld as exc:
        raise ProfileBusy(exc.pid) from None


def _create_private(path: Path) -> None:
    """Make ``path`` an empty file of mode 0600 if it does not exist."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _tighten(directory: Path) -> None:
    """Mode 0700 on the profile's directory and 0600 on its files (a profile made by an
    older sealpost, or files copied in with another mode). Best effort."""
    with contextlib.suppress(OSError):
        if directory.stat().st_mode & 0o777 != 0o700:
            os.chmod(directory, 0o700)
    for name in PROFILE_FILES:
        path = directory / name
        with contextlib.suppress(OSError):
            if path.stat().st_mode & 0o777 != 0o600:
                os.chmod(path, 0o600)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_atomic(path: Path, data: bytes) -> None:
    # a temp name of its own (mkstemp: O_EXCL, mode 0600), so two writers never share one
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _overwrite(path: Path) -> None:
    """Overwrite a file's bytes in place with random ones and fsync (best effort)."""
    with path.open("r+b") as f:
        size = os.fstat(f.fileno()).st_size
        done = 0
        while done < size:
            n = min(_WIPE_CHUNK, size - done)
            f.write(os.urandom(n))
            done += n
        f.flush()
        os.fsync(f.fileno())


class _KeyFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            raise NoProfile("no profile") from None
        except (ValueError, OSError, RecursionError):
            raise CorruptProfile("the keyfile is damaged") from None
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise CorruptProfile("unknown keyfile format")
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        _write_atomic(self.path, json.dumps(doc, indent=1).encode())

    def destroy_wrapped(self, wrapped: str) -> None:
        """Overwrite the wrapped key's bytes in the current file, in place.

        Replacing the file alone would only free the old blocks. Overwriting just the
        base64 text keeps the file valid JSON, so a kill right after this leaves a profile
        that no passcode opens rather than a damaged one.
        """
        with self.path.open("r+b") as f:
            data = f.read()
            at = data.find(wrapped.encode("ascii"))
            if at < 0:
                f.seek(0)
                f.write(os.urandom(len(data)))
            else:
                f.seek(at)
                f.write(_b64(os.urandom(WRAPPED_LEN)).encode("ascii")[: len(wrapped)])
            f.flush()
            os.fsync(f.fileno())


def _hex_key_pragma(key: bytes) -> str:
    return f"PRAGMA key = \"x'{key.hex()}'\""


def _connect(path: Path, key: bytes, *, read_only: bool = False) -> Any:
    if read_only:
        conn = _connect_read_only(path, key)
    else:
        conn = sqlcipher.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(_hex_key_pragma(key))
        with contextlib.suppress(sqlcipher.Error):
            conn.execute("PRAGMA cipher_memory_security = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if read_only:
            return conn
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")
    except sqlcipher.DatabaseError:
        conn.close()
        raise CorruptProfile("the database does not open with its key") from None
    return conn


def _connect_read_only(path: Path, key: bytes) -> Any:
    """``mode=ro``; where SQLite cannot make the WAL's shared-memory file (a read-only
    directory), ``immutable=1``, which reads the database file as it is."""
    uri = path.absolute().as_uri()
    for query in ("?mode=ro", "?mode=ro&immutable=1"):
        conn = sqlcipher.connect(
            uri + query, uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(_hex_key_pragma(key))
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlcipher.OperationalError:
            conn.close()
        except BaseException:
            conn.close()
            raise
    raise ReadOnlyProfile("the profile's database cannot be opened read-only")


def _run_in_transaction(conn: Any, script: str, version: int) -> None:
    # executescript() commits any open transaction first, so BEGIN/COMMIT go in the script
    try:
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {int(version)};\nCOMMIT;"
        )
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _migrate(conn: Any, *, read_only: bool = False) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, one transaction per step."""
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if read_only and version != SCHEMA_VERSION:
            if version > SCHEMA_VERSION:
                raise UnsupportedSchema(version)
            raise ReadOnlyProfile("the profile must be opened writable once, to upgrade it")
        if version == 0:
            _run_in_transaction(conn, _SCHEMA_V1, 1)
            version = 1
        if version > SCHEMA_VERSION:
            raise UnsupportedSchema(version)
        for step in range(version, SCHEMA_VERSION):
            _run_in_transaction(conn, _MIGRATIONS[step - 1], step + 1)
    except sqlcipher.DatabaseError:
        raise CorruptProfile("the database schema could not be brought up to date") from None


class Store:
    """An open profile. Single-threaded use; :meth:`transaction` for every write."""

    def __init__(
        self,
        directory: Path,
        conn: Any,
        params: KdfParams,
        lock: ProfileLock | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self._dir = directory
        self._conn = conn
        self._params = params
        self._in_tx = False
        self.read_only = read_only
        self._lock = lock  # this process's hold on the profile, released by close()

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"Store(path={str(self._dir)!r}, {state})"

    # -- lifecycle

    @staticmethod
    def exists(directory: Path) -> bool:
        return (Path(directory) / KEYFILE).exists()

    @classmethod
    def create(
        cls,
        directory: Path,
        passcode: str,
        *,
        params: KdfParams = DEFAULT_PARAMS,
        wipe_after: int | None = None,
        rng: Rng = system_rng,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> Store:
        """Make a new profile in ``directory`` (created 0700 if missing) and open it.

        Refuses an empty passcode, parameters under the floor (unless ``TEST_PARAMS``,
        explicitly) and a directory that already holds a keyfile or a database.
        """
        directory = Path(directory)
        _check_params(params)
        if not passcode:
            raise WeakParameters("an empty passcode is refused")
        _check_wipe_after(wipe_after)
        if cls.exists(directory) or (directory / DATABASE).exists():
            raise ProfileExists("a profile already exists there")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        lock = _lock(directory, lock_timeout)
        try:
            return cls._create_locked(directory, passcode, params, wipe_after, rng, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _create_locked(
        cls,
        directory: Path,
        passcode: str,
        params: KdfParams,
        wipe_after: int | None,
        rng: Rng,
        lock: ProfileLock,
    ) -> Store:
        if cls.exists(directory) or (directory / DATABASE).exists():
            raise ProfileExists("a profile already exists there")  # made while we waited
        _create_private(directory / DATABASE)  # 0600 before SQLite writes a byte
        key = rng(KEY_LEN)
        salt = rng(SALT_LEN)
        doc = {
            "version": FORMAT_VERSION,
            "kdf": params.to_json() | {"salt": _b64(salt)},
            "wrapped": _b64(cls._wrap(key, passcode, salt, params, rng)),
            "failures": 0,
            "not_before": 0.0,
            "wipe_after": wipe_after,
        }
        conn = _connect(directory / DATABASE, key)
        try:
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        # the keyfile last: until it exists the database is unreadable by anyone
        try:
            _KeyFile(directory / KEYFILE).write(doc)
        except BaseException:
            conn.close()
            raise
        return cls(directory, conn, params, lock)

    @staticmethod
    def _wrap(key: bytes, passcode: str, salt: bytes, params: KdfParams, rng: Rng) -> bytes:
        nonce = rng(NONCE_LEN)
        kek = _derive(passcode, salt, params)
        return nonce + aead_encrypt(kek, nonce, key, _aad(params, salt))

    @classmethod
    def open(
        cls,
        directory: Path,
        passcode: str,
        *,
        clock: Callable[[], float] = time.time,
        lock_timeout: float = LOCK_TIMEOUT,
        read_only: bool = False,
    ) -> Store:
        """Take the profile's lock (waiting up to ``lock_timeout`` seconds, else
        :class:`ProfileBusy`), unwrap the key with ``passcode`` and open the database (see
        the module's docstring for the wrong-passcode policy).

        ``read_only`` opens the database read-only and writes nothing that can be skipped:
        a profile on a read-only file system (or whose files this user cannot write) still
        opens, without the lock and with its try uncounted, since whoever made it
        unwritable can edit the counter anyway, and nothing can change it while it is so.
        A write to such a store raises :class:`ReadOnlyProfile`.
        """
        directory = Path(directory)
        if not (directory / KEYFILE).exists():
            _KeyFile(directory / KEYFILE).read()  # NoProfile, and no lock file left behind
        lock: ProfileLock | None
        try:
            lock = _lock(directory, lock_timeout)
        except OSError:
            if not read_only:
                raise
            lock = None  # the lock file cannot be made or opened for writing
        try:
            return cls._open_locked(directory, passcode, clock, lock, read_only)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _open_locked(
        cls,
        directory: Path,
        passcode: str,
        clock: Callable[[], float],
        lock: ProfileLock | None,
        read_only: bool,
    ) -> Store:
        keyfile = _KeyFile(directory / KEYFILE)

        def write(doc: dict[str, Any]) -> None:
            try:
                keyfile.write(doc)
            except OSError:
                if not read_only:
                    raise

        doc = keyfile.read()
        if doc.get("wiped"):
            raise ProfileWiped("this profile was wiped after too many wrong passcodes")
        params, salt = cls._params_of(doc)
        wrapped_text = doc.get("wrapped")
        wrapped = _unb64(wrapped_text)
        if len(wrapped) != WRAPPED_LEN:
            raise CorruptProfile("bad wrapped key")
        failures, not_before, wipe_after = cls._counter_of(doc)
        if not (directory / DATABASE).exists():
            raise CorruptProfile("the database is missing")
        now = clock()
        if not_before > now + delay_after(failures):
            # the clock went backwards: wait no longer than the schedule says, from now
            not_before = now + delay_after(failures)
            doc["not_before"] = not_before
            write(doc)
        if now < not_before:
            raise TooManyAttempts(not_before - now)
        # count the try before paying for it, so a killed process still counts it
        failures += 1
        doc["failures"] = failures
        doc["not_before"] = now + delay_after(failures)
        write(doc)
        key = cls._unwrap(wrapped, passcode, salt, params)
        if key is None:
            if wipe_after is not None and failures >= wipe_after:
                cls._wipe(directory, doc, keyfile, str(wrapped_text))
                raise ProfileWiped("this profile was wiped after too many wrong passcodes")
            raise WrongPasscode(failures, delay_after(failures))
        doc["failures"] = 0
        doc["not_before"] = 0.0
        write(doc)
        if not read_only:
            _tighten(directory)
        conn = _connect(directory / DATABASE, key, read_only=read_only)
        try:
            _migrate(conn, read_only=read_only)
        except BaseException:
            conn.close()
            raise
        return cls(directory, conn, params, lock, read_only=read_only)

    @staticmethod
    def _params_of(doc: dict[str, Any]) -> tuple[KdfParams, bytes]:
        kdf = doc.get("kdf")
        params = KdfParams.from_json(kdf)
        salt = _unb64(kdf.get("salt") if isinstance(kdf, dict) else None)
        if len(salt) != SALT_LEN:
            raise CorruptProfile("bad salt")
        return params, salt

    @staticmethod
    def _counter_of(doc: dict[str, Any]) -> tuple[int, float, int | None]:
        failures = doc.get("failures")
        not_before = doc.get("not_before")
        wipe_after = doc.get("wipe_after")
        if (
            not isinstance(failures, int)
            or isinstance(failures, bool)
            or failures < 0
            or not isinstance(not_before, int | float)
            or isinstance(not_before, bool)
            or not math.isfinite(not_before)
        ):
            raise CorruptProfile("bad failure counter")
        try:
            _check_wipe_after(wipe_after)
        except WeakParameters:
            raise CorruptProfile("bad wipe setting") from None
        return failures, float(not_before), wipe_after

    @staticmethod
    def _unwrap(wrapped: bytes, passcode: str, salt: bytes, params: KdfParams) -> bytes | None:
        if len(wrapped) != WRAPPED_LEN:
            raise CorruptProfile("bad wrapped key")
        kek = _derive(passcode, salt, params)
        try:
            return aead_decrypt(kek, wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], _aad(params, salt))
        except ProtocolError:
            return None

    @staticmethod
    def _wipe(directory: Path, doc: dict[str, Any], keyfile: _KeyFile, wrapped: str) -> None:
        # 1. the wrapped key's bytes, in place (crypto erasure; this is what counts)
        keyfile.destroy_wrapped(wrapped)
        # 2. a keyfile that says so, for a clear error from now on
        doc.pop("wrapped", None)
        doc["wiped"] = True
        keyfile.write(doc)
        # 3. the database, best effort: SSDs, copy-on-write file systems and journals may
        #    keep old blocks, which are noise without the key
        for name in (DATABASE, DATABASE + "-wal", DATABASE + "-shm"):
            path = directory / name
            with contextlib.suppress(OSError):
                _overwrite(path)
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            _fsync_dir(directory)

    def close(self) -> None:
        try:
            if self._conn is not None:
                if not self.read_only:
                    with contextlib.suppress(sqlcipher.Error):
                        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None
        finally:
            if self._lock is not None:
                self._lock.release()  # last: nobody else may open it before we are done

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- facts and settings

    @property
    def path(self) -> Path:
        return self._dir

    @property
    def kdf_params(self) -> KdfParams:
        return self._params

    def change_passcode(
        self, old: str, new: str, *, params: KdfParams | None = None, rng: Rng = system_rng
    ) -> None:
        """Re-wrap the same database key under ``new`` with a fresh salt (and ``params``
        if given, else the current ones). ``old`` must unwrap the current keyfile, else
        :class:`WrongPasscode` (not counted: whoever calls this already has the profile
        open). The database is not touched."""
        if not new:
            raise WeakParameters("an empty passcode is refused")
        params = params or self._params
        _check_params(params)
        keyfile = _KeyFile(self._dir / KEYFILE)
        doc = keyfile.read()
        old_params, old_salt = self._params_of(doc)
        key = self._unwrap(_unb64(doc.get("wrapped")), old, old_salt, old_params)
        if key is None:
            raise WrongPasscode(0, 0.0)
        salt = rng(SALT_LEN)
        doc["kdf"] = params.to_json() | {"salt": _b64(salt)}
        doc["wrapped"] = _b64(self._wrap(key, new, salt, params, rng))
        keyfile.write(doc)
        self._params = params

    def check_passcode(self, passcode: str) -> bool:
        """Whether ``passcode`` unwraps this open profile's key (for the process holding
        it, to check another process that asks it for something; see
        :mod:`sealpost.client.handoff`). Not counted as a try, but it costs one Argon2id
        derivation, as a guess against a copy of the keyfile does."""
        doc = _KeyFile(self._dir / KEYFILE).read()
        params, salt = self._params_of(doc)
        return self._unwrap(_unb64(doc.get("wrapped")), passcode, salt, params) is not None

    def set_wipe_after(self, wipe_after: int | None) -> None:
        """Wipe the profile at the ``wipe_after``-th wrong passcode in a row (None: never)."""
        _check_wipe_after(wipe_after)
        keyfile = _KeyFile(self._dir / KEYFILE)
        doc = keyfile.read()
        doc["wipe_after"] = wipe_after
        keyfile.write(doc)

    # -- data

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (fsynced), or ``ROLLBACK`` on any exception,
        including a failed ``COMMIT``. Transactions do not nest."""
        conn = self._conn
        if conn is None:
            raise StoreError("the store is closed")
        if self._in_tx:
            raise StoreError("transactions do not nest")
        if self.read_only:
            raise ReadOnlyProfile("this command opened the profile read-only")
        self._in_tx = True
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (e.g. on a full disk)
                if conn.in_transaction:
                    with contextlib.suppress(sqlcipher.Error):
                        conn.execute("ROLLBACK")
                raise
        finally:
            self._in_tx = False

    def read(self) -> Any:
        """The connection, for plain ``SELECT``\\ s outside a transaction."""
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    def get_meta(self, key: str) -> bytes | None:
        row = self.read().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, conn: Any, key: str, value: bytes) -> None:
        """Set ``meta[key]``; ``conn`` is the one :meth:`transaction` yielded."""
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
