"""The local store's errors, all under :class:`StoreError` and so under
:class:`~sealpost.client.errors.ClientError` (the one root the CLI catches).

None carries a passcode, a key or message text::

    ClientError
    └── StoreError
        ├── ProfileExists       create() where a profile already is
        ├── NoProfile           open() where there is none
        ├── WrongPasscode       .failures, .retry_after
        ├── TooManyAttempts     a try before the delay has passed; .retry_after
        ├── ProfileBusy         another process has the profile open; .pid
        ├── ProfileWiped        the key was destroyed after too many failures
        ├── ReadOnlyProfile     a write to a store opened read-only, or outside a unit
        ├── CorruptProfile      the keyfile or database is damaged
        │   └── UnsupportedSchema   the database was written by a newer sealpost
        ├── DatabaseFailed      the database could not do it now (locked, read-only file
        │                       system, full disk, I/O error): nothing was changed, try again
        └── WeakParameters      (also a ValueError) empty passcode, KDF parameters out of bounds

SQLCipher's own errors are translated where the store meets it (:func:`database_failed`):
an ``OperationalError`` becomes :class:`DatabaseFailed`. A constraint or programming error
(``IntegrityError``, ``ProgrammingError``) is a bug, not a condition, and is not translated.
"""

from __future__ import annotations

from sealpost.client.errors import ClientError

__all__ = [
    "CorruptProfile",
    "DatabaseFailed",
    "NoProfile",
    "ProfileBusy",
    "ProfileExists",
    "ProfileWiped",
    "ReadOnlyProfile",
    "StoreError",
    "TooManyAttempts",
    "UnsupportedSchema",
    "WeakParameters",
    "WrongPasscode",
    "database_failed",
]


class StoreError(ClientError):
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


class DatabaseFailed(StoreError):
    """SQLite could not do it now (the database is locked, on a read-only file system,
    the disk is full, an I/O error): nothing was changed; trying again later may work."""


def database_failed(exc: Exception) -> DatabaseFailed:
    """The :class:`DatabaseFailed` for SQLCipher's ``OperationalError`` ``exc``, in the
    words a user can act on (SQLite's text names no data, no key)."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text:
        return DatabaseFailed("the profile is read-only: this command needs to write to it")
    if "locked" in text or "busy" in text:
        return DatabaseFailed("the profile is in use by another sealpost process")
    return DatabaseFailed(f"the profile's database failed: {exc}")
