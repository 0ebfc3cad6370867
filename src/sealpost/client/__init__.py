"""The sealpost client: an async library over a passcode-encrypted local store.

See :mod:`sealpost.client.client` for the guarantees and a bot example; the ``sealpost``
command line (:mod:`sealpost.cli`) is built on this library.
"""

from sealpost.client.client import Client
from sealpost.client.errors import (
    ClientError,
    GroupChangeRefused,
    GroupOutOfDate,
    LinkRefused,
    MessageTooLarge,
    NotRegistered,
    ServerError,
    ServerUnavailable,
    TransparencyFailure,
    TransportError,
    UnknownContact,
    UnknownGroup,
    UntrustedContact,
)
from sealpost.client.groupsync import GroupBehind
from sealpost.client.records import (
    AlarmRaised,
    AttachmentInfo,
    Contact,
    DeviceLinked,
    DeviceRemoved,
    Event,
    GroupChanged,
    GroupView,
    KeyChanged,
    Message,
    MessageDeleted,
    MessageReceived,
    ReceiptReceived,
    SendFailed,
    TimerChanged,
)
from sealpost.client.services.conversations import ConversationSummary
from sealpost.client.services.search import SearchHit
from sealpost.client.store import KdfParams, ProfileBusy, StoreError, WrongPasscode
from sealpost.client.store.alarms import Alarm

__all__ = [
    "Alarm",
    "AlarmRaised",
    "AttachmentInfo",
    "Client",
    "ClientError",
    "Contact",
    "ConversationSummary",
    "DeviceLinked",
    "DeviceRemoved",
    "Event",
    "GroupBehind",
    "GroupChangeRefused",
    "GroupChanged",
    "GroupOutOfDate",
    "GroupView",
    "KdfParams",
    "KeyChanged",
    "LinkRefused",
    "Message",
    "MessageDeleted",
    "MessageReceived",
    "MessageTooLarge",
    "NotRegistered",
    "ProfileBusy",
    "ReceiptReceived",
    "SearchHit",
    "SendFailed",
    "ServerError",
    "ServerUnavailable",
    "StoreError",
    "TimerChanged",
    "TransparencyFailure",
    "TransportError",
    "UnknownContact",
    "UnknownGroup",
    "UntrustedContact",
    "WrongPasscode",
]
