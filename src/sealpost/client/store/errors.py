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
        └── WeakParameters      (also a ValueError) empty passcode, KDF parameters out of bounds
"""

from __future__ import annotations

from sealpost.client.errors import ClientError

__all__ = [
    "CorruptProfile",
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
