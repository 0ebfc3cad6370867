"""One message never jams an inbox: what a receive batch does when a message fails, and
what it needs from the network before it opens anything.

A receive batch (:mod:`sealpost.client.services.receiving`) has two phases. First, with no
lock held, it fetches what the batch needs from the network (:class:`Prefetched`: the
directory entries of senders it does not know, checked against the log, and group-state
blobs); then, under the lock and with no network call, it opens every push into one batch
state, commits that in one transaction, and only then acknowledges. What a message needs
is known only once it is open, so the locked phase asks: a message that needs something
not yet fetched raises :class:`Missing`; the batch is then thrown away uncommitted, the
lock released, the needs fetched, and the batch opened again (:data:`MAX_ROUNDS` at most).

A message that fails is the message's own fault or not:

- **not its fault** (:func:`must_retry`): the server could not be reached or is
  overloaded (``ServerUnavailable``, 429, 5xx), or the local store failed. Nothing of the
  batch is committed or acknowledged, so nothing is lost; the next receive tries again.
- **its fault**, whatever the error (forged, undecryptable, a replay, a sender the log does
  not confirm, a claimed name that is no username, a group state attachment that does not
  exist or expired; or :class:`DropMessage`, the pipeline's own signal for a message it
  refuses that is no protocol error): that message alone is dropped with a log line naming
  only the error type, and acknowledged with the rest. What it changed in the batch state
  before failing is undone (:class:`BatchMark`), except what cannot be taken back
  honestly: a pairwise ratchet step already taken (its key is spent, as it would be for a
  message that decrypts to garbage), a one-time prekey already used (single use, whatever
  came of it) and an alarm it raised (kept: it is evidence).

Otherwise a message that fails the same way every time would be fetched again forever,
and nothing behind it would ever be read.

The signals here are internal: :class:`DropMessage` and :class:`Missing` are not
:class:`~sealpost.client.errors.ClientError`\\ s and never leave the receive pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from sealpost.client.errors import ServerError, ServerUnavailable
from sealpost.client.store import StoreError
from sealpost.client.store.contacts import ContactRow
from sealpost.protocol.wire import DeviceCertificate

__all__ = [
    "MAX_ROUNDS",
    "BatchMark",
    "Blob",
    "DirectoryEntry",
    "DropMessage",
    "Lookup",
    "Missing",
    "Need",
    "Prefetched",
    "Refresh",
    "must_retry",
]

#: How many times a batch is opened at most: each round may reveal what a message needs
#: only once an earlier need is met (a sender's entry, then the group state it sent).
MAX_ROUNDS: Final = 4


class DropMessage(Exception):
    """Drop this message (it is acknowledged with its batch): it comes from this very
    device, from a revoked device, from a sender this device cannot place, or names what
    does not exist. ``reason`` is for the log and names no key and no content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def must_retry(exc: BaseException) -> bool:
    """Whether a failure while opening one message is not that message's fault."""
    if isinstance(exc, ServerUnavailable | StoreError):
        return True
    if isinstance(exc, ServerError):
        return exc.status == 429 or exc.status >= 500
    # the local database (sqlite3 / sqlcipher errors share these names)
    return type(exc).__name__ in ("OperationalError", "DatabaseError", "InterfaceError")


# ---------------------------------------------------------------------- needs


@dataclass(frozen=True, slots=True)
class Lookup:
    """The directory entry of ``name``, checked against the key-transparency log."""

    name: str


@dataclass(frozen=True, slots=True)
class Refresh:
    """The contact ``name`` looked up again and stored (its name now answers with another
    account: a key change)."""

    name: str


@dataclass(frozen=True, slots=True)
class Blob:
    """An attachment's bytes (a group state too large to travel inline)."""

    pointer: bytes


Need = Lookup | Refresh | Blob

#: account id, username, account key, the devices the log holds
DirectoryEntry = tuple[bytes, str, bytes, dict[int, DeviceCertificate]]


class Missing(Exception):
    """The message needs ``need`` from the network, not fetched yet (see the module
    docstring): the locked phase stops, the batch is opened again once it is fetched."""

    def __init__(self, need: Need) -> None:
        super().__init__(type(need).__name__)
        self.need = need


class Prefetched:
    """What a batch fetched before its locked phase, kept across its rounds: each answer,
    or the error it failed with (raised again, to that message, when it asks)."""

    __slots__ = ("_answers", "_failures", "_wanted")

    def __init__(self) -> None:
        self._answers: dict[Need, Any] = {}
        self._failures: dict[Need, Exception] = {}
        self._wanted: set[Need] = set()

    def _get(self, need: Need) -> Any:
        if need in self._answers:
            return self._answers[need]
        failure = self._failures.get(need)
        if failure is not None:
            raise failure
        self._wanted.add(need)
        raise Missing(need)

    def lookup(self, name: str) -> DirectoryEntry:
        entry: DirectoryEntry = self._get(Lookup(name))
        return entry

    def refresh(self, name: str) -> ContactRow:
        row: ContactRow = self._get(Refresh(name))
        return row

    def blob(self, pointer: bytes) -> bytes:
        data: bytes = self._get(Blob(pointer))
        return data

    @property
    def pending(self) -> set[Need]:
        """What was asked for and not fetched yet."""
        return self._wanted - self._answers.keys() - self._failures.keys()

    async def fetch(
        self,
        *,
        lookup: Callable[[str], Awaitable[DirectoryEntry]],
        refresh: Callable[[str], Awaitable[ContactRow]],
        download: Callable[[bytes], Awaitable[bytes]],
    ) -> None:
        """Fetch every pending need (no lock held). A failure that is not the message's
        fault (:func:`must_retry`) is raised: the batch waits; any other is kept for the
        message that asked."""
        for need in sorted(self.pending, key=repr):
            try:
                if isinstance(need, Lookup):
                    self._answers[need] = await lookup(need.name)
                elif isinstance(need, Refresh):
                    self._answers[need] = await refresh(need.name)
                else:
                    self._answers[need] = await download(need.pointer)
            except Exception as exc:
                if must_retry(exc):
                    raise
                self._failures[need] = exc


# ---------------------------------------------------------------------- undo


# The batch-state fields one message may change, by how they are put back: lists only grow
# (put back by length), the others are copied (one level deep for dicts of containers).
# Not put back: sessions and used prekeys (see the module docstring), alarms (evidence)
# and what was fetched (shared by the batch's rounds).
_LISTS = ("events", "messages", "receipts", "writes", "changes")
_COPIED: tuple[str, ...] = ("seen_ids", "tokens", "new_contacts", "key_changes", "own_devices")
_COPIED += ("groups", "sender_keys", "gossip", "group_sends")
_NESTED = ("device_certs", "reply_to")


@dataclass(frozen=True, slots=True)
class BatchMark:
    """The batch state as it was before one message (see the module docstring for what
    is deliberately not put back)."""

    lengths: dict[str, int]
    copies: dict[str, Any]

    @classmethod
    def of(cls, state: Any) -> BatchMark:
        copies: dict[str, Any] = {name: getattr(state, name).copy() for name in _COPIED}
        for name in _NESTED:
            copies[name] = {k: v.copy() for k, v in getattr(state, name).items()}
        return cls({name: len(getattr(state, name)) for name in _LISTS}, copies)

    def restore(self, state: Any) -> None:
        for name, length in self.lengths.items():
            del getattr(state, name)[length:]
        for name, value in self.copies.items():
            setattr(state, name, value)
