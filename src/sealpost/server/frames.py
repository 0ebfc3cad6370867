"""The WebSocket frames of ``/v1/stream``, ``/v1/sealed`` and ``/v1/link``, declared once.

JSON text frames, told apart by ``type``. The client's frames are decoded strictly by
these declarations (as the HTTP bodies in :mod:`.schema`: unknown fields refused); the
server's frames are declared so that ``/openapi.json`` describes them, and the two hot ones
(``message``, ``sent``) are formatted by hand in :mod:`.stream` — a test pins that the
hand-made text decodes as its declaration. The sequence of frames on each socket is
described in :mod:`.stream`, :mod:`.handlers.link` and docs/PROTOCOL.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from sealpost.server.schema import (
    U32,
    AccountIdHex,
    MultiSendRequest,
    SendRequest,
    Tokens,
)

__all__ = [
    "ACKS_FEATURE",
    "MAX_ACKS",
    "SEALED_CLIENT_FRAMES",
    "STREAM_CLIENT_FRAMES",
    "WEBSOCKETS",
    "AckFrame",
    "AcksFrame",
    "AuthFrame",
    "ChallengeFrame",
    "ChannelFrame",
    "EmptyFrame",
    "ErrorFrame",
    "LinkOpenFrame",
    "MessageFrame",
    "NumberedFrame",
    "PrekeysLowFrame",
    "ProvisionFrame",
    "ReadyFrame",
    "SendFrame",
    "SendMultiFrame",
    "SentFrame",
]

#: Request numbers survive a JSON round trip through any language (2**53 - 1).
Req = Annotated[int, Meta(ge=0, le=2**53 - 1, description="echoed in the answer")]
MessageIdHex = Annotated[
    str,
    Meta(min_length=32, max_length=32, pattern="^[0-9a-fA-F]{32}$", description="16 bytes, hex"),
]
KEM_PUBLIC_LEN = 1184


class _Frame(Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    pass


# -- client to server --------------------------------------------------------------------


class AuthFrame(_Frame, tag="auth", kw_only=True):
    """``/v1/stream``: the answer to the challenge, signed by the device signing key."""

    account: AccountIdHex
    device: U32
    signature: bytes


class SendFrame(SendRequest, tag_field="type", tag="send", kw_only=True):
    """A send, as ``PUT /v1/messages``; on ``/v1/sealed`` with its delivery tokens."""

    req: Req
    tokens: Tokens | None = None


class SendMultiFrame(MultiSendRequest, tag_field="type", tag="send_multi", kw_only=True):
    """``/v1/sealed``: a multi-recipient send, as ``PUT /v1/messages/multi``."""

    req: Req


class AckFrame(_Frame, tag="ack", kw_only=True):
    """``/v1/stream``: delete this message from this device's queue."""

    id: MessageIdHex


#: Ids one ``acks`` frame may carry: a client acks what it was pushed, at most
#: ``PUSH_BATCH`` (100) a push, and a bound keeps one frame's work bounded.
MAX_ACKS = 256
#: The ``features`` entry of the challenge that offers the ``acks`` frame.
ACKS_FEATURE = "acks"


class AcksFrame(_Frame, tag="acks", kw_only=True):
    """``/v1/stream``: delete these messages from this device's queue (what ``ack`` does
    for each, in one frame), offered by the challenge's ``features``."""

    ids: Annotated[list[MessageIdHex], Meta(min_length=1, max_length=MAX_ACKS)]


class LinkOpenFrame(_Frame, tag="open", kw_only=True):
    """``/v1/link``: the new device's ML-KEM-768 public key."""

    kem: Annotated[bytes, Meta(min_length=KEM_PUBLIC_LEN, max_length=KEM_PUBLIC_LEN)]


class NumberedFrame(Struct):
    """Any frame's ``type`` and ``req``, read to answer a send that did not decode."""

    type: str
    req: Req


STREAM_CLIENT_FRAMES = SendFrame | AckFrame | AcksFrame
SEALED_CLIENT_FRAMES = SendFrame | SendMultiFrame


# -- server to client --------------------------------------------------------------------


class ChallengeFrame(_Frame, tag="challenge", kw_only=True):
    challenge: Annotated[bytes, Meta(min_length=32, max_length=32)]
    #: What this server takes beyond the first version of the stream (a client ignores
    #: what it does not know): ``"acks"``, the :class:`AcksFrame`.
    features: list[str] = []


class ReadyFrame(_Frame, tag="ready", kw_only=True):
    pass


class MessageFrame(_Frame, tag="message", kw_only=True):
    """A queued message, pushed in queue order; acknowledged with an ``ack``."""

    id: MessageIdHex
    body: bytes
    received_at: int


class EmptyFrame(_Frame, tag="empty", kw_only=True):
    """Everything queued so far was pushed (again after each later burst)."""


class PrekeysLowFrame(_Frame, tag="prekeys_low", kw_only=True):
    """A bundle fetch left a one-time prekey stock under ``prekey_refill_below``: upload
    more now (``PUT /v1/keys``)."""


class SentFrame(_Frame, tag="sent", kw_only=True):
    """A send was durably stored."""

    req: Req
    stored: int


class ErrorFrame(Struct, tag_field="type", tag="error", kw_only=True):
    """A send was refused: the HTTP error's code and message (and its extra fields, such
    as ``accounts`` of ``mismatched_devices`` or ``retry_after`` of ``rate_limited``)."""

    req: Req
    error: str
    message: str


class ChannelFrame(_Frame, tag="channel", kw_only=True):
    """``/v1/link``: the channel id to put in the link code."""

    id: Annotated[str, Meta(min_length=32, max_length=32, pattern="^[0-9a-f]{32}$")]


class ProvisionFrame(_Frame, tag="provision", kw_only=True):
    """``/v1/link``: the provisioning message; the socket then closes (1000)."""

    body: bytes


#: What ``/openapi.json`` says of each WebSocket: frames each way and close codes.
WEBSOCKETS: dict[str, dict[str, Any]] = {
    "/v1/stream": {
        "summary": "A device's own socket: challenge, auth, then pushes, acks and sends",
        "client": [AuthFrame, SendFrame, AckFrame, AcksFrame],
        "server": [
            ChallengeFrame,
            ReadyFrame,
            MessageFrame,
            EmptyFrame,
            SentFrame,
            ErrorFrame,
            PrekeysLowFrame,
        ],
        "close": {
            "4400": "malformed frame",
            "4401": "authentication failed",
            "4403": "this device was removed from its account",
            "4408": "no answer to the challenge in time",
            "4409": "replaced by a newer connection of the same device",
            "4429": "rate limited",
            "1009": "frame over max_frame",
        },
    },
    "/v1/sealed": {
        "summary": "Anonymous sends (sealed sender), with delivery tokens",
        "client": [SendFrame, SendMultiFrame],
        "server": [SentFrame, ErrorFrame],
        "close": {"4400": "malformed frame", "4429": "rate limited", "1009": "frame too big"},
    },
    "/v1/link": {
        "summary": "A new device's end of a device-link channel",
        "client": [LinkOpenFrame],
        "server": [ChannelFrame, ProvisionFrame],
        "close": {
            "1000": "the provisioning message was delivered",
            "4400": "expected an open frame",
            "4408": "the link expired",
            "4429": "rate limited, or too many link channels",
            "1013": "the database is unavailable (several relay processes): retry",
        },
    },
}
