"""The profile's local store: a SQLCipher database whose key is wrapped by the passcode,
and the repositories through which the client reads and writes it.

No SQL in the client lives outside this package. The modules:

``errors``      :class:`StoreError` and its subclasses (under ``ClientError``)
``files``       the profile directory's files, their modes, atomic rewrites
``keyfile``     the database key wrapped under Argon2id(passcode); the wrong-passcode policy
``migrations``  the schema (version 1, frozen) and the steps that bring a profile forward
``database``    :class:`Store`: create, open (lock, unlock, migrate), close, the unit of work
``connection``  the connection the repositories share (writes only inside a unit)
``unit``        :class:`Repositories`: every repository bound to one connection
``meta``        facts and settings (key-value)
``contacts``    contacts and their devices
``messages``    history, deletions for everyone (tombstones), disappearing-message timers,
                attachments' saved files
``prekeys``     this device's prekeys (private halves), by kind and key id
``devices``     this account's own devices, and devices revoked by an account key
``alarms``      key-transparency alarms, log pins, unproven gossip, the monitor's mark
``groups``      groups (signed state, chain, out-of-date mark) and sender keys
``sessions``    each remote device's session record
``outbox``      sends handed to the server and not yet settled
``pending``     sends written while the server could not be reached, not yet encrypted
``processed``   the server ids of the pushes already stored
``search``      the full-text index of the history

The unit of work: ``with store.unit() as repos:`` is one transaction over every repository;
it commits when the block ends and rolls back if it raises, so a unit that raises has
changed nothing, and a repository method that raises inside a unit has changed nothing
either. ``store.repos()`` is for reads outside a unit; a write there is refused. The
services that use the repositories (directory, conversations, sending, receiving, groups,
devices, ...) live in :mod:`sealpost.client.services`, one module each, and get the store
through :class:`~sealpost.client.context.ClientContext`.

Example::

    store = Store.create(Path("profile"), "a long passcode", params=TEST_PARAMS)
    with store.unit() as repos:
        repos.meta.set("greeting", b"hello")
    store.close()
    with Store.open(Path("profile"), "a long passcode") as store:
        assert store.repos().meta.get("greeting") == b"hello"

Errors (all :class:`StoreError`, itself a :class:`~sealpost.client.errors.ClientError`;
none carries a passcode or key)::

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
    ├── DatabaseFailed      locked, read-only file system, full disk, I/O: nothing changed
    └── WeakParameters      (also a ValueError) empty passcode, KDF parameters out of bounds
"""

from sealpost.client.store.database import LOCK_TIMEOUT, Store
from sealpost.client.store.errors import (
    CorruptProfile,
    DatabaseFailed,
    NoProfile,
    ProfileBusy,
    ProfileExists,
    ProfileWiped,
    ReadOnlyProfile,
    StoreError,
    TooManyAttempts,
    UnsupportedSchema,
    WeakParameters,
    WrongPasscode,
)
from sealpost.client.store.files import DATABASE, KEYFILE, PROFILE_FILES
from sealpost.client.store.keyfile import (
    DEFAULT_PARAMS,
    TEST_PARAMS,
    KdfParams,
    delay_after,
)
from sealpost.client.store.keyfile import derive_kek as _derive  # noqa: F401 (bench/client.py)
from sealpost.client.store.migrations import SCHEMA_VERSION
from sealpost.client.store.unit import Repositories

__all__ = [
    "DATABASE",
    "DEFAULT_PARAMS",
    "KEYFILE",
    "LOCK_TIMEOUT",
    "PROFILE_FILES",
    "SCHEMA_VERSION",
    "TEST_PARAMS",
    "CorruptProfile",
    "DatabaseFailed",
    "KdfParams",
    "NoProfile",
    "ProfileBusy",
    "ProfileExists",
    "ProfileWiped",
    "ReadOnlyProfile",
    "Repositories",
    "Store",
    "StoreError",
    "TooManyAttempts",
    "UnsupportedSchema",
    "WeakParameters",
    "WrongPasscode",
    "delay_after",
]
