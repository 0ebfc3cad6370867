"""Invite codes: what an ``invite``-mode server needs to let someone register.

A code is ``IIIIIIII-SSSSSSSSSSSSSSSSSSSSSSSSSS``: an id of 8 hex digits (public: ``sealpost
admin invite list`` and ``revoke`` name it) and 26 base32 characters of secret (130 bits,
from the operator's RNG). The server keeps only ``SHA-256("sealpost/v1/invite\\0" ||
code)``; a registration's code is looked up by its id and its hash compared in constant
time (:func:`sealpost.server.storage.invites.admits`), in the transaction that spends it.
Codes never appear in a log line, an error or a repr: the handler turns one into an
:class:`InviteUse` straight away, and its hash is not part of the use's repr.

    >>> code, invite_id, digest = new_invite(os.urandom)              # doctest: +SKIP
    >>> parse_invite(code, now=0).invite_id == invite_id               # doctest: +SKIP
    True
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Final

from sealpost.entropy import Rng
from sealpost.server.storage.base import InviteUse

__all__ = ["INVITE_CODE", "code_hash", "new_invite", "parse_invite"]

_CONTEXT: Final = b"sealpost/v1/invite\x00"
#: The shape of a code (lower case; parse_invite lowers what a user typed).
INVITE_CODE: Final = re.compile(r"[0-9a-f]{8}-[a-z2-7]{26}")


def code_hash(code: str) -> bytes:
    return hashlib.sha256(_CONTEXT + code.encode("ascii")).digest()


def new_invite(rng: Rng) -> tuple[str, str, bytes]:
    """A fresh code, its id and its hash."""
    invite_id = rng(4).hex()
    secret = base64.b32encode(rng(17)).decode("ascii").lower().rstrip("=")[:26]
    code = f"{invite_id}-{secret}"
    return code, invite_id, code_hash(code)


def parse_invite(text: str, *, now: int) -> InviteUse | None:
    """The use a registration's ``invite`` field asks for; ``None`` if it is no code at
    all (which counts as a wrong guess)."""
    code = text.strip().lower()
    if not code.isascii() or INVITE_CODE.fullmatch(code) is None:
        return None
    return InviteUse(code[:8], code_hash(code), now)
