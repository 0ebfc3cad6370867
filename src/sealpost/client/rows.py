"""The client's internal records: what its services pass each other (a contact as stored,
a send waiting for the sender loop, a send prepared for the wire, what one receive batch
changes, a group as stored, a message to store). None of these leave the package."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from sealpost.client.groupkeys import ReceiverChain
from sealpost.client.inbox import Prefetched
from sealpost.client.records import Event, Message, MessageReceived
from sealpost.client.store.contacts import ContactRow
from sealpost.client.store.groups import GroupRow
from sealpost.client.store.unit import Repositories
from sealpost.protocol import SessionRecord
from sealpost.protocol.content import Content, ReceiptContent, encode_unpadded
from sealpost.protocol.wire import DeviceCertificate

__all__ = [
    "AttachmentRow",
    "BatchState",
    "Change",
    "ContactRow",
    "DeletedForEveryone",
    "DeviceRevoked",
    "Envelopes",
    "GroupRow",
    "Incoming",
    "Outgoing",
    "OwnDeviceLinked",
    "OwnDeviceRemoved",
    "Prepared",
    "TimerSet",
]


@dataclass(slots=True)
class Outgoing:
    """A send waiting for the sender loop. ``peer`` names a contact; a group send has
    ``group`` set instead, and ``to_self`` sends ``content`` to this account's other
    devices only. ``transcript``: copy it to this account's other devices as well.
    ``pending``: the row of a send kept while the server could not be reached
    (:mod:`sealpost.client.store.pending`; 0: none), removed when it is committed."""

    peer: str
    content: Content
    future: asyncio.Future[Message | None]
    store: bool  # a history row for it (texts) or not (receipts, control messages)
    attempts: int = 0
    group: bytes | None = None
    to_self: bool = False
    transcript: bool = False
    attachment: AttachmentRow | None = None
    pending: int = 0
    #: (content, its encode_unpadded), once made (see unpadded)
    encoded: tuple[Content, bytes] | None = None

    def unpadded(self) -> bytes:
        """``content``'s unpadded encoding, made once for all its uses (the plaintext to
        each device, the transcript, the outbox's retry record); made anew if ``content``
        was replaced (a group send stamps the group's version on it)."""
        encoded = self.encoded
        if encoded is None or encoded[0] is not self.content:
            encoded = self.encoded = (self.content, encode_unpadded(self.content))
        return encoded[1]


@dataclass(slots=True)
class AttachmentRow:
    pointer: bytes
    filename: str
    size: int
    content_type: str
    path: str | None = None


Envelopes = list[tuple[bytes, int, bytes]]


@dataclass(slots=True)
class Prepared:
    item: Outgoing
    contact: ContactRow | None  # the pairwise peer (None for group and self sends)
    envelopes: Envelopes  # sealed, on the anonymous socket
    tokens: dict[bytes, bytes] = field(default_factory=dict)
    own: Envelopes = field(default_factory=list)  # to this account's other devices, signed
    # a group message: (group-sealed body, its recipient devices with empty wraps); an
    # outbox row from before group-sealed envelopes holds (shared part, key wraps)
    multi: tuple[bytes, Envelopes] | None = None
    writes: list[Callable[[Repositories], None]] = field(default_factory=list)  # in its unit
    outbox_id: int = 0
    #: The seed of its envelopes' send ids (:mod:`sealpost.protocol.send_id`), drawn when
    #: its outbox row is committed; b"": none (an old outbox row)
    send_id: bytes = b""


@dataclass(slots=True)
class BatchState:
    """What a receive batch changes, committed at once."""

    sessions: dict[tuple[bytes, int], SessionRecord] = field(default_factory=dict)
    used_prekeys: set[tuple[str, int]] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    messages: list[Incoming] = field(default_factory=list)
    receipts: list[tuple[bytes, ReceiptContent]] = field(default_factory=list)
    seen_ids: set[bytes] = field(default_factory=set)
    tokens: dict[bytes, bytes] = field(default_factory=dict)
    new_contacts: dict[bytes, ContactRow] = field(default_factory=dict)
    key_changes: dict[bytes, bytes] = field(default_factory=dict)
    device_certs: dict[bytes, dict[int, DeviceCertificate]] = field(default_factory=dict)
    own_devices: dict[int, DeviceCertificate] = field(default_factory=dict)
    reply_to: dict[bytes, list[bytes]] = field(default_factory=dict)
    writes: list[Callable[[Repositories], None]] = field(default_factory=list)  # in its unit
    groups: dict[bytes, GroupRow] = field(default_factory=dict)
    # (group id, account id, device id, chain id) -> the chain as it is after this batch
    sender_keys: dict[tuple[bytes, bytes, int, int], ReceiverChain] = field(default_factory=dict)
    prekey_messages: int = 0
    gossip: dict[bytes, str] = field(default_factory=dict)  # tree head -> who sent it
    # pairwise group sends after the commit, one per (group, member): (username, a content,
    # or an encoded chain to send as a group update)
    group_sends: dict[tuple[bytes, bytes], tuple[str, Content | bytes]] = field(
        default_factory=dict
    )
    changes: list[Change] = field(default_factory=list)  # what absorbing messages changed
    # (kind, subject, detail): raised once the batch is committed, even for a message that
    # was dropped (an alarm is evidence); never put back (sealpost.client.inbox)
    alarms: list[tuple[str, str, str]] = field(default_factory=list)
    # what the batch fetched before its locked phase, shared by its rounds
    fetched: Prefetched = field(default_factory=Prefetched)


# ---------------------------------------------------------------------- batch changes
# What absorbing one message changes besides messages, sessions and contacts: data, so that
# absorbing stays pure (sealpost.client.services.absorb) and the commit writes them.


@dataclass(frozen=True, slots=True)
class TimerSet:
    """The conversation ``peer``'s disappearing-message timer is now ``seconds``."""

    peer: bytes
    seconds: int


@dataclass(frozen=True, slots=True)
class DeletedForEveryone:
    """``author`` deleted its message ``target`` in the conversation ``peer``."""

    target: bytes
    peer: bytes
    author: bytes


@dataclass(frozen=True, slots=True)
class OwnDeviceLinked:
    """Another device of this account says it linked ``device_id`` under ``name``."""

    device_id: int
    name: str


@dataclass(frozen=True, slots=True)
class OwnDeviceRemoved:
    """Another device of this account says it removed ``device_id``."""

    device_id: int


@dataclass(frozen=True, slots=True)
class DeviceRevoked:
    """A contact's signed revocation of one of its devices (``revocation``: the notice)."""

    account_id: bytes
    device_id: int
    revocation: bytes


Change = TimerSet | DeletedForEveryone | OwnDeviceLinked | OwnDeviceRemoved | DeviceRevoked


@dataclass(slots=True)
class Incoming:
    """A message to store: incoming, or outgoing from a transcript of another device."""

    message_id: bytes
    peer: bytes  # account id or group id
    author: bytes  # account id
    outgoing: bool
    text: str
    sent_at: int
    expires_in: int  # seconds; 0: never
    attachment: bytes | None
    event: MessageReceived | None
