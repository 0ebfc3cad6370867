"""Pushing: a device's queue, written to its ``/v1/stream`` socket in queue order
(:mod:`.stream` holds the sockets' handlers; this is the side of them that writes
``message`` and ``empty`` frames). docs/PROTOCOL.md ("WebSocket frames") is the reference.

Pushing reads from storage (after the last sequence number sent) whenever the fanout says
the device's queue grew, so push order is queue order and a wake-up carries no content; a
pusher runs only until the queue is empty (an idle connection holds no task for it).
What the storage holds in memory (:meth:`~.storage.base.Storage.fetch_known`) goes out at
once, with no pusher task (:meth:`Pushing._push_known`); the rest is read by a pusher
(:meth:`Pushing._push`), at most :data:`PUSH_BATCH` messages a read.

:class:`Pushing` is a part of :class:`~.stream.StreamEndpoint` (its base, as the storage's
modules are mixins of ``SqliteCore``): its methods read the endpoint's context and count
what they push in its ``_pushed``.
"""

from __future__ import annotations

import asyncio
from binascii import b2a_base64
from typing import TYPE_CHECKING

from sealpost.server.context import Context
from sealpost.server.fanout.base import DeviceAddress

if TYPE_CHECKING:
    from sealpost.server.stream_conn import Connection

__all__ = ["PUSH_BATCH", "Pushing", "message_text"]

PUSH_BATCH = 100


class Pushing:
    """The endpoint's pushing: :meth:`_wake` is each ``/v1/stream`` connection's fanout
    subscription."""

    _ctx: Context
    _pushed: int

    def _wake(self, conn: Connection, address: DeviceAddress) -> None:
        """The device's queue may have grown (the fanout says so): push, unless a pusher is
        at it already, which then reads the queue once more before it stops. What the
        storage holds in memory goes out at once, with no pusher task."""
        if conn.pusher is None:
            if self._push_known(conn, address):
                return
            conn.pusher = asyncio.create_task(self._push(conn, address))
            conn.pusher.add_done_callback(conn.failed)
        else:
            conn.again = True

    def _push_known(self, conn: Connection, address: DeviceAddress) -> bool:
        """Push the rest of the queue now, if the storage knows it without a read
        (:meth:`~.storage.base.Storage.fetch_known`) and the socket takes the frames at
        once; ``False`` (nothing done) otherwise. Like :meth:`_push`, then ``empty``."""
        sock = conn.sock
        fast = sock.fast
        if fast is None or sock.waiting():
            return False
        account_id, device_id = address  # not *address: a call with no tuple or dict made
        batch = self._ctx.storage.fetch_known(
            account_id, device_id, after_seq=conn.last, limit=PUSH_BATCH
        )
        if batch is None or len(batch) == PUSH_BATCH:
            return False
        texts = []  # not a comprehension: its frame, for the one message it mostly is
        for m in batch:
            texts.append(message_text(m.message_id, m.body, m.received_at))
        if batch or not conn.idle:
            texts.append('{"type":"empty"}')
            if not fast(texts):
                return False
        if batch:
            conn.last = batch[-1].seq
            self._pushed += len(batch)
        conn.idle = True
        return True

    async def _push(self, conn: Connection, address: DeviceAddress) -> None:
        """Push what is queued after the last message pushed, in queue order, until the
        queue is empty; then say ``empty`` (once a burst) and stop."""
        storage = self._ctx.storage
        sock = conn.sock
        account_id, device_id = address
        try:
            while True:
                conn.again = False
                batch = await storage.fetch(
                    account_id, device_id, after_seq=conn.last, limit=PUSH_BATCH
                )
                if batch:
                    conn.idle = False
                    await sock.send_texts(
                        [message_text(m.message_id, m.body, m.received_at) for m in batch]
                    )
                    conn.last = batch[-1].seq
                    self._pushed += len(batch)
                    if len(batch) == PUSH_BATCH or conn.again:
                        continue
                    # A short batch was the rest of the queue, and nothing was stored for
                    # this device since (that would have woken it: ``again``): no read to
                    # find it empty (with a device's messages spread thin, a read a push).
                if not conn.idle:
                    await sock.send_text('{"type":"empty"}')
                    conn.idle = True
                if not conn.again:
                    return
        finally:
            if conn.pusher is asyncio.current_task():
                conn.pusher = None


def message_text(message_id: bytes, body: bytes, received_at: int) -> str:
    """A :class:`~.frames.MessageFrame`, formatted by hand (the hottest frame): hex and
    base64 need no JSON escaping (``binascii``'s, without ``base64.b64encode``'s frame)."""
    return (
        f'{{"type":"message","id":"{message_id.hex()}","body":"'
        f'{b2a_base64(body, newline=False).decode()}","received_at":{received_at}}}'
    )
