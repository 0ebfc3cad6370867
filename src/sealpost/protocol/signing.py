"""Request signing, shared by the client and the server: devices authenticate without passwords.

A device proves possession of its device signing key (DSK, Ed25519) on each HTTP request.
The server stores only the public key (inside the AIK-signed device certificate), so it
holds nothing that would let it, or a thief of its database, act as the device. This module
is the format only: pure (no I/O; time and randomness are parameters), imported by the
client's transport to sign and by the server (``sealpost.server.authn``) to check, so
neither side imports the other.

Request signature
    headers ``X-Sealpost-Account`` (account id, 32 hex digits), ``X-Sealpost-Device``
    (decimal device id), ``X-Sealpost-Timestamp`` (decimal seconds since the epoch),
    ``X-Sealpost-Nonce`` (16 random bytes, 32 hex digits) and ``X-Sealpost-Signature``
    (base64 Ed25519 signature by the DSK) over::

        b"sealpost/v1/request\\x00" + METHOD + b"\\n" + PATH_WITH_QUERY + b"\\n"
        + TIMESTAMP + b"\\n" + NONCE + b"\\n" + SHA-256(body)

    where METHOD, PATH_WITH_QUERY (the raw request target, percent-encoding as sent),
    TIMESTAMP and NONCE are the ASCII strings sent, and SHA-256(body) is the raw 32-byte
    digest. The account and device ids are not signed: they only select the key that must
    verify, so changing them makes the signature fail.

    The server accepts a timestamp within ``auth_window`` (default 300 s) of its clock and
    each nonce once: nonces are stored until their window has passed, so a replay inside
    the window is refused (``replayed``) and one outside it is stale (``clock_skew``).

Streamed uploads (``POST /v1/attachments?signature=trailer``)
    the headers are signed as for an empty body; the body is the blob followed by a
    64-byte signature by the same key over ``b"sealpost/v1/attachment-trailer\\x00" +
    request_message_for_digest(POST, target, TIMESTAMP, NONCE, SHA-256(blob))``
    (:func:`trailer_message`). The context string keeps a trailer from ever verifying as a
    header signature or back. A one-shot upload instead declares SHA-256(body) in
    ``X-Sealpost-Content-SHA256`` (:data:`DIGEST_HEADER`).

WebSocket
    The server sends ``{"type": "challenge", "challenge": b64(32 random bytes)}``; the
    client answers ``{"type": "auth", "account": HEX, "device": INT, "signature": B64}``
    with an Ed25519 signature over ``b"sealpost/v1/websocket\\x00" + challenge``.

Example::

    headers = sign_request(dsk, account_id, 1, "GET", "/v1/keys/status", b"",
                           now=int(time.time()), nonce=os.urandom(16))
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sealpost._errors import DecodeError
from sealpost.crypto.sign import SigningKey

__all__ = [
    "ACCOUNT_HEADER",
    "DEVICE_HEADER",
    "DIGEST_HEADER",
    "NONCE_HEADER",
    "NONCE_LEN",
    "REQUEST_CONTEXT",
    "SIGNATURE_HEADER",
    "SIGNATURE_LEN",
    "TIMESTAMP_HEADER",
    "TRAILER_CONTEXT",
    "TRAILER_QUERY",
    "WEBSOCKET_CONTEXT",
    "AuthHeaders",
    "MalformedAuth",
    "parse_auth_headers",
    "request_message",
    "request_message_for_digest",
    "sign_request",
    "sign_websocket_challenge",
    "trailer_message",
    "websocket_message",
]

REQUEST_CONTEXT: Final = b"sealpost/v1/request\x00"
WEBSOCKET_CONTEXT: Final = b"sealpost/v1/websocket\x00"
TRAILER_CONTEXT: Final = b"sealpost/v1/attachment-trailer\x00"
NONCE_LEN: Final = 16
ACCOUNT_ID_LEN: Final = 16
SIGNATURE_LEN: Final = 64  # an Ed25519 signature (the trailer of a streamed upload)

ACCOUNT_HEADER: Final = "X-Sealpost-Account"
DEVICE_HEADER: Final = "X-Sealpost-Device"
TIMESTAMP_HEADER: Final = "X-Sealpost-Timestamp"
NONCE_HEADER: Final = "X-Sealpost-Nonce"
SIGNATURE_HEADER: Final = "X-Sealpost-Signature"
DIGEST_HEADER: Final = "X-Sealpost-Content-SHA256"
TRAILER_QUERY: Final = "signature=trailer"
_ALL = (ACCOUNT_HEADER, DEVICE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)


class MalformedAuth(DecodeError):
    """Authentication headers are present but malformed."""


@dataclass(frozen=True, slots=True)
class AuthHeaders:
    account_id: bytes
    device_id: int
    timestamp: int
    nonce: bytes
    signature: bytes
    timestamp_text: str
    nonce_text: str


def request_message(
    method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes
) -> bytes:
    """The bytes a request signature covers (see the module docstring)."""
    return request_message_for_digest(
        method, path_with_query, timestamp, nonce, hashlib.sha256(body).digest()
    )


def request_message_for_digest(
    method: str, path_with_query: str, timestamp: str, nonce: str, body_sha256: bytes
) -> bytes:
    """:func:`request_message` for a body already hashed (streamed uploads)."""
    return b"".join(
        (
            REQUEST_CONTEXT,
            method.upper().encode("ascii"),
            b"\n",
            path_with_query.encode("latin-1"),
            b"\n",
            timestamp.encode("ascii"),
            b"\n",
            nonce.encode("ascii"),
            b"\n",
            body_sha256,
        )
    )


def trailer_message(
    method: str, path_with_query: str, timestamp: str, nonce: str, blob_sha256: bytes
) -> bytes:
    """What the trailing signature of a ``?signature=trailer`` upload covers."""
    return TRAILER_CONTEXT + request_message_for_digest(
        method, path_with_query, timestamp, nonce, blob_sha256
    )


def sign_request(
    signing_key: SigningKey,
    account_id: bytes,
    device_id: int,
    method: str,
    path: str,
    body: bytes,
    now: int,
    nonce: bytes,
) -> dict[str, str]:
    """Return the five authentication headers for one request. ``path`` includes the query
    string exactly as it will be sent."""
    if len(account_id) != ACCOUNT_ID_LEN or len(nonce) != NONCE_LEN:
        raise ValueError("account id and nonce must be 16 bytes")
    timestamp = str(int(now))
    nonce_text = nonce.hex()
    sig = signing_key.sign(request_message(method, path, timestamp, nonce_text, body))
    return {
        ACCOUNT_HEADER: account_id.hex(),
        DEVICE_HEADER: str(device_id),
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce_text,
        SIGNATURE_HEADER: base64.b64encode(sig).decode("ascii"),
    }


def websocket_message(challenge: bytes) -> bytes:
    return WEBSOCKET_CONTEXT + challenge


def sign_websocket_challenge(
    signing_key: SigningKey, account_id: bytes, device_id: int, challenge: bytes
) -> dict[str, object]:
    """The client's answer to the server's WebSocket challenge, as a JSON-ready dict."""
    return {
        "type": "auth",
        "account": account_id.hex(),
        "device": device_id,
        "signature": base64.b64encode(signing_key.sign(websocket_message(challenge))).decode(),
    }


def _decimal(text: str, what: str, limit: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > len(str(limit)):
        raise MalformedAuth(f"{what} must be a decimal integer")
    value = int(text)
    if value > limit:
        raise MalformedAuth(f"{what} is out of range")
    return value


def parse_auth_headers(headers: Mapping[str, str]) -> AuthHeaders | None:
    """``None`` when the request carries no authentication at all; :class:`MalformedAuth`
    when it carries some of it, or carries it badly."""
    present = [h for h in _ALL if h in headers]
    if not present:
        return None
    if len(present) != len(_ALL):
        raise MalformedAuth("incomplete authentication headers")
    try:
        account_id = bytes.fromhex(headers[ACCOUNT_HEADER])
        nonce = bytes.fromhex(headers[NONCE_HEADER])
        signature = base64.b64decode(headers[SIGNATURE_HEADER], validate=True)
    except (ValueError, binascii.Error):
        raise MalformedAuth("badly encoded authentication header") from None
    if len(account_id) != ACCOUNT_ID_LEN or len(nonce) != NONCE_LEN:
        raise MalformedAuth("account id and nonce must be 16 bytes")
    timestamp_text = headers[TIMESTAMP_HEADER]
    nonce_text = headers[NONCE_HEADER]
    return AuthHeaders(
        account_id=account_id,
        device_id=_decimal(headers[DEVICE_HEADER], "device id", 0xFFFFFFFF),
        timestamp=_decimal(timestamp_text, "timestamp", 2**63 - 1),
        nonce=nonce,
        signature=signature,
        timestamp_text=timestamp_text,
        nonce_text=nonce_text,
    )
