"""The open profile: :class:`Store`, its SQLCipher connection and its unit of work.

A profile directory (mode 0700) holds ``keyfile.json`` (:mod:`.keyfile`: the database key
wrapped by the passcode, and the wrong-passcode policy), ``profile.db`` and ``lock`` (0600,
a pid): one process at a time has a profile open (:mod:`sealpost.client.profilelock`; a
second opener waits up to ``lock_timeout`` seconds, then gets :class:`ProfileBusy`).

``profile.db`` is the SQLCipher database (every page encrypted; ``PRAGMA key`` with the raw
key; WAL, ``synchronous=FULL``, foreign keys, ``secure_delete``), its schema brought
forward by :mod:`.migrations` when opened.

Writes go through the unit of work: ``with store.unit() as repos:`` is one transaction
(``BEGIN IMMEDIATE`` … ``COMMIT``, fsynced); if its body raises, it is rolled back and
nothing has changed. ``store.repos()`` is the same repositories for reads outside a unit;
a write through them outside a unit is refused (:class:`StoreError`), so no write ever
autocommits on its own.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlcipher3.dbapi2 as sqlcipher  # type: ignore[import-untyped]

from sealpost.client.profilelock import LockHeld, ProfileLock
from sealpost.client.store.connection import Connection
from sealpost.client.store.errors import (
    CorruptProfile,
    ProfileBusy,
    ProfileExists,
    ReadOnlyProfile,
    StoreError,
    WeakParameters,
    database_failed,
)
from sealpost.client.store.files import DATABASE, KEYFILE, create_private, tighten
from sealpost.client.store.keyfile import (
    DEFAULT_PARAMS,
    KEY_LEN,
    KdfParams,
    KeyFile,
    check_params,
    check_wipe_after,
)
from sealpost.client.store.migrations import migrate
from sealpost.client.store.unit import Repositories
from sealpost.entropy import Rng, system_rng

__all__ = ["LOCK_TIMEOUT", "Store"]

# How long opening a profile waits for another process to close it (profilelock.py): long
# enough for a command started while another one finishes, short enough to say why.
LOCK_TIMEOUT = 10.0


def _lock(directory: Path, timeout: float) -> ProfileLock:
    try:
        return ProfileLock.acquire(directory, timeout)
    except LockHeld as exc:
        raise ProfileBusy(exc.pid) from None


def _hex_key_pragma(key: bytes) -> str:
    return f"PRAGMA key = \"x'{key.hex()}'\""


def _connect(path: Path, key: bytes, *, read_only: bool = False) -> Any:
    if read_only:
        conn = _connect_read_only(path, key)
    else:
        conn = sqlcipher.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(_hex_key_pragma(key))
        # No ``cipher_memory_security``: it wipes and locks every SQLite allocation, which
        # made each indexed (FTS5) insert ~8x slower, and it cannot be switched off again
        # for the process; the plaintext it would wipe is held in Python objects anyway
        # (docs/THREAT_MODEL.md, "Secrets in memory"). SQLCipher wipes its key material
        # regardless of the setting.
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


class Store:
    """An open profile. Single-threaded use; :meth:`unit` (or :meth:`transaction`) for
    every write."""

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
        self.read_only = read_only
        self._lock = lock  # this process's hold on the profile, released by close()
        self._db = Connection(conn)
        self._repos = Repositories(self._db)

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
        check_params(params)
        if not passcode:
            raise WeakParameters("an empty passcode is refused")
        check_wipe_after(wipe_after)
        if cls.exists(directory) or (directory / DATABASE).exists():
            raise ProfileExists("a profile already exists there")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        lock = _lock(directory, lock_timeout)
        try:
            if cls.exists(directory) or (directory / DATABASE).exists():
                raise ProfileExists("a profile already exists there")  # made while we waited
            create_private(directory / DATABASE)  # 0600 before SQLite writes a byte
            key = rng(KEY_LEN)
            conn = _connect(directory / DATABASE, key)
            try:
                migrate(conn)
                # the keyfile last: until it exists the database is unreadable by anyone
                KeyFile(directory / KEYFILE).create(key, passcode, params, wipe_after, rng)
            except BaseException:
                conn.close()
                raise
            return cls(directory, conn, params, lock)
        except BaseException:
            lock.release()
            raise

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
        :mod:`.keyfile` for the wrong-passcode policy).

        ``read_only`` opens the database read-only and writes nothing that can be skipped:
        a profile on a read-only file system (or whose files this user cannot write) still
        opens, without the lock and with its try uncounted, since whoever made it
        unwritable can edit the counter anyway, and nothing can change it while it is so.
        A write to such a store raises :class:`ReadOnlyProfile`.
        """
        directory = Path(directory)
        keyfile = KeyFile(directory / KEYFILE)
        if not keyfile.path.exists():
            keyfile.read()  # NoProfile, and no lock file left behind
        lock: ProfileLock | None
        try:
            lock = _lock(directory, lock_timeout)
        except OSError:
            if not read_only:
                raise
            lock = None  # the lock file cannot be made or opened for writing
        try:
            key, params = keyfile.unlock(passcode, clock, read_only=read_only)
            if not read_only:
                tighten(directory)
            conn = _connect(directory / DATABASE, key, read_only=read_only)
            try:
                migrate(conn, read_only=read_only)
            except BaseException:
                conn.close()
                raise
            return cls(directory, conn, params, lock, read_only=read_only)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def close(self) -> None:
        try:
            if self._conn is not None:
                if not self.read_only:
                    with contextlib.suppress(sqlcipher.Error):
                        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None
                self._db.close()
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
        check_params(params)
        KeyFile(self._dir / KEYFILE).rewrap(old, new, params, rng)
        self._params = params

    def check_passcode(self, passcode: str) -> bool:
        """Whether ``passcode`` unwraps this open profile's key (for the process holding
        it, to check another process that asks it for something; see
        :mod:`sealpost.client.handoff`). Not counted as a try, but it costs one Argon2id
        derivation, as a guess against a copy of the keyfile does."""
        return KeyFile(self._dir / KEYFILE).check(passcode)

    def set_wipe_after(self, wipe_after: int | None) -> None:
        """Wipe the profile at the ``wipe_after``-th wrong passcode in a row (None: never)."""
        KeyFile(self._dir / KEYFILE).set_wipe_after(wipe_after)

    # -- data

    @contextlib.contextmanager
    def unit(self) -> Iterator[Repositories]:
        """One unit of work: every repository, bound to one transaction. It commits
        (fsynced) when the block ends, and rolls back if the block raises, so a unit that
        raises has changed nothing. Then the unit's after-commit actions run (files to
        remove once their rows are gone), only if it committed. Units do not nest."""
        with self.transaction():
            yield self._repos

    def repos(self) -> Repositories:
        """The repositories for reads outside a unit (a write through them is refused)."""
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._repos

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (fsynced), or ``ROLLBACK`` on any exception,
        including a failed ``COMMIT``; SQLite's ``OperationalError`` (a locked database, a
        full disk) leaves it as :class:`DatabaseFailed`. Transactions do not nest. Yields
        the raw connection (code not yet moved into repositories; prefer :meth:`unit`).
        Inside it, :meth:`repos` may write too, and after-commit actions run once it
        committed."""
        conn = self._conn
        if conn is None:
            raise StoreError("the store is closed")
        if self._db.in_unit:
            raise StoreError("transactions do not nest")
        if self.read_only:
            raise ReadOnlyProfile("this command opened the profile read-only")
        self._db.in_unit = True
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlcipher.OperationalError as exc:
                raise database_failed(exc) from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite may already have rolled back (e.g. on a full disk)
                if conn.in_transaction:
                    with contextlib.suppress(sqlcipher.Error):
                        conn.execute("ROLLBACK")
                self._db.discard_after_commit()
                if isinstance(exc, sqlcipher.OperationalError):
                    raise database_failed(exc) from None
                raise
        finally:
            self._db.in_unit = False
        self._db.run_after_commit()

    def read(self) -> Any:
        """The connection, for plain ``SELECT``\\ s outside a transaction (code not yet
        moved into repositories; prefer :meth:`repos`)."""
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    def get_meta(self, key: str) -> bytes | None:
        return self.repos().meta.get(key)

    def set_meta(self, conn: Any, key: str, value: bytes) -> None:
        """Set ``meta[key]``; ``conn`` is the one :meth:`transaction` yielded."""
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
