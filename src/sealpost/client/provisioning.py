"""The account material an existing device hands a newly linked one (inside the
provisioning message of :mod:`sealpost.protocol.linking`).

UTF-8 JSON, parsed strictly (every field checked for type and size)::

    {"version": 1, "server_url": str, "server_key": b64 (32), "username": str,
     "account": b64 (AccountIdentity record, holds the account's private key),
     "delivery_token": b64 (32), "device_id": int (the id the new device takes),
     "devices": [{"device_id": int, "name": str}],        # the account's devices' names
     "contacts": [{"account_id": hex (16), "username": str, "account_key": b64 (32),
                   "verified": bool, "delivery_token": b64 (32) | null}],
     "groups": [b64 (signed group state)],
     "timers": [{"peer": hex (16 or 32), "seconds": int}],
     "log_key": b64 (32) | null,                  # the pinned key-transparency log key
     "log_head": b64 (146) | null}                # the newest signed tree head seen

The log key and head travel so that the new device holds the server to the same log as
its siblings from its first request (a server cannot give it a fresh, forked view).

Contacts' device lists are not carried: the new device fetches them from the directory
and accepts only devices their account key certified, as for any contact.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from sealpost._errors import DecodeError
from sealpost.protocol.content import MAX_TIMER
from sealpost.protocol.keys import AccountIdentity
from sealpost.protocol.linking import MAX_PAYLOAD

__all__ = ["ContactRecord", "Provisioning"]

VERSION = 1
MAX_CONTACTS = 50_000
MAX_GROUPS = 5_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise DecodeError("expected base64")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("expected base64") from None
    if length is not None and len(data) != length:
        raise DecodeError("a field has the wrong length")
    return data


def _hex(value: object, lengths: tuple[int, ...]) -> bytes:
    if not isinstance(value, str):
        raise DecodeError("expected hex")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise DecodeError("expected hex") from None
    if len(data) not in lengths:
        raise DecodeError("a field has the wrong length")
    return data


def _str(value: object, limit: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit or not value.isprintable():
        raise DecodeError("expected a short printable string")
    return value


def _int(value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise DecodeError("an integer out of range")
    return value


def _list(value: object, limit: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise DecodeError("expected a bounded list")
    return value


@dataclass(frozen=True, slots=True)
class ContactRecord:
    account_id: bytes
    username: str
    account_key: bytes
    verified: bool
    delivery_token: bytes | None


@dataclass(slots=True)
class Provisioning:
    server_url: str
    server_key: bytes
    username: str
    account: AccountIdentity
    delivery_token: bytes
    device_id: int
    devices: dict[int, str] = field(default_factory=dict)
    contacts: list[ContactRecord] = field(default_factory=list)
    groups: list[bytes] = field(default_factory=list)
    timers: dict[bytes, int] = field(default_factory=dict)
    log_key: bytes | None = None
    log_head: bytes | None = None

    def __repr__(self) -> str:
        return f"Provisioning(username={self.username!r}, device_id={self.device_id})"

    def to_bytes(self) -> bytes:
        doc = {
            "version": VERSION,
            "server_url": self.server_url,
            "server_key": _b64(self.server_key),
            "username": self.username,
            "account": _b64(self.account.to_bytes()),
            "delivery_token": _b64(self.delivery_token),
            "device_id": self.device_id,
            "devices": [{"device_id": d, "name": n} for d, n in sorted(self.devices.items())],
            "contacts": [
                {
                    "account_id": c.account_id.hex(),
                    "username": c.username,
                    "account_key": _b64(c.account_key),
                    "verified": c.verified,
                    "delivery_token": None if c.delivery_token is None else _b64(c.delivery_token),
                }
                for c in self.contacts
            ],
            "groups": [_b64(g) for g in self.groups],
            "timers": [{"peer": p.hex(), "seconds": s} for p, s in self.timers.items()],
            "log_key": None if self.log_key is None else _b64(self.log_key),
            "log_head": None if self.log_head is None else _b64(self.log_head),
        }
        data = json.dumps(doc, separators=(",", ":")).encode()
        if len(data) > MAX_PAYLOAD:
            raise DecodeError("too much account material to link a device")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Provisioning:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):  # also bad UTF-8, deep nesting, huge integers
            raise DecodeError("the provisioning payload is not JSON") from None
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise DecodeError("a provisioning payload of another version")
        try:
            contacts = []
            for c in _list(doc["contacts"], MAX_CONTACTS):
                token = c["delivery_token"]
                if not isinstance(c["verified"], bool):
                    raise DecodeError("verified is a boolean")
                contacts.append(
                    ContactRecord(
                        _hex(c["account_id"], (16,)),
                        _str(c["username"], 32),
                        _unb64(c["account_key"], 32),
                        c["verified"],
                        None if token is None else _unb64(token, 32),
                    )
                )
            return cls(
                server_url=_str(doc["server_url"], 2048),
                server_key=_unb64(doc["server_key"], 32),
                username=_str(doc["username"], 32),
                account=AccountIdentity.from_bytes(_unb64(doc["account"])),
                delivery_token=_unb64(doc["delivery_token"], 32),
                device_id=_int(doc["device_id"], 1, 2**32 - 1),
                devices={
                    _int(d["device_id"], 1, 2**32 - 1): _str(d["name"], 32)
                    for d in _list(doc["devices"], 64)
                },
                contacts=contacts,
                groups=[_unb64(g) for g in _list(doc["groups"], MAX_GROUPS)],
                timers={
                    _hex(t["peer"], (16, 32)): _int(t["seconds"], 0, MAX_TIMER)
                    for t in _list(doc["timers"], MAX_CONTACTS + MAX_GROUPS)
                },
                log_key=None if doc.get("log_key") is None else _unb64(doc["log_key"], 32),
                log_head=None if doc.get("log_head") is None else _unb64(doc["log_head"], 146),
            )
        except (KeyError, TypeError, AttributeError):
            raise DecodeError("a malformed provisioning payload") from None
