"""The tails of some devices' queues, in memory, so that pushing needs no database read.

A connected device's queue is short: messages arrive, are pushed and are acked within
milliseconds. Reading them back from SQLite for every push cost a hop to a reader thread
and back per wake-up (bench/relay.py with 1000 devices: 2,500 msgs/s relayed with it,
4,100 without; idle delivery p50 0.88 -> 0.63 ms). So the storage keeps, for devices whose
queue it has read, *every* message queued for that device after some sequence number (its
``floor``), and answers a fetch after the floor from memory.

The copy stays exact because only the storage's write path changes it, after each commit
and in commit order: a committed enqueue appends, a committed ack or purge removes, and a
queue read run as a write (inside a batch's transaction, in its place among the batch's
operations) sets a device's tail when it returned the whole rest of the queue. Nothing
uncommitted is ever in it; a failed commit changes nothing (PostgreSQL's storage, which
cannot tell whether a failed commit committed, drops every tail instead). A device's tail
is dropped (and the next fetch reads the database again) when it grows past
``max_messages`` or the tails together pass ``max_bytes``, least recently read first, so
memory stays bounded whatever clients do. The database stays the truth: after a restart
every tail starts empty.

    >>> tails = QueueTails(max_bytes=1 << 20, max_messages=100)
    >>> tails.fetch((b"a" * 16, 1), after_seq=0, limit=10) is None  # not known: read the db
    True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from sealpost.server.storage.base import QueuedMessage

__all__ = ["QueueTails"]

DeviceAddress = tuple[bytes, int]  # (account id, device id)

#: Bytes a queued message costs in a tail beyond its body (objects and dict slot).
_OVERHEAD = 200


class _Tail:
    __slots__ = ("floor", "messages", "size")

    def __init__(self, floor: int) -> None:
        self.floor = floor  # every queued message with seq > floor is in ``messages``
        self.messages: dict[bytes, QueuedMessage] = {}  # by message id, in seq order
        self.size = 0


class QueueTails:
    """Used from the event loop's thread only, like the storage's write path."""

    def __init__(self, *, max_bytes: int, max_messages: int) -> None:
        self._max_bytes = max_bytes
        self._max_messages = max_messages
        self._tails: OrderedDict[DeviceAddress, _Tail] = OrderedDict()
        self._size = 0

    def fetch(
        self, address: DeviceAddress, after_seq: int, limit: int
    ) -> list[QueuedMessage] | None:
        """The first ``limit`` messages after ``after_seq``; ``None`` when not known here."""
        tail = self._tails.get(address)
        if tail is None or after_seq < tail.floor:
            return None
        self._tails.move_to_end(address)
        out = []
        for message in tail.messages.values():
            if message.seq > after_seq:
                out.append(message)
                if len(out) == limit:
                    break
        return out

    # -- the write path, after a commit, in commit order

    def known(
        self, address: DeviceAddress, after_seq: int, messages: Sequence[QueuedMessage]
    ) -> None:
        """``messages`` are all of the device's queue after ``after_seq``."""
        old = self._tails.get(address)
        if old is not None and old.floor <= after_seq:
            return  # already knows at least as much
        tail = _Tail(after_seq)
        for message in messages:
            tail.messages[message.message_id] = message
            tail.size += len(message.body) + _OVERHEAD
        self._drop(address)
        self._tails[address] = tail
        self._size += tail.size
        self._trim(address)

    def added(self, items: Iterable[tuple[DeviceAddress, QueuedMessage]]) -> None:
        tails = self._tails
        most = self._max_messages
        for address, message in items:
            tail = tails.get(address)
            if tail is None:
                continue
            messages = tail.messages
            messages[message.message_id] = message
            cost = len(message.body) + _OVERHEAD
            tail.size += cost
            self._size += cost
            # _trim(address), inline: this runs once per message queued
            if len(messages) > most:
                self._drop(address)
            if self._size > self._max_bytes:
                self._trim_bytes()

    def removed(self, address: DeviceAddress, message_ids: Iterable[bytes]) -> None:
        tail = self._tails.get(address)
        if tail is None:
            return
        for message_id in message_ids:
            message = tail.messages.pop(message_id, None)
            if message is not None:
                cost = len(message.body) + _OVERHEAD
                tail.size -= cost
                self._size -= cost

    def removed_each(self, acked: Iterable[tuple[DeviceAddress, Iterable[bytes]]]) -> None:
        """:meth:`removed` for each device's ids (with the load spread over many devices,
        one id each: no call a device)."""
        tails = self._tails
        freed = 0
        for address, message_ids in acked:
            tail = tails.get(address)
            if tail is None:
                continue
            messages = tail.messages
            for message_id in message_ids:
                message = messages.pop(message_id, None)
                if message is not None:
                    cost = len(message.body) + _OVERHEAD
                    tail.size -= cost
                    freed += cost
        self._size -= freed

    def clear(self) -> None:
        self._tails.clear()
        self._size = 0

    def __len__(self) -> int:
        return len(self._tails)

    def _drop(self, address: DeviceAddress) -> None:
        tail = self._tails.pop(address, None)
        if tail is not None:
            self._size -= tail.size

    def _trim(self, address: DeviceAddress) -> None:
        tail = self._tails.get(address)
        if tail is not None and len(tail.messages) > self._max_messages:
            self._drop(address)
        self._trim_bytes()

    def _trim_bytes(self) -> None:
        while self._size > self._max_bytes and self._tails:
            oldest = next(iter(self._tails))
            self._drop(oldest)
