"""The protocol core's errors (see :mod:`sealpost._errors` for the tree).

They are defined outside this package so that :mod:`sealpost.crypto` can raise them without
an import cycle; this module is their public home.
"""

from sealpost._errors import (
    BadSignature,
    DecodeError,
    DuplicateMessage,
    InvalidKey,
    InvalidMessage,
    LocalProtocolError,
    NotPostQuantum,
    ProtocolError,
    RemoteProtocolError,
    SessionNotReady,
    TooManySkipped,
    UnknownPreKey,
    UnsupportedVersion,
    UntrustedIdentity,
)

__all__ = [
    "BadSignature",
    "DecodeError",
    "DuplicateMessage",
    "InvalidKey",
    "InvalidMessage",
    "LocalProtocolError",
    "NotPostQuantum",
    "ProtocolError",
    "RemoteProtocolError",
    "SessionNotReady",
    "TooManySkipped",
    "UnknownPreKey",
    "UnsupportedVersion",
    "UntrustedIdentity",
]
