"""Persistent state of the relay server behind one interface (:class:`Storage`), with the
embedded SQLite implementation (:class:`SqliteStorage`)."""

from sealpost.server.storage.base import (
    AccountExists,
    AccountRecord,
    AttachmentRecord,
    BundleParts,
    DeviceExists,
    DeviceRecord,
    Envelope,
    MismatchedDevices,
    PreKeyStock,
    PreKeyStockFull,
    PreKeyUpload,
    PurgeResult,
    QueuedMessage,
    QueueFull,
    Storage,
    StorageError,
    UnknownAccount,
    UsernameTaken,
)
from sealpost.server.storage.sqlite import SqliteStorage

__all__ = [
    "AccountExists",
    "AccountRecord",
    "AttachmentRecord",
    "BundleParts",
    "DeviceExists",
    "DeviceRecord",
    "Envelope",
    "MismatchedDevices",
    "PreKeyStock",
    "PreKeyStockFull",
    "PreKeyUpload",
    "PurgeResult",
    "QueueFull",
    "QueuedMessage",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "UnknownAccount",
    "UsernameTaken",
]
