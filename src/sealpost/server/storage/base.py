"""The storage interface of the relay server, and the records that cross it.

Everything the server keeps goes through :class:`Storage`; handlers never see SQL. The
interface is async and speaks in whole operations ("register this account with its first
device and prekeys", "enqueue these envelopes if the device lists match"), not in rows, so
each operation is one transaction in any backend and a PostgreSQL (asyncpg) backend can
implement the same methods with the same guarantees:

- a method that returns has committed durably (``enqueue`` returning is what lets the server
  acknowledge a send);
- a method that raises a :class:`StorageError` has changed nothing;
- a send fenced with its connection's epoch (``fence``, a :class:`Fence`) is stored only if
  that epoch is still the sending device's (:meth:`Storage.claim_device`), checked in the
  transaction that would store it: a send of a connection that a newer one of the same
  device replaced, on any process, raises :class:`StaleEpoch` and stores nothing;
- an enqueue is idempotent on message ids: an envelope whose message id is already queued
  (a resend after a lost answer; message ids derived from a send id name one device) is
  stored nothing again, counts against no quota and does not fail the send (the enqueue
  methods return how many envelopes were stored anew); once that message was acknowledged,
  the same id is queued again;
- one-time prekeys are handed out at most once, even to concurrent fetchers;
- quotas are checked inside the transaction that would pass them (queue depth and bytes
  per device, attachment bytes per account), so concurrent writers cannot overshoot them;
- a body stored once for many devices (:meth:`Storage.enqueue_shared`) is deleted in the
  same transaction as the last queued message that uses it (ack, purge, device removal),
  so a shared body is never kept without a message nor lost while one needs it;
- an invite code is spent in the transaction that registers the account it admits, so
  concurrent registrations with one single-use code give exactly one account, and a
  registration that fails spends nothing;
- an account is removed whole in one transaction (:meth:`Storage.remove_account`): its
  devices, prekeys, queues, revocations and attachment records go, and the log gains its
  signed deletion entry; nothing of it is left but its log entries.

What is stored is public or opaque: certificates and prekeys are public keys, envelopes are
ciphertext sealed to the recipient device, delivery tokens and invite codes are kept as
SHA-256 hashes.
Nothing about the sender of a message is a parameter of any method.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import msgspec

from sealpost.crypto.sign import SigningKey
from sealpost.transparency.log import DELETION_ENTRY_TYPE, DeletionCause

__all__ = [
    "AccountExists",
    "AccountRecord",
    "AttachmentQuotaFull",
    "AttachmentRecord",
    "AwaitedSends",
    "BundleParts",
    "DeviceAcks",
    "DeviceExists",
    "DeviceRecord",
    "DeviceRevoked",
    "Envelope",
    "Fence",
    "InviteRecord",
    "InviteRefused",
    "InviteUse",
    "LastDevice",
    "LogLookup",
    "LogState",
    "LoggedEntry",
    "MismatchedDevices",
    "PreKeyStock",
    "PreKeyStockFull",
    "PreKeyUpload",
    "PurgeResult",
    "QueueFull",
    "QueuePosition",
    "QueuedMessage",
    "QueuedSend",
    "Removal",
    "RemovedAccount",
    "SharedEnvelope",
    "StaleEpoch",
    "Storage",
    "StorageError",
    "StorageStats",
    "StorageUnavailable",
    "TooManyDevices",
    "UnknownAccount",
    "UnknownDevice",
    "UnknownInvite",
    "UsernameQuarantined",
    "UsernameTaken",
    "each_outcome",
    "pack_list",
    "unpack_list",
]


class StorageError(Exception):
    """Root of the storage layer's expected failures; nothing was changed."""


class StorageUnavailable(Exception):
    """The database could not be reached (the server answers 503). Not a
    :class:`StorageError`: an operation in flight when the connection broke may or may not
    have committed, so the caller retries it (every write is safe to retry or refused)."""


class StaleEpoch(StorageError):
    """An ack or a send from a connection that a newer connection of the same device
    replaced."""


def each_outcome(each: Sequence[asyncio.Future[Any]]) -> asyncio.Future[list[StaleEpoch | None]]:
    """For :meth:`Storage.ack_each_nowait` built of one future a device, queued in order:
    done once they all are, with each one's :class:`StaleEpoch` or ``None``; failed with
    the first other error (the commit's). Writes queued in order are done in order, so it
    waits on the last one (not a callback for each), then on any still pending."""
    outcome: asyncio.Future[list[StaleEpoch | None]] = asyncio.get_running_loop().create_future()

    def done(_: object = None) -> None:
        if outcome.done():
            return
        pending = [f for f in each if not f.done()]
        if pending:  # not in order after all: wait for the rest
            asyncio.gather(*pending, return_exceptions=True).add_done_callback(done)
            return
        results: list[StaleEpoch | None] = []
        for future in each:
            exc = asyncio.CancelledError() if future.cancelled() else future.exception()
            if exc is not None and not isinstance(exc, StaleEpoch):
                outcome.set_exception(exc)
                return
            results.append(exc)
        outcome.set_result(results)

    if each:
        each[-1].add_done_callback(done)
    else:
        outcome.set_result([])
    return outcome


class UsernameTaken(StorageError):
    pass


class UsernameQuarantined(UsernameTaken):
    """The name was a removed account's, and is held until its quarantine ends."""


class InviteRefused(StorageError):
    """No usable invite has that code: unknown, used up, expired or revoked (one error,
    so that a guesser learns nothing about which)."""


class UnknownInvite(StorageError):
    pass


class AccountExists(StorageError):
    pass


class DeviceExists(StorageError):
    pass


class DeviceRevoked(StorageError):
    """That device id was revoked for the account: it can never be registered again."""


class TooManyDevices(StorageError):
    pass


class UnknownDevice(StorageError):
    pass


class LastDevice(StorageError):
    """An account's only device cannot be removed (nothing could sign for it again)."""


class UnknownAccount(StorageError):
    def __init__(self, account_id: bytes) -> None:
        super().__init__("unknown account")
        self.account_id = account_id


class QueueFull(StorageError):
    """A destination device's queue is at ``max_depth`` messages or ``max_bytes`` bytes."""


class AttachmentQuotaFull(StorageError):
    """The uploading account's unexpired attachments would pass its byte quota."""


class PreKeyStockFull(StorageError):
    pass


class MismatchedDevices(StorageError):
    """A send named devices that are not exactly the destination account's devices."""

    def __init__(self, accounts: Mapping[bytes, tuple[list[int], list[int]]]) -> None:
        super().__init__("mismatched devices")
        #: account id -> (missing device ids, extra device ids)
        self.accounts = dict(accounts)


@dataclass(frozen=True, slots=True)
class AccountRecord:
    account_id: bytes
    username: str
    account_key: bytes
    delivery_token_hash: bytes
    sealed_from_anyone: bool
    created: int


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    account_id: bytes
    device_id: int
    certificate: bytes  # wire bytes of the AIK-signed DeviceCertificate
    registered: int


class DeviceAcks(NamedTuple):
    """The acks of one device's connection (:meth:`Storage.ack_each_nowait`); with
    ``epoch``, refused unless it is still the device's (:meth:`Storage.claim_device`)."""

    account_id: bytes
    device_id: int
    message_ids: Sequence[bytes]
    epoch: int | None


@dataclass(frozen=True, slots=True)
class PreKeyUpload:
    """Verified prekeys, as wire bytes keyed by their key id."""

    signed_prekey: tuple[int, bytes] | None = None
    kem_last_resort: tuple[int, bytes] | None = None
    one_time: Sequence[tuple[int, bytes]] = field(default_factory=tuple)
    kem_one_time: Sequence[tuple[int, bytes]] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class PreKeyStock:
    signed_prekey: bool
    kem_last_resort: bool
    one_time: int
    kem_one_time: int


@dataclass(frozen=True, slots=True)
class BundleParts:
    """What a bundle is built from; ``one_time`` is ``None`` when the stock ran out, and
    ``kem`` is the last-resort key when no one-time ML-KEM key is left."""

    certificate: bytes
    signed_prekey: bytes
    one_time: bytes | None
    kem: bytes | None


#: The records made once per message (:class:`Envelope`, :class:`SharedEnvelope`,
#: :class:`QueuedMessage`) are frozen ``msgspec`` structs, not frozen dataclasses: one is
#: made in 0.05 us where a frozen dataclass takes 0.5 (its ``__init__`` sets each field
#: through ``object.__setattr__``), and with ``gc=False`` the collector never tracks them
#: (they hold only bytes and ints: no cycle).
class Envelope(msgspec.Struct, frozen=True, gc=False):
    #: 16 bytes chosen by the server: random, or derived from the sender's send id and the
    #: device (:func:`sealpost.protocol.send_id.queued_message_id`)
    message_id: bytes
    account_id: bytes
    device_id: int
    body: bytes


class Fence(NamedTuple):
    """The connection a send came on: its device and the epoch it took
    (:meth:`Storage.claim_device`). Only a device's own stream has one; sealed sends and
    HTTP sends carry none."""

    account_id: bytes
    device_id: int
    epoch: int


class QueuePosition(NamedTuple):
    """Where a device's queue stands (:meth:`Storage.queue_positions`): ``seq`` is at least
    the sequence number of every message queued for it, and ``epoch`` is the device's
    connection epoch (:meth:`Storage.claim_device`)."""

    seq: int
    epoch: int


class QueuedSend:
    """A plain send waiting in a group commit, as data: what :meth:`Storage.enqueue` was
    given (both backends' batches hold these, and run or plan them together)."""

    __slots__ = (
        "envelopes",
        "exempt",
        "expires_at",
        "fence",
        "max_bytes",
        "max_depth",
        "received_at",
    )

    def __init__(
        self,
        envelopes: Sequence[Envelope],
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int,
        fence: Fence | None,
    ) -> None:
        self.envelopes = envelopes
        self.exempt = exempt
        self.received_at = received_at
        self.expires_at = expires_at
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.fence = fence


class SharedEnvelope(msgspec.Struct, frozen=True, gc=False):
    """One destination of a multi-recipient send (:meth:`Storage.enqueue_shared`): the
    device receives ``prefix + body`` (``prefix`` is empty for group-sealed sends, the
    ``0x01 0x22 || wrap`` of the legacy form otherwise)."""

    message_id: bytes  # as Envelope's
    account_id: bytes
    device_id: int
    prefix: bytes = b""


class QueuedMessage(msgspec.Struct, frozen=True, gc=False):
    message_id: bytes
    seq: int  # the queue's order; increases with every enqueue
    body: bytes
    received_at: int


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    attachment_id: bytes
    size: int
    created: int
    expires_at: int
    #: The uploading account, for its byte quota (the server knew it at upload time;
    #: downloads stay anonymous). Empty in records from before quotas.
    owner: bytes = b""


@dataclass(frozen=True, slots=True)
class LoggedEntry:
    """One leaf of the key-transparency log, with the device certificates and revocations
    its devices commitment covers (so a client can check them against it)."""

    index: int  # the leaf's position in the log, from 0
    entry: bytes  # the LogEntry's (or a DeletionEntry's) wire bytes
    certificates: tuple[bytes, ...]  # sorted bytewise, as committed
    revocations: tuple[bytes, ...]  # sorted bytewise, as committed

    @property
    def deletion(self) -> bool:
        """A removed account's last entry (a DeletionEntry: no devices)."""
        return self.entry[:2] == bytes([0x01, DELETION_ENTRY_TYPE])


def pack_list(items: Sequence[bytes]) -> bytes:
    """How both backends store a :class:`LoggedEntry`'s certificates or revocations in one
    column: each item as a 4-byte big-endian length and its bytes."""
    return b"".join(len(item).to_bytes(4, "big") + item for item in items)


def unpack_list(data: bytes) -> tuple[bytes, ...]:
    """The items :func:`pack_list` packed, in order."""
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return tuple(out)


@dataclass(frozen=True, slots=True)
class LogState:
    """The log and the account map at one instant: what a tree head signs."""

    size: int  # entries in the log
    root: bytes  # the log's Merkle tree hash over them
    map_root: bytes  # the account map's root after them (sealpost.transparency.smt)


@dataclass(frozen=True, slots=True)
class LogLookup:
    """A username's state in the log and the account map, read at one instant (``size``):
    its account's newest entry and that entry's inclusion proof at ``size`` (``None`` and
    ``[]`` for a name with no account), and the map proof (:class:`MapProof` wire bytes)
    of its value, or of its absence, against the map root at ``size``."""

    size: int
    latest: LoggedEntry | None
    inclusion: list[bytes]
    map_proof: bytes


@dataclass(frozen=True, slots=True)
class InviteRecord:
    """An invite as ``sealpost admin invite list`` shows it (never its code)."""

    invite_id: str  # 8 hex digits, public: the first part of the code
    uses_left: int
    uses: int  # registrations it admitted
    created: int  # seconds
    expires_at: int  # seconds; 0: never
    revoked: bool

    def usable(self, now: int) -> bool:
        return (
            not self.revoked
            and self.uses_left > 0
            and (not self.expires_at or now < self.expires_at)
        )


@dataclass(frozen=True, slots=True)
class InviteUse:
    """A registration's invite: the id from the code, and the hash of the whole code."""

    invite_id: str
    code_hash: bytes = field(repr=False)
    now: int = 0  # seconds


@dataclass(frozen=True, slots=True)
class RemovedAccount:
    """What :meth:`Storage.remove_account` removed (counts, nothing identifying but the
    log index of the deletion entry, which is public)."""

    log_index: int
    devices: int
    queued: int
    attachments: Sequence[bytes]  # ids whose blobs the caller must now delete
    free_at: int  # seconds: the name is held until then


@dataclass(frozen=True, slots=True)
class Removal:
    """One removal, as the server's processes learn of them (:meth:`Storage.removals`)."""

    seq: int
    account_id: bytes
    log_index: int
    cause: int
    free_at: int
    audited: bool  # the server's log has said it


@dataclass(frozen=True, slots=True)
class StorageStats:
    """Counts and sizes only (``sealpost admin stats``): nothing that identifies anyone."""

    accounts: int
    devices: int
    queued_messages: int
    queued_bytes: int
    oldest_queued: int | None  # seconds: when the oldest queued message arrived
    attachments: int
    attachment_bytes: int
    log_entries: int
    removed_accounts: int
    invites_usable: int


@dataclass(frozen=True, slots=True)
class PurgeResult:
    messages: int
    nonces: int
    attachments: Sequence[bytes]  # ids whose blobs the caller must now delete


class Storage(Protocol):
    """The server's persistent state. See the module docstring for the guarantees."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # -- accounts and devices
    async def create_account(
        self,
        account: AccountRecord,
        device: DeviceRecord,
        prekeys: PreKeyUpload,
        *,
        invite: InviteUse | None = None,
    ) -> None:
        """Raises :class:`UsernameTaken` (:class:`UsernameQuarantined` for a removed
        account's name before its quarantine ends) or :class:`AccountExists`. With
        ``invite``, spends one use of that invite in the same transaction, comparing the
        code's hash in constant time, or raises :class:`InviteRefused` (and changes
        nothing) if no usable invite has that code.

        This, :meth:`add_device` and :meth:`remove_device` each append the account's new
        state to the key-transparency log in the same transaction (a :class:`LoggedEntry`),
        so the directory never serves a state the log does not hold, and in that same
        transaction set the account map's value for the username (``account_map_key``) to
        the new entry's (``account_map_value(index, leaf hash)``), so that the map after
        ``n`` entries is always the map of those ``n`` entries."""

    async def remove_account(
        self,
        account_id: bytes,
        *,
        log_key: SigningKey,
        cause: DeletionCause,
        now_ms: int,
        free_at: int,
    ) -> RemovedAccount:
        """Remove the account whole, in one transaction: its devices, prekeys, queued
        messages, revocations and attachment records (the caller deletes the returned
        blobs), and append its :class:`~sealpost.transparency.log.DeletionEntry` (signed
        with ``log_key``; ``free_after`` is ``free_at`` in milliseconds) with the map's
        value for the name set to it. The name is held until ``free_at`` (seconds):
        :meth:`create_account` refuses it until then (:class:`UsernameQuarantined`).
        The removal is recorded for the server's processes (:meth:`removals`). Raises
        :class:`UnknownAccount`. An operator's removal and, later, an account's own use
        this one operation (``cause``)."""

    async def removals(self, *, after: int) -> list[Removal]:
        """Removals recorded after ``after`` (a :attr:`Removal.seq`), oldest first."""

    async def mark_audited(self, seq: int) -> None:
        """The server's log has said removal ``seq`` (and every one before it)."""

    async def forget_account(self, account_id: bytes) -> None:
        """Drop whatever this process keeps about the account (another process removed
        it), and anything a send let through meanwhile."""

    async def add_device(
        self, device: DeviceRecord, prekeys: PreKeyUpload, *, max_devices: int
    ) -> None:
        """Raises :class:`UnknownAccount`, :class:`DeviceExists`, :class:`DeviceRevoked`
        or :class:`TooManyDevices` (the account has ``max_devices`` already)."""

    async def remove_device(self, account_id: bytes, device_id: int, revocation: bytes) -> None:
        """Delete a device with its prekeys and queue, and keep its (verified) revocation,
        in one transaction. Raises :class:`UnknownDevice` or :class:`LastDevice`."""

    async def revocations(self, account_id: bytes) -> list[bytes]:
        """The account's device revocations (wire bytes), oldest first."""

    async def account_by_username(self, username_lower: str) -> AccountRecord | None: ...

    async def account_by_id(self, account_id: bytes) -> AccountRecord | None: ...

    def account_known(self, account_id: bytes) -> AccountRecord | None:
        """What :meth:`account_by_id` would answer, if this process holds the record in
        memory (``None`` otherwise: await that), without a coroutine: every sealed send
        looks up its recipients."""

    async def devices(self, account_id: bytes) -> list[DeviceRecord]: ...

    async def device(self, account_id: bytes, device_id: int) -> DeviceRecord | None: ...

    # -- key transparency (an append-only Merkle log; entries are never rewritten)
    async def log_size(self) -> int:
        """How many entries the log holds."""

    async def log_entries(self, account_id: bytes, *, after: int = -1) -> list[LoggedEntry]:
        """The account's entries with an index above ``after``, oldest first."""

    async def log_latest(self, account_id: bytes) -> LoggedEntry | None:
        """The account's newest entry (its current state)."""

    async def log_root(self, size: int) -> bytes:
        """The Merkle tree hash of the first ``size`` entries."""

    async def log_inclusion(self, index: int, size: int) -> list[bytes]:
        """The inclusion proof of entry ``index`` in the tree of ``size`` entries."""

    async def log_consistency(self, size1: int, size2: int) -> list[bytes]:
        """The consistency proof from the tree of ``size1`` entries to that of ``size2``."""

    async def log_state(self) -> LogState:
        """The log's size and root and the account map's root, all read at one instant
        (one snapshot: never a map root of another size)."""

    async def log_lookup(self, username_lower: str) -> LogLookup:
        """The username's newest entry, its inclusion proof and its map proof (or the
        map's proof that the name has no value), all at one instant, whose log size the
        answer names. A backend that cannot prove at past sizes (SQLite keeps only the
        current map) answers at the current size; the caller signs a head for it."""

    async def log_head(self) -> bytes | None:
        """The newest signed tree head stored (its wire bytes)."""

    async def add_log_head(self, tree_size: int, timestamp: int, head: bytes) -> None:
        """Keep a newly signed tree head (the first one signed for each size is kept)."""

    # -- authentication
    async def use_nonce(self, nonce: bytes, expires_at: int) -> bool:
        """Record a request nonce; ``False`` if it was already recorded (a replay)."""

    # -- prekeys
    async def store_prekeys(
        self, account_id: bytes, device_id: int, prekeys: PreKeyUpload, *, max_stock: int
    ) -> None:
        """Replace the signed and last-resort keys, add one-time keys. Raises
        :class:`PreKeyStockFull` if a one-time stock would exceed ``max_stock``."""

    async def take_bundle(
        self, account_id: bytes, device_id: int, *, one_time: bool = True
    ) -> BundleParts | None:
        """Atomically remove and return one one-time prekey of each kind (if any).
        ``None`` when the device is unknown or has no signed prekey. With ``one_time``
        false nothing is removed: the bundle has no X25519 one-time key and the
        last-resort ML-KEM key (a fetch past the per-target limit)."""

    async def prekey_stock(self, account_id: bytes, device_id: int) -> PreKeyStock: ...

    # -- queue
    async def enqueue(
        self,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
        fence: Fence | None = None,
    ) -> int:
        """Store ``envelopes`` durably, all or none, once every destination account is named
        with exactly all its devices (less the one ``exempt`` names for that account: an
        authenticated sender's own device); how many were stored anew (not those whose
        message id was queued already). Raises :class:`UnknownAccount`,
        :class:`MismatchedDevices` or :class:`QueueFull` (a destination device would hold
        more than ``max_depth`` messages or, unless ``max_bytes`` is 0, more than
        ``max_bytes`` bytes of bodies). With ``fence``: raises :class:`StaleEpoch`
        (storing nothing) unless ``fence.epoch`` is still the device's epoch when the
        send is stored, in its place among the writes (a :meth:`claim_device` that
        returned before the send is stored fences it off, even one that came after the
        send was queued)."""

    def enqueue_nowait(
        self,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
        fence: Fence | None = None,
    ) -> asyncio.Future[int]:
        """:meth:`enqueue`, queued at once (call it from the event loop that opened the
        storage): the future is done once the envelopes are durable (with the number stored
        anew), or fails with the same errors. Sends queued one after another are committed
        in that order, so a caller can pipeline them without a task each (the relay's
        WebSocket sends)."""

    def enqueue_shared_nowait(
        self,
        body: bytes,
        envelopes: Sequence[SharedEnvelope],
        *,
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
    ) -> asyncio.Future[int]:
        """:meth:`enqueue_shared`, queued at once, in order with :meth:`enqueue_nowait`."""

    async def enqueue_shared(
        self,
        body: bytes,
        envelopes: Sequence[SharedEnvelope],
        *,
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
    ) -> int:
        """:meth:`enqueue` of one multi-recipient send, with ``body`` stored once (not once
        per device) and counted by reference: each destination device gets its own queued
        message (own id, own ``prefix``) that :meth:`fetch` returns as ``prefix + body``;
        acking, purging or removing the device deletes that message, and the last one
        gone deletes the body in the same transaction. The same checks, errors and
        all-or-none guarantee as :meth:`enqueue` (no ``exempt`` and no ``fence``: sealed
        sends only, which come on no device's connection); a device's queue bytes count
        ``len(prefix) + len(body)``."""

    async def fetch(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage]: ...

    def fetch_known(
        self, account_id: bytes, device_id: int, *, after_seq: int, limit: int
    ) -> list[QueuedMessage] | None:
        """What :meth:`fetch` would answer, if this process knows it without reading the
        database (the queue tails it keeps in memory, exact: see :mod:`.tail`); ``None``
        when it does not."""

    async def ack(self, account_id: bytes, device_id: int, message_id: bytes) -> bool:
        """Delete a message from this device's own queue; ``False`` if it has no such one."""

    async def ack_all(
        self,
        account_id: bytes,
        device_id: int,
        message_ids: Sequence[bytes],
        *,
        epoch: int | None = None,
    ) -> int:
        """:meth:`ack` of several messages in one transaction; how many were deleted.
        With ``epoch``: raises :class:`StaleEpoch` (deleting nothing) unless it is still
        the device's epoch (:meth:`claim_device`)."""

    def ack_each_nowait(
        self, acks: Sequence[DeviceAcks]
    ) -> asyncio.Future[list[StaleEpoch | None]]:
        """:meth:`ack_all` of each device's acks, queued at once, together (call it from
        the event loop that opened the storage; the relay's streams: every device's acks
        received in one loop iteration, with no task each): the future is done once they
        are committed, with each device's outcome in the order given, ``None`` or the
        :class:`StaleEpoch` that refused it (deleting nothing of it); it fails whole if the
        commit does. One device's acks queued one after another are committed in order."""

    async def queue_positions(
        self, addresses: Sequence[tuple[bytes, int]]
    ) -> dict[tuple[bytes, int], QueuePosition]:
        """Where each of these devices' queues stands, in one read (the poll of the
        processes sharing a database: :mod:`sealpost.server.stream`): a device is absent
        only if it has no queue (it was removed, or never was). A message committed before
        the read has a sequence number of at most its device's ``seq``, so a device whose
        ``seq`` is not past the last one pushed to it holds nothing to push; and the
        ``epoch`` is the device's latest, so a connection holding an older one was
        replaced. Not a write: it waits for none and changes nothing."""

    # -- connections (one stream per device, whichever process holds it)
    async def claim_device(self, account_id: bytes, device_id: int) -> int:
        """A new epoch for the device (a fencing token): the connection that took it is the
        device's only one; acks and sends carrying an older epoch are refused."""

    def leader(self) -> bool:
        """Whether this process runs the jobs one process runs: signing tree heads and
        purging (always, with one process; one at a time, with several)."""

    def stopped(self) -> str | None:
        """Why this storage serves no more, for good (another process took over its
        database), or ``None``: once it is not ``None`` every operation raises
        :class:`StorageUnavailable` and the server process stops, saying why."""

    # -- attachments
    async def add_attachment(self, record: AttachmentRecord, *, max_owner_bytes: int = 0) -> None:
        """Keep an attachment's metadata. Unless ``max_owner_bytes`` is 0, raises
        :class:`AttachmentQuotaFull` if the unexpired attachments of ``record.owner``
        (this one included) would be more than ``max_owner_bytes`` bytes. (Expired ones
        no longer count even before :meth:`purge` removes them.)"""

    async def attachment(self, attachment_id: bytes) -> AttachmentRecord | None: ...

    # -- invites (sealpost admin invite)
    async def create_invite(self, record: InviteRecord, code_hash: bytes) -> None:
        """Keep a new invite (``record.uses_left`` uses); the code only as its hash."""

    async def invites(self) -> list[InviteRecord]:
        """Every invite, oldest first."""

    async def revoke_invite(self, invite_id: str) -> None:
        """No registration may use it any more. Raises :class:`UnknownInvite`."""

    # -- operations
    async def stats(self) -> StorageStats:
        """Counts and sizes (one snapshot)."""

    # -- retention
    async def purge(self, now: int) -> PurgeResult:
        """Delete expired messages (and shared bodies left without one), nonces and
        attachment records, in bounded steps; the caller deletes the returned blobs."""


class AwaitedSends:
    """:meth:`Storage.enqueue` and :meth:`Storage.enqueue_shared` as every backend has them:
    its ``enqueue_nowait`` and ``enqueue_shared_nowait``, awaited (a mixin of the backends'
    queue classes; those two are theirs)."""

    __slots__ = ()

    async def enqueue(
        self: Storage,
        envelopes: Sequence[Envelope],
        *,
        exempt: Mapping[bytes, int],
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
        fence: Fence | None = None,
    ) -> int:
        return await self.enqueue_nowait(
            envelopes,
            exempt=exempt,
            received_at=received_at,
            expires_at=expires_at,
            max_depth=max_depth,
            max_bytes=max_bytes,
            fence=fence,
        )

    async def enqueue_shared(
        self: Storage,
        body: bytes,
        envelopes: Sequence[SharedEnvelope],
        *,
        received_at: int,
        expires_at: int,
        max_depth: int,
        max_bytes: int = 0,
    ) -> int:
        return await self.enqueue_shared_nowait(
            body,
            envelopes,
            received_at=received_at,
            expires_at=expires_at,
            max_depth=max_depth,
            max_bytes=max_bytes,
        )
