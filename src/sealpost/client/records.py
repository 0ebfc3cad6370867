"""The client's public records and events: what :class:`~sealpost.client.Client` returns
and what :meth:`~sealpost.client.Client.events` yields. Plain frozen data, no behaviour
beyond their JSON form (the CLI's ``--json`` output)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sealpost.client.groupsync import GroupBehind
from sealpost.client.store.alarms import Alarm

__all__ = [
    "AlarmRaised",
    "AttachmentInfo",
    "Contact",
    "DeviceLinked",
    "DeviceRemoved",
    "Event",
    "GroupChanged",
    "GroupView",
    "KeyChanged",
    "Message",
    "MessageDeleted",
    "MessageReceived",
    "ReceiptReceived",
    "SendFailed",
    "TimerChanged",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the history. ``id`` is the sender-chosen random id (hex in JSON).

    ``peer`` is the conversation: a contact's username, or a group's name when ``group``
    (its id) is set; ``author`` is who wrote it (this account's username when outgoing).
    """

    id: bytes
    peer: str
    outgoing: bool
    text: str
    sent_at: int  # ms, the sender's clock
    received_at: int  # ms, this device's clock
    status: str  # outgoing: "sending", "sent", "delivered"; incoming: "received"
    group: bytes | None = None
    author: str = ""
    attachment: AttachmentInfo | None = None
    expires_at: int | None = None  # ms; None: kept until deleted
    #: A placeholder (:meth:`Client.page` only): "deleted" (for everyone) or "expired";
    #: its text and file are gone.
    gone: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "from": self.author if not self.outgoing or self.group else None,
            "to": self.peer if self.outgoing else None,
            "peer": self.peer,
            "group": None if self.group is None else self.group.hex(),
            "author": self.author,
            "outgoing": self.outgoing,
            "text": self.text,
            "sent_at": self.sent_at,
            "received_at": self.received_at,
            "status": self.status,
            "attachment": None if self.attachment is None else self.attachment.to_json(),
            "expires_at": self.expires_at,
        }

    def __repr__(self) -> str:
        return f"Message(id={self.id.hex()}, peer={self.peer!r}, outgoing={self.outgoing})"


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """What a message says about its file (the key stays in the store)."""

    filename: str
    size: int
    content_type: str
    saved_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "size": self.size,
            "content_type": self.content_type,
            "saved_to": self.saved_to,
        }


@dataclass(frozen=True, slots=True)
class Contact:
    account_id: bytes
    username: str
    account_key: bytes
    verified: bool
    key_changed: bool
    devices: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "account_id": self.account_id.hex(),
            "verified": self.verified,
            "key_changed": self.key_changed,
            "devices": list(self.devices),
        }


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message: Message


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    peer: str
    message_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class KeyChanged:
    """``peer``'s account key is not the one pinned: a new phone, or an attack. When the
    contact was verified, nothing is sent to it until :meth:`Client.verify`."""

    peer: str
    verified: bool


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group as this account sees it (from its signed state)."""

    group_id: bytes
    name: str
    version: int
    members: tuple[str, ...]
    admins: tuple[str, ...]
    member: bool  # whether this account is still in it
    timer: int  # disappearing-message timer, seconds (0: off)

    def to_json(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id.hex(),
            "name": self.name,
            "version": self.version,
            "members": list(self.members),
            "admins": list(self.admins),
            "member": self.member,
            "timer": self.timer,
        }


@dataclass(frozen=True, slots=True)
class DeviceLinked:
    """A device was added to this account: the new device's announcement, received once
    by each other device of the account (the one that accepted the link too)."""

    device_id: int
    name: str


@dataclass(frozen=True, slots=True)
class DeviceRemoved:
    device_id: int
    name: str


@dataclass(frozen=True, slots=True)
class GroupChanged:
    """A group's state changed: created, renamed, members added or removed, admins
    changed, left. One event per version a device checks (a device catching up over
    missed versions gets one for each); a group first seen gets one for what it is."""

    group: bytes
    name: str
    by: str  # who signed the change
    added: tuple[str, ...]
    removed: tuple[str, ...]
    member: bool  # whether this account is (still) a member
    renamed_from: str | None = None  # the name before, when this version renamed it
    admins_added: tuple[str, ...] = ()
    admins_removed: tuple[str, ...] = ()
    version: int = 0


@dataclass(frozen=True, slots=True)
class TimerChanged:
    peer: str
    group: bytes | None
    seconds: int
    by: str


@dataclass(frozen=True, slots=True)
class MessageDeleted:
    peer: str
    message_id: bytes
    by: str


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A message written while the server could not be reached was not sent after all,
    for ``reason``: refused for good when it was encrypted (the contact is unknown, or a
    verified contact's key changed) or by the server (an account removed meanwhile). It
    is stored ``FAILED``."""

    peer: str  # the conversation: a contact's username or a group's name
    group: bytes | None
    message_id: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class AlarmRaised:
    """A key-transparency check failed: the server misbehaved (``sealpost alarms``)."""

    alarm: Alarm


Event = (
    MessageReceived
    | ReceiptReceived
    | KeyChanged
    | DeviceLinked
    | DeviceRemoved
    | GroupChanged
    | TimerChanged
    | MessageDeleted
    | AlarmRaised
    | SendFailed
    | GroupBehind
)
