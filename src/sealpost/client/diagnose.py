"""Why the server refused this device: turned from a bare ``unauthorized`` into what
happened, by asking the server what anyone may ask (its log key, the account's public
directory entry).

In order:

1. The server's log key is not the one the profile pinned: the server lost its data
   (a new data directory makes new keys) or another server answers at this address. That
   is a key-transparency alarm (``log_key_changed``), and :class:`LogKeyChanged`.
2. The directory has no account of this name, or one under another account key: the
   server does not know this account any more (:class:`AccountUnknown`).
3. The account is there but does not list this device: another device of the account
   removed it (:class:`DeviceRevoked`).

Otherwise there is nothing better to say (``None``): the original error stands. These
answers come from the server, which may lie; they explain, and decide nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

from sealpost.client.errors import (
    AccountUnknown,
    ClientError,
    DeviceRevoked,
    LogKeyChanged,
    ServerError,
)

__all__ = ["LOG_KEY_CHANGED", "diagnose_refusal"]

#: The alarm kind raised when the server's log key is not the pinned one.
LOG_KEY_CHANGED = "log_key_changed"

Request = Callable[[str, str], Any]
Alarm = Callable[[str, str, str, Sequence[bytes]], None]


def _key(doc: object) -> bytes | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("public_key"), str):
        return None
    try:
        return base64.b64decode(doc["public_key"], validate=True)
    except ValueError:
        return None


async def diagnose_refusal(
    request: Request,
    *,
    username: str,
    account_key: bytes,
    device_id: int,
    pinned_log_key: bytes | None,
    alarm: Alarm,
) -> ClientError | None:
    """What the refusal of this device's signature means (see the module docstring).
    ``request(method, path)`` is an unsigned request to the server; ``alarm`` records a
    key-transparency alarm."""
    try:
        log_key = _key(await request("GET", "/v1/log/key"))
    except ClientError:
        return None
    if pinned_log_key is not None and log_key is not None and log_key != pinned_log_key:
        alarm(
            LOG_KEY_CHANGED,
            "log",
            "the server's log key is not the one this profile pinned",
            [pinned_log_key, log_key],
        )
        return LogKeyChanged()
    try:
        doc = await request("GET", f"/v1/accounts/{username}")
    except ServerError as exc:
        return AccountUnknown(username) if exc.status == 404 else None
    except ClientError:
        return None
    if not isinstance(doc, dict):
        return None
    listed_key = _key({"public_key": doc.get("account_key")})
    if listed_key != account_key:
        return AccountUnknown(username)
    devices = doc.get("devices")
    if isinstance(devices, list):
        ids = {d.get("device_id") for d in devices if isinstance(d, dict)}
        if device_id not in ids:
            return DeviceRevoked(device_id)
    return None
