"""The check both storage backends make when a registration spends an invite (the codes
themselves: :mod:`sealpost.server.invites`)."""

from __future__ import annotations

import hmac
from typing import Final

from sealpost.server.storage.base import InviteUse

__all__ = ["admits"]

#: What a code that names no invite is compared with, so that the comparison costs the same.
_NO_HASH: Final = bytes(32)


def admits(
    stored_hash: bytes | None,
    *,
    uses_left: int,
    expires_at: int,
    revoked: bool,
    use: InviteUse,
) -> bool:
    """Whether the stored invite (``None``: no invite has that id) admits ``use`` now.
    The hashes are compared in constant time, and compared even when there is nothing
    to admit, so the answer's timing says nothing about why."""
    match = hmac.compare_digest(stored_hash or _NO_HASH, use.code_hash)
    usable = not revoked and uses_left > 0 and (not expires_at or use.now < expires_at)
    return stored_hash is not None and match and usable
