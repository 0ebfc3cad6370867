"""Send ids: what makes a send idempotent at the relay.

A client that sent a request and lost the answer (a crash, a dropped socket) cannot know
whether the relay stored it, so it sends the same outbox bytes again. So that the relay does
not store and push them twice, each envelope carries a **send id**: 16 bytes chosen by the
sender, fresh per envelope, and the relay stores at most one queued message per destination
device and send id (see docs/PROTOCOL.md, "Send ids").

The client keeps one random 16-byte ``seed`` per send in its outbox (drawn when the outbox
row is committed) and derives each envelope's id from it, so the outbox needs no id per
envelope and a resend after a crash carries the same ids::

    envelope_send_id(seed, account_id, device_id)
        = BLAKE2b-128(key = seed, person = "sealpost-env-id",
                      account_id (16 bytes) || device_id (4 bytes, big-endian))
    multi_send_id(seed) = BLAKE2b-128(key = seed, person = "sealpost-multi", "")

Derived with a secret random key, ids are as unlinkable as random ones: two envelopes of a
send carry ids that nobody without the seed can relate (which matters for sealed sends).

The relay does not store the send id itself but the queued message's id derived from it
(:func:`queued_message_id`), for one device: a send id reused for another device gives
another message id, and the existing unique index on message ids is the dedupe, with no
index of its own::

    queued_message_id(send_id, account_id, device_id)
        = BLAKE2b-128(person = "sealpost-queue", send_id || account_id || device_id (4, BE))

>>> seed = bytes(16)
>>> a = envelope_send_id(seed, bytes(16), 1)
>>> a != envelope_send_id(seed, bytes(16), 2) and len(a) == SEND_ID_LEN
True
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["SEND_ID_LEN", "envelope_send_id", "multi_send_id", "queued_message_id"]

#: A send id and its seed: 128 bits, so random ids do not collide (2^-64 after 2^32 sends
#: to one device) and a seed cannot be guessed.
SEND_ID_LEN: Final = 16


def envelope_send_id(seed: bytes, account_id: bytes, device_id: int) -> bytes:
    """The send id of a send's envelope for one device."""
    h = hashlib.blake2b(key=seed, digest_size=SEND_ID_LEN, person=b"sealpost-env-id")
    h.update(account_id + device_id.to_bytes(4, "big"))
    return h.digest()


def multi_send_id(seed: bytes) -> bytes:
    """The send id of a send's multi-recipient part (one for all its devices)."""
    return hashlib.blake2b(key=seed, digest_size=SEND_ID_LEN, person=b"sealpost-multi").digest()


def queued_message_id(send_id: bytes, account_id: bytes, device_id: int) -> bytes:
    """The id the relay gives the message a send id queues for one device."""
    h = hashlib.blake2b(digest_size=SEND_ID_LEN, person=b"sealpost-queue")
    h.update(send_id + account_id + device_id.to_bytes(4, "big"))
    return h.digest()
