"""Every HTTP request and response body, declared once as a msgspec Struct.

The same declarations decode requests (:func:`decode`) and produce the OpenAPI document
(:mod:`.openapi`), so what is checked and what is documented cannot disagree. Decoding is
strict: no type coercion (``"1"`` is not an integer, ``true`` is not ``1``), binary fields
are standard base64 with padding (decoded by msgspec), hex ids are exactly their number of
digits, integers are bounded, and fixed-size wire structures have their exact length.

Unknown fields are refused (``invalid_request`` naming the field): a misspelt optional
field would otherwise be silently dropped — ``sealed_from_anyone`` spelt wrong would leave
an account open to sealed messages from anyone. A client that sends a field this server
does not know learns it at once. Limits that are server settings (envelopes per send,
prekeys per upload, recipients, sizes of bodies) are checked by the handlers (413), after
decoding; the body itself is bounded before it is decoded (:func:`.requests.read_body`).

Every failure is a 400 :class:`~sealpost.server.errors.ApiError`: ``malformed_json`` when
the body is not JSON (bad UTF-8, nesting too deep, trailing bytes), ``invalid_request``
naming the field by its path (``messages[0].device_id``) and what it must be, never its
value.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import Meta, Raw, Struct

from sealpost.protocol.wire import (
    DEVICE_CERTIFICATE_LEN,
    DEVICE_REVOCATION_LEN,
    KEM_PREKEY_LEN,
    ONE_TIME_PREKEY_LEN,
    SIGNED_PREKEY_LEN,
)
from sealpost.server.errors import ApiError, bad_request

__all__ = [
    "U32",
    "AbsenceProof",
    "AccountIdHex",
    "AccountLookup",
    "AccountNotFoundError",
    "AddDeviceRequest",
    "AttachmentStored",
    "Bundle",
    "Delivered",
    "DeviceOut",
    "Envelope",
    "ErrorBody",
    "Health",
    "KemKey",
    "LogEntries",
    "LogHead",
    "LoggedEntryOut",
    "Mismatch",
    "MismatchedDevicesError",
    "MultiSendRequest",
    "Proof",
    "ProvisionRequest",
    "PublicKey",
    "Queued",
    "QueuedMessage",
    "RegisterRequest",
    "Registered",
    "RemoveDeviceRequest",
    "Removed",
    "SendRequest",
    "SenderCertificateOut",
    "Stock",
    "Stored",
    "Tokens",
    "Transparency",
    "UploadPreKeys",
    "Username",
    "decode",
    "decode_as",
    "decoder",
    "encode",
    "invalid",
]

T = TypeVar("T")

# -- field types -------------------------------------------------------------------------

U32 = Annotated[int, Meta(ge=0, le=0xFFFFFFFF, description="unsigned 32-bit integer")]
#: 16 bytes as 32 hex digits (either case). The length bound also keeps the pattern's
#: ``$`` from accepting a trailing newline.
AccountIdHex = Annotated[
    str,
    Meta(min_length=32, max_length=32, pattern="^[0-9a-fA-F]{32}$", description="16 bytes, hex"),
]
Key32 = Annotated[bytes, Meta(min_length=32, max_length=32, description="32 bytes, base64")]
Username = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=32,
        pattern="^[A-Za-z0-9_.-]{3,32}$",
        description="3-32 of a-z 0-9 _ . - (unique case-insensitively)",
    ),
]


Certificate = Annotated[
    bytes,
    Meta(
        min_length=DEVICE_CERTIFICATE_LEN,
        max_length=DEVICE_CERTIFICATE_LEN,
        description="wire DeviceCertificate, base64",
    ),
]
Revocation = Annotated[
    bytes,
    Meta(
        min_length=DEVICE_REVOCATION_LEN,
        max_length=DEVICE_REVOCATION_LEN,
        description="wire DeviceRevocation, base64",
    ),
]
SignedPreKeyBytes = Annotated[
    bytes,
    Meta(
        min_length=SIGNED_PREKEY_LEN,
        max_length=SIGNED_PREKEY_LEN,
        description="wire SignedPreKey, base64",
    ),
]
KemPreKeyBytes = Annotated[
    bytes,
    Meta(
        min_length=KEM_PREKEY_LEN, max_length=KEM_PREKEY_LEN, description="wire KemPreKey, base64"
    ),
]
OneTimePreKeyBytes = Annotated[
    bytes,
    Meta(
        min_length=ONE_TIME_PREKEY_LEN,
        max_length=ONE_TIME_PREKEY_LEN,
        description="wire OneTimePreKey, base64",
    ),
]
#: Delivery tokens of a sealed send by account: ``{account id hex: base64 32 bytes}``.
Tokens = dict[AccountIdHex, Key32]
NonEmptyBytes = Annotated[bytes, Meta(min_length=1, description="base64")]
SendId = Annotated[
    bytes,
    Meta(
        min_length=16,
        max_length=16,
        description="16 bytes, base64: the sender's id, so a resend stores nothing twice",
    ),
]


class _Request(Struct, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: strict, unknown fields refused."""


class _Response(Struct, kw_only=True):
    """Response bodies: encoded by :func:`encode`."""


# -- requests ----------------------------------------------------------------------------


class UploadPreKeys(_Request, kw_only=True):
    """``PUT /v1/keys``: any of the four; each verifies under the device signing key."""

    signed_prekey: SignedPreKeyBytes | None = None
    kem_last_resort: KemPreKeyBytes | None = None
    one_time_prekeys: list[OneTimePreKeyBytes] = []
    kem_one_time_prekeys: list[KemPreKeyBytes] = []


class _InitialPreKeys(_Request, kw_only=True):
    signed_prekey: SignedPreKeyBytes
    kem_last_resort: KemPreKeyBytes
    one_time_prekeys: list[OneTimePreKeyBytes] = []
    kem_one_time_prekeys: list[KemPreKeyBytes] = []


class RegisterRequest(_InitialPreKeys, kw_only=True):
    """``POST /v1/accounts``, signed by the device the certificate names."""

    username: Username
    account_key: Key32
    certificate: Certificate
    delivery_token: Key32
    sealed_from_anyone: bool = True
    #: An invite code from the operator (``registration = "invite"``; ignored otherwise).
    invite: Annotated[str, Meta(max_length=64)] | None = None


class AddDeviceRequest(_InitialPreKeys, kw_only=True):
    """``POST /v1/devices``, signed by the new device; certified by the account key."""

    certificate: Certificate


class RemoveDeviceRequest(_Request, kw_only=True):
    """``DELETE /v1/devices/{device_id}``: the account key's revocation of that device."""

    revocation: Revocation


class ProvisionRequest(_Request, kw_only=True):
    """``PUT /v1/link/{channel_id}``: the provisioning message for the new device."""

    body: bytes


class Envelope(_Request, kw_only=True):
    account_id: AccountIdHex
    device_id: U32
    body: NonEmptyBytes
    send_id: SendId | None = None


class SendRequest(_Request, kw_only=True):
    """``PUT /v1/messages``: one envelope per destination device."""

    messages: Annotated[list[Envelope], Meta(min_length=1)]


GroupRecipients = Annotated[
    list[tuple[AccountIdHex, U32]],
    Meta(min_length=1, description="with body: [account id hex, device id]"),
]
WrappedRecipients = Annotated[
    list[tuple[AccountIdHex, U32, Annotated[bytes, Meta(min_length=48, max_length=48)]]],
    Meta(min_length=1, description="with shared: [account id hex, device id, 48-byte wrap]"),
]


class MultiSendRequest(_Request, kw_only=True):
    """``PUT /v1/messages/multi``: ``body`` (a group-sealed envelope) with
    ``[account, device]`` recipients, or the legacy ``shared`` with
    ``[account, device, wrap]``; ``recipients`` is decoded by the form (:meth:`recipients_of`)."""

    body: bytes | None = None
    shared: bytes | None = None
    recipients: Annotated[
        Raw,
        Meta(
            extra_json_schema={
                "oneOf": [
                    msgspec.json.schema(GroupRecipients),
                    msgspec.json.schema(WrappedRecipients),
                ]
            }
        ),
    ]
    tokens: Tokens | None = None
    send_id: SendId | None = None

    def group_recipients(self) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = decode_as(
            self.recipients, GroupRecipients, prefix="recipients"
        )
        return found

    def wrapped_recipients(self) -> list[tuple[str, int, bytes]]:
        found: list[tuple[str, int, bytes]] = decode_as(
            self.recipients, WrappedRecipients, prefix="recipients"
        )
        return found


# -- responses ---------------------------------------------------------------------------


class ErrorBody(_Response, kw_only=True):
    """Every error: a stable code and a sentence for people (never a value sent)."""

    error: str
    message: str


class DeviceOut(_Response, kw_only=True):
    device_id: int
    certificate: bytes


class Mismatch(_Response, kw_only=True):
    missing: list[int]
    extra: list[int]
    devices: list[DeviceOut]


class MismatchedDevicesError(ErrorBody, kw_only=True):
    """409 ``mismatched_devices``: per account id hex, what to fix before retrying."""

    accounts: dict[str, Mismatch]


class Health(_Response, kw_only=True):
    status: Literal["ok", "degraded"]  # degraded: the fan-out (Redis) does not answer
    database: bool = True
    fanout: bool = True


class Registered(_Response, kw_only=True):
    account_id: str
    device_id: int


class Removed(_Response, kw_only=True):
    removed: int


class Transparency(_Response, kw_only=True):
    """An account's newest log entry, its inclusion proof and its account-map proof (a
    MapProof, docs/PROTOCOL.md section 12), all against ``head``, the newest head."""

    head: bytes
    index: int
    entry: bytes
    proof: list[bytes]
    map_proof: bytes


class AbsenceProof(_Response, kw_only=True, omit_defaults=True):
    """The account map's proof that a name has no account, against ``head``; for a
    removed account's name, its DeletionEntry (``entry`` at ``index``, with its inclusion
    ``proof``), which ``map_proof`` shows as the name's value."""

    head: bytes
    map_proof: bytes
    index: int | None = None
    entry: bytes | None = None
    proof: list[bytes] | None = None


class AccountNotFoundError(ErrorBody, kw_only=True):
    """404 ``not_found`` of a lookup of a valid username: with the proof of absence."""

    transparency: AbsenceProof


class AccountLookup(_Response, kw_only=True):
    account_id: str
    username: str
    account_key: bytes
    devices: list[DeviceOut]
    revocations: list[bytes]
    transparency: Transparency


class Stock(_Response, kw_only=True):
    signed_prekey: bool
    kem_last_resort: bool
    one_time_prekeys: int
    kem_one_time_prekeys: int
    refill_below: int
    refill: bool


class Bundle(_Response, kw_only=True):
    bundle: bytes
    one_time_prekey: bool
    kem_prekey: Literal["one_time", "last_resort"] | None


class Stored(_Response, kw_only=True):
    stored: int


class QueuedMessage(_Response, kw_only=True):
    id: str
    body: bytes
    received_at: int


class Queued(_Response, kw_only=True):
    messages: list[QueuedMessage]
    more: bool


class SenderCertificateOut(_Response, kw_only=True):
    certificate: bytes
    expires: int


class PublicKey(_Response, kw_only=True):
    public_key: bytes


class KemKey(_Response, kw_only=True):
    kem: bytes


class Delivered(_Response, kw_only=True):
    delivered: bool


class AttachmentStored(_Response, kw_only=True):
    id: str
    size: int
    expires_at: int


class LogHead(_Response, kw_only=True):
    head: bytes
    tree_size: int


class Proof(_Response, kw_only=True):
    proof: list[bytes]


class LoggedEntryOut(_Response, kw_only=True):
    index: int
    entry: bytes
    certificates: list[bytes]
    revocations: list[bytes]
    proof: list[bytes]


class LogEntries(_Response, kw_only=True):
    head: bytes
    entries: list[LoggedEntryOut]
    more: bool
    #: the account's newest entry, proven newest by the account map at ``head`` (null for
    #: an account id with no account)
    latest: Transparency | None


# -- decoding and encoding ---------------------------------------------------------------

_AT = re.compile(r" - at (?P<key>`key` in )?`(?P<path>[^`]*)`$")
_FIELD = re.compile(r"Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]*)`")
_ENCODER: Final = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _field_path(path: str, prefix: str) -> str:
    """``$.messages[0].body`` -> ``messages[0].body`` (``prefix`` for a nested decode)."""
    rest = path[1:].lstrip(".") if path.startswith("$") else path
    if prefix:
        rest = f"{prefix}{rest}" if rest.startswith("[") or not rest else f"{prefix}.{rest}"
    return rest or "the body"


def invalid(exc: msgspec.ValidationError, prefix: str = "") -> ApiError:
    """The 400 for a validation failure: the field's path and what it must be. msgspec's
    sentence is kept only where it describes the type; one quoting a value is replaced."""
    text = str(exc)
    at = _AT.search(text)
    path, key_of = "$", ""
    if at is not None:
        path, key_of = at["path"], "a key of " if at["key"] else ""
        text = text[: at.start()]
    field = _FIELD.match(text)
    if path == "$" and text.startswith("Expected `object`"):
        return ApiError(400, "malformed_json", "the request body must be a JSON object")
    if field is not None:
        name = f"{_field_path(path, prefix)}.{field['name']}".removeprefix("the body.")
        verb = "is required" if field["what"] == "missing required" else "is not a known field"
        return bad_request(f"{name} {verb}")
    if "'" in text and not text.startswith("Expected `str` matching regex"):
        text = "not an allowed value"  # "Invalid enum value 'x'" would echo the value
    return bad_request(f"{key_of}{_field_path(path, prefix)}: {text[:1].lower()}{text[1:]}")


def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    found = _decoders.get(kind)
    if found is None:
        found = _decoders[kind] = msgspec.json.Decoder(kind)
    return found


def decode(data: bytes | str | Raw, kind: type[T], *, prefix: str = "") -> T:
    """Decode ``data`` as ``kind`` or raise the 400 :class:`ApiError` that says why."""
    result: T = decode_as(data, kind, prefix=prefix)
    return result


def decode_as(data: bytes | str | Raw, kind: Any, *, prefix: str = "") -> Any:
    """:func:`decode` for a type that is not a class (a union, an ``Annotated`` list)."""
    try:
        return decoder(kind).decode(data)
    except msgspec.ValidationError as exc:
        raise invalid(exc, prefix) from None
    except (msgspec.DecodeError, RecursionError):
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None


def encode(value: Struct) -> bytes:
    return _ENCODER.encode(value)
