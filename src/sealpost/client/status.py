"""The status of a message in the history, and the one table of the moves between them.

An outgoing message is stored ``QUEUED`` (shown as ``"sending"``) in the same commit as the
ratchet steps that encrypted it; it becomes ``SENT`` once the server has stored it,
``DELIVERED`` once the recipient's delivery receipt arrives (for a group: once every other
member's has), and ``READ`` once a read receipt does. It becomes ``FAILED`` when the
server refuses it for good. An incoming message is stored ``RECEIVED``; a message copied
from this account's other device (a sent transcript) is stored ``SENT``.

The public strings are :class:`Message.status <sealpost.client.Message>` and the ``status``
of ``--json`` output: ``"sending"``, ``"sent"``, ``"delivered"``, ``"read"``, ``"failed"``,
``"received"``. ``DELETED`` is never stored: deleting a message removes its row (and a
deletion for everyone that arrives first leaves a tombstone); it is in the table to state
that any message may be deleted and nothing comes back from it.

Every status update goes through :data:`TRANSITIONS` (the h11 ``_state.py`` idea: the
rules as data in one place, anything else an error). A Python caller checks a move with
:func:`advance`; a repository writes ``... SET status = ? WHERE ... AND status IN
(sources(new))`` with :func:`sources`, so the table decides in SQL as well, and a message
already past the new status (a delivery receipt that beat the server's answer) is left
as it is. Setting a status a message already has is no move at all: callers treat it as
done (a repeated receipt)::

    >>> advance(MessageStatus.QUEUED, MessageStatus.SENT)
    <MessageStatus.SENT: 'sent'>
    >>> advance(MessageStatus.DELIVERED, MessageStatus.SENT)
    Traceback (most recent call last):
    ...
    sealpost.client.status.IllegalTransition: a message that is delivered cannot become sent
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from sealpost.client.errors import ClientError

__all__ = [
    "INITIAL",
    "TRANSITIONS",
    "IllegalTransition",
    "MessageStatus",
    "advance",
    "sources",
]


class MessageStatus(enum.StrEnum):
    """A message's status; the value is the public string (stored as it is)."""

    QUEUED = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    DELETED = "deleted"
    RECEIVED = "received"


_S = MessageStatus

#: What a message may become from each status. Nothing else is a legal move.
TRANSITIONS: Mapping[MessageStatus, frozenset[MessageStatus]] = {
    # DELIVERED straight from QUEUED: the recipient's receipt can come back before the
    # server's answer to the send has been settled
    _S.QUEUED: frozenset({_S.SENT, _S.DELIVERED, _S.FAILED, _S.DELETED}),
    _S.SENT: frozenset({_S.DELIVERED, _S.READ, _S.DELETED}),
    _S.DELIVERED: frozenset({_S.READ, _S.DELETED}),
    _S.READ: frozenset({_S.DELETED}),
    # a receipt proves a failed message arrived after all (a group send of which another
    # part, a sender-key distribution, was refused)
    _S.FAILED: frozenset({_S.DELIVERED, _S.DELETED}),
    _S.RECEIVED: frozenset({_S.READ, _S.DELETED}),
    _S.DELETED: frozenset(),
}

#: The statuses a message is stored with: sent from this device, copied from another
#: device of this account, or received.
INITIAL = frozenset({_S.QUEUED, _S.SENT, _S.RECEIVED})

_SOURCES: Mapping[MessageStatus, tuple[str, ...]] = {
    new: tuple(sorted(old.value for old, moves in TRANSITIONS.items() if new in moves))
    for new in MessageStatus
}


class IllegalTransition(ClientError):
    """A status update the table does not allow (a bug in the caller, never the peer's
    doing: a peer's receipt for a message in the wrong state is ignored)."""

    def __init__(self, current: MessageStatus, new: MessageStatus) -> None:
        was, to = current.name.lower(), new.name.lower()
        super().__init__(f"a message that is {was} cannot become {to}")
        self.current = current
        self.new = new


def advance(current: MessageStatus | str, new: MessageStatus | str) -> MessageStatus:
    """``new``, if a message that is ``current`` may become it; else
    :class:`IllegalTransition`. A string that is no status is a ``ValueError``."""
    old, to = MessageStatus(current), MessageStatus(new)
    if to not in TRANSITIONS[old]:
        raise IllegalTransition(old, to)
    return to


def sources(new: MessageStatus) -> tuple[str, ...]:
    """The stored statuses from which a message may become ``new`` (for ``status IN``)."""
    return _SOURCES[new]
