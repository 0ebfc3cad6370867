"""Request paths built from data, and the username rules checked before any lookup.

A value that goes into a URL path comes from a peer more often than it seems: the name an
unknown sender claims, the names a group state lists, a linked device's provisioning. One
taken as it is could step out of its segment (``../keys/<someone>/1`` made a recipient
fetch, and spend, a third party's one-time prekey from its own address). So every path is
built by :func:`api_path`, which percent-encodes each segment whole (``/`` and ``%``
included), and a name is checked against the server's username rules
(:func:`username_or_none`) before it is looked up at all.

    >>> api_path("accounts", "../keys/status")
    '/v1/accounts/..%2Fkeys%2Fstatus'
    >>> username_or_none("../keys/status") is None, username_or_none("Bob")
    (True, 'bob')
"""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["USERNAME_PATTERN", "USERNAME_RULES", "api_path", "username_or_none"]

#: The relay's rule (server/handlers/accounts.py) and the log's (transparency/log.py):
#: 3 to 32 of a-z 0-9 _ . -, compared lower-cased.
USERNAME_PATTERN = re.compile(r"[a-z0-9_.-]{3,32}")
USERNAME_RULES = "a username is 3 to 32 of a-z 0-9 _ . -"


def username_or_none(name: object) -> str | None:
    """``name`` lower-cased if it is a well-formed username, else None."""
    if not isinstance(name, str) or not name.isascii():
        return None
    lower = name.lower()
    return lower if USERNAME_PATTERN.fullmatch(lower) else None


def api_path(*segments: str | int) -> str:
    """``/v1/`` and the segments, each percent-encoded whole (nothing is left "safe"; a
    ``.`` or ``..`` segment too, which a URL parser would otherwise resolve)."""
    return "/v1/" + "/".join(_segment(str(s)) for s in segments)


def _segment(text: str) -> str:
    if not text:
        raise ValueError("an empty path segment")
    if text in (".", ".."):
        return text.replace(".", "%2E")
    return quote(text, safe="")
