"""One message never jams an inbox: what a receive batch does when a message fails.

A receive batch opens its pushes one by one into a batch state, commits the state in one
transaction, then acknowledges every push (client.py ``_process``). A message that fails
is the message's own fault or not:

- **not its fault** (:func:`must_retry`): the server could not be reached or is
  overloaded (``ServerUnavailable``, 429, 5xx), or the local store failed. Nothing of the
  batch is committed or acknowledged, so nothing is lost; the next receive tries again.
- **its fault**, whatever the error (forged, undecryptable, a replay, a sender the log does
  not confirm, a claimed name that is no username, a group state attachment that does not
  exist or expired): that message alone is dropped with a log line naming only the error
  type, and acknowledged with the rest. What it changed in the batch state before failing
  is undone (:class:`BatchMark`), except what cannot be taken back honestly: a pairwise ratchet
  step already taken (its key is spent, as it would be for a message that decrypts to
  garbage) and a one-time prekey already used (single use, whatever came of it).

Otherwise a message that fails the same way every time would be fetched again forever,
and nothing behind it would ever be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sealpost.client.errors import ServerError, ServerUnavailable
from sealpost.client.store import StoreError

__all__ = ["BatchMark", "must_retry"]


def must_retry(exc: BaseException) -> bool:
    """Whether a failure while opening one message is not that message's fault."""
    if isinstance(exc, ServerUnavailable | StoreError):
        return True
    if isinstance(exc, ServerError):
        return exc.status == 429 or exc.status >= 500
    # the local database (sqlite3 / sqlcipher errors share these names)
    return type(exc).__name__ in ("OperationalError", "DatabaseError", "InterfaceError")


# The batch-state fields one message may change, by how they are put back: lists only grow
# (put back by length), the others are copied (one level deep for dicts of containers).
_LISTS = ("events", "messages", "receipts", "writes")
_COPIED: tuple[str, ...] = ("seen_ids", "tokens", "new_contacts", "key_changes", "own_devices")
_COPIED += ("groups", "sender_keys", "gossip", "group_sends")
_NESTED = ("device_certs", "reply_to")


@dataclass(frozen=True, slots=True)
class BatchMark:
    """The batch state as it was before one message (see the module docstring for what
    is deliberately not put back: sessions and used prekeys)."""

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
