"""Checks before a new profile is made, so that a user learns of a wrong server address or
a taken username before choosing a passcode, not after.

:func:`check_new_account` asks the server, without an account, for its sender-certificate
key and its log key (what every sealpost relay serves, and what registration needs first)
and whether the username is free. Registration still checks both again: the name can be
taken between the two, and the server's answer is what counts.

Example::

    await check_new_account("https://relay.example", "alice")  # raises if it would fail
"""

from __future__ import annotations

import base64

from sealpost.client.errors import ClientError, ServerError, ServerUnavailable
from sealpost.client.paths import USERNAME_PATTERN, username_or_none
from sealpost.client.transport import Transport

__all__ = [
    "USERNAME_PATTERN",
    "NotASealpostServer",
    "UsernameInvalid",
    "UsernameTaken",
    "check_new_account",
    "check_server",
    "check_username",
]


class UsernameInvalid(ClientError, ValueError):
    def __init__(self) -> None:
        super().__init__("a username is 3 to 32 of a-z, 0-9, '_', '.' and '-'")


class UsernameTaken(ClientError):
    def __init__(self, name: str) -> None:
        super().__init__(f"the username {name!r} is taken on this server; choose another")
        self.name = name


class NotASealpostServer(ServerUnavailable):
    def __init__(self, url: str) -> None:
        super().__init__(f"{url} answers, but it is not a sealpost server")
        self.url = url


def check_username(name: str) -> str:
    """The name as the server will keep it (lower-cased), or :class:`UsernameInvalid`."""
    lower = username_or_none(name)
    if lower is None:
        raise UsernameInvalid
    return lower


def _is_key(doc: object) -> bool:
    if not isinstance(doc, dict) or not isinstance(doc.get("public_key"), str):
        return False
    try:
        return len(base64.b64decode(doc["public_key"], validate=True)) == 32
    except ValueError:
        return False


async def _check_server(anonymous: Transport, url: str) -> None:
    try:
        server_key = await anonymous.request("GET", "/v1/certificate/server", signed=False)
        log_key = await anonymous.request("GET", "/v1/log/key", signed=False)
    except ServerError:
        raise NotASealpostServer(url) from None
    if not _is_key(server_key) or not _is_key(log_key):
        raise NotASealpostServer(url)


async def check_server(server_url: str) -> None:
    """Raise :class:`ServerUnavailable` or :class:`NotASealpostServer` unless a sealpost
    relay answers at ``server_url``."""
    url = server_url.rstrip("/")
    async with Transport(url) as anonymous:
        await _check_server(anonymous, url)


async def check_new_account(server_url: str, username: str) -> None:
    """Raise :class:`UsernameInvalid`, :class:`ServerUnavailable` (the server cannot be
    reached), :class:`NotASealpostServer` or :class:`UsernameTaken` if registering
    ``username`` on ``server_url`` would fail for that reason."""
    name = check_username(username)
    url = server_url.rstrip("/")
    async with Transport(url) as anonymous:
        await _check_server(anonymous, url)
        try:
            await anonymous.request("GET", f"/v1/accounts/{name}", signed=False)
        except ServerError as exc:
            if exc.status == 404:
                return
            raise
    raise UsernameTaken(name)
