"""The HTTP route table: every endpoint once, with what it takes and answers.

:func:`~sealpost.server.app.create_app` builds its routes from :data:`OPERATIONS` (each
names its handler), and :mod:`.openapi` builds ``/openapi.json`` from the same table and
the body declarations of :mod:`.schema`, so a route cannot be served undocumented, and a
documented body is the one that is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from msgspec import Meta

from sealpost.server.schema import (
    AccountIdHex,
    AccountLookup,
    AddDeviceRequest,
    AttachmentStored,
    Bundle,
    Delivered,
    Health,
    KemKey,
    LogEntries,
    LogHead,
    MismatchedDevicesError,
    MultiSendRequest,
    Proof,
    ProvisionRequest,
    PublicKey,
    Queued,
    Registered,
    RegisterRequest,
    Removed,
    RemoveDeviceRequest,
    SenderCertificateOut,
    SendRequest,
    Stock,
    Stored,
    UploadPreKeys,
    Username,
)

__all__ = ["OPERATIONS", "Operation", "Param"]

Auth = Literal["none", "required", "optional"]
#: A body that is not JSON: raw bytes in, a file or a text page out.
OCTETS: Final = "application/octet-stream"
TEXT: Final = "text/plain"


def _hex(nbytes: int) -> Any:
    digits = 2 * nbytes
    return Annotated[
        str,
        Meta(
            min_length=digits,
            max_length=digits,
            pattern=f"^[0-9a-fA-F]{{{digits}}}$",
            description=f"{nbytes} bytes, hex",
        ),
    ]


DeviceIdText = Annotated[
    str, Meta(pattern="^[0-9]{1,10}$", description="decimal, at most 4294967295")
]
Size = Annotated[int, Meta(ge=0, le=2**63 - 1)]
PositiveSize = Annotated[int, Meta(ge=1, le=2**63 - 1)]


@dataclass(frozen=True, slots=True)
class Param:
    """A path, query or header parameter; ``kind`` is a type msgspec can describe."""

    name: str
    where: Literal["path", "query", "header"]
    kind: Any
    description: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class Operation:
    """One HTTP endpoint. ``handler`` names the method :func:`create_app` binds;
    ``errors`` are the statuses it can answer besides those every route has (429, 500
    and 503) and every route with a body (408)."""

    method: str
    path: str
    handler: str
    summary: str
    response: Any  # a schema Struct, None (no body), OCTETS or TEXT
    status: int = 200
    body: Any = None  # a schema Struct, OCTETS or None
    errors: tuple[int, ...] = ()
    auth: Auth = "none"
    params: tuple[Param, ...] = ()
    #: A status whose body is not :class:`~.schema.ErrorBody` (or not only).
    other_bodies: tuple[tuple[int, Any], ...] = ()


def _path(name: str, kind: Any, description: str) -> Param:
    return Param(name, "path", kind, description)


_ACCOUNT = _path("account_id", AccountIdHex, "the account id")
_DEVICE = _path("device_id", DeviceIdText, "the device id")
_TOKEN = Param(
    "X-Sealpost-Delivery-Token",
    "header",
    str,
    "sealed sends: per destination account '<account id hex>:<base64 32 bytes>', comma "
    "separated; an account without a token must accept sealed messages from anyone",
    required=False,
)
_TRAILER = Param(
    "signature",
    "query",
    Literal["trailer"],
    "the headers are signed as for an empty body and checked before the body is stored; "
    "the body ends with a 64-byte Ed25519 signature over the blob (see "
    "sealpost.server.handlers.attachments)",
    required=False,
)

_DIGEST = Param(
    "X-Sealpost-Content-SHA256",
    "header",
    _hex(32),
    "without ?signature=trailer: SHA-256 of the body, which the header signature covers "
    "(checked before the body is stored; a body that does not match is refused)",
    required=False,
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/healthz",
        "healthz",
        "Liveness: the database and the fan-out answer (503 without the database)",
        Health,
        other_bodies=((503, Health),),
    ),
    Operation("GET", "/metrics", "metrics", "Prometheus metrics (counts and latencies)", TEXT),
    Operation("GET", "/openapi.json", "openapi", "This document", dict[str, Any]),
    Operation(
        "POST",
        "/v1/accounts",
        "accounts.register",
        "Register an account with its first device (signed by that device)",
        Registered,
        status=201,
        body=RegisterRequest,
        errors=(400, 401, 409, 413, 507),
        auth="required",
    ),
    Operation(
        "GET",
        "/v1/accounts/{username}",
        "accounts.lookup",
        "An account's devices, from its newest key-transparency entry, with the proof",
        AccountLookup,
        errors=(404,),
        params=(_path("username", Username, "case-insensitive"),),
    ),
    Operation(
        "POST",
        "/v1/devices",
        "accounts.add_device",
        "Add a device certified by the registered account key (signed by the new device)",
        Registered,
        status=201,
        body=AddDeviceRequest,
        errors=(400, 401, 404, 409, 413, 507),
        auth="required",
    ),
    Operation(
        "DELETE",
        "/v1/devices/{device_id}",
        "accounts.remove_device",
        "Remove a device with the account key's signed revocation; its prekeys and queue "
        "go, its id is never reused, its open stream is closed (4403)",
        Removed,
        body=RemoveDeviceRequest,
        errors=(400, 401, 404, 409, 413),
        auth="required",
        params=(_DEVICE,),
    ),
    Operation(
        "GET",
        "/v1/link/{channel_id}",
        "link.key",
        "The ML-KEM public key a new device opened a link channel with",
        KemKey,
        errors=(400, 401, 404),
        auth="required",
        params=(_path("channel_id", _hex(16), "the link channel"),),
    ),
    Operation(
        "PUT",
        "/v1/link/{channel_id}",
        "link.provision",
        "Forward a provisioning message to the new device waiting on the channel",
        Delivered,
        body=ProvisionRequest,
        errors=(400, 401, 404, 409, 410, 413),
        auth="required",
        params=(_path("channel_id", _hex(16), "the link channel"),),
    ),
    Operation(
        "PUT",
        "/v1/messages/multi",
        "messages.send_multi",
        "A multi-recipient sealed send (tokens in the body); answered after durable commit",
        Stored,
        body=MultiSendRequest,
        errors=(400, 403, 404, 409, 413, 507),
        other_bodies=((409, MismatchedDevicesError),),
    ),
    Operation(
        "PUT",
        "/v1/keys",
        "keys.upload",
        "Upload prekeys (each verified under the device signing key)",
        Stock,
        body=UploadPreKeys,
        errors=(400, 401, 409, 413, 507),
        auth="required",
    ),
    Operation(
        "GET",
        "/v1/keys/status",
        "keys.status",
        "This device's prekey stock and whether to refill",
        Stock,
        errors=(401,),
        auth="required",
    ),
    Operation(
        "GET",
        "/v1/keys/{account_id}/{device_id}",
        "keys.bundle",
        "Fetch a prekey bundle; consumes one one-time prekey of each kind",
        Bundle,
        errors=(400, 401, 404),
        auth="optional",
        params=(_ACCOUNT, _DEVICE),
    ),
    Operation(
        "PUT",
        "/v1/messages",
        "messages.send",
        "Send envelopes, one per destination device: sealed (unsigned, with delivery "
        "tokens) or signed (to the sender's own devices); answered after durable commit",
        Stored,
        body=SendRequest,
        errors=(400, 401, 403, 404, 409, 413, 507),
        auth="optional",
        params=(_TOKEN,),
        other_bodies=((409, MismatchedDevicesError),),
    ),
    Operation(
        "GET",
        "/v1/messages",
        "messages.fetch",
        "This device's queued messages, oldest first",
        Queued,
        errors=(401,),
        auth="required",
    ),
    Operation(
        "DELETE",
        "/v1/messages/{message_id}",
        "messages.ack",
        "Acknowledge (delete) a message from this device's queue",
        None,
        status=204,
        errors=(400, 401, 404),
        auth="required",
        params=(_path("message_id", _hex(16), "the message id"),),
    ),
    Operation(
        "GET",
        "/v1/certificate/sender",
        "certificates.sender",
        "A short-lived sender certificate for sealed sender",
        SenderCertificateOut,
        errors=(401,),
        auth="required",
    ),
    Operation(
        "GET",
        "/v1/certificate/server",
        "certificates.server",
        "The server's Ed25519 public key",
        PublicKey,
    ),
    Operation(
        "POST",
        "/v1/attachments",
        "attachments.upload",
        "Upload an encrypted attachment, streamed, signed over its SHA-256 (in the headers, "
        "or with ?signature=trailer after the blob)",
        AttachmentStored,
        status=201,
        body=OCTETS,
        errors=(400, 401, 413, 503, 507),
        auth="required",
        params=(_TRAILER, _DIGEST),
    ),
    Operation(
        "GET",
        "/v1/attachments/{attachment_id}",
        "attachments.download",
        "Download an attachment by its random id (the id is the capability)",
        OCTETS,
        errors=(400, 404),
        params=(_path("attachment_id", _hex(32), "the attachment id"),),
    ),
    Operation("GET", "/v1/log/key", "log.key", "The log's Ed25519 public key", PublicKey),
    Operation("GET", "/v1/log/head", "log.head", "The newest signed tree head", LogHead),
    Operation(
        "GET",
        "/v1/log/consistency",
        "log.consistency",
        "RFC 9162 consistency proof between two tree sizes",
        Proof,
        errors=(400,),
        params=(
            Param("from", "query", PositiveSize, "the smaller tree size"),
            Param("to", "query", PositiveSize, "the larger tree size"),
        ),
    ),
    Operation(
        "GET",
        "/v1/log/inclusion",
        "log.inclusion",
        "RFC 9162 inclusion proof of an entry at a tree size",
        Proof,
        errors=(400,),
        params=(
            Param("index", "query", Size, "the leaf index"),
            Param("size", "query", PositiveSize, "the tree size"),
        ),
    ),
    Operation(
        "GET",
        "/v1/log/accounts/{account_id}",
        "log.account",
        "An account's log entries, what each commits to, and inclusion proofs",
        LogEntries,
        errors=(400,),
        params=(
            _ACCOUNT,
            Param("after", "query", Size, "only entries with a larger index", required=False),
        ),
    ),
)
