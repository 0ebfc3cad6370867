"""The sealpost client: an async library over a passcode-encrypted local store.

See :mod:`sealpost.client.client` for the guarantees and a bot example; the ``sealpost``
command line (:mod:`sealpost.cli`) is built on this library.
"""

from sealpost.client.client import (
    Client,
    Contact,
    Event,
    KeyChanged,
    Message,
    MessageReceived,
    ReceiptReceived,
)
from sealpost.client.errors import (
    ClientError,
    NotRegistered,
    ServerError,
    ServerUnavailable,
    TransportError,
    UnknownContact,
    UntrustedContact,
)
from sealpost.client.store import KdfParams, StoreError, WrongPasscode

__all__ = [
    "Client",
    "ClientError",
    "Contact",
    "Event",
    "KdfParams",
    "KeyChanged",
    "Message",
    "MessageReceived",
    "NotRegistered",
    "ReceiptReceived",
    "ServerError",
    "ServerUnavailable",
    "StoreError",
    "TransportError",
    "UnknownContact",
    "UntrustedContact",
    "WrongPasscode",
]
