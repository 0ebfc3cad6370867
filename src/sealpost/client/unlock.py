"""How many wrong passcodes a profile has seen, read before it is unlocked.

An unlock screen says how long the next try must wait and, for a profile made with
``wipe_after``, how many tries are left before the wipe. Both come from the counter the
store keeps in ``keyfile.json`` in clear (it must be readable without the passcode: it
is checked before Argon2id runs; see :mod:`sealpost.client.store.keyfile`), so reading them here
needs no passcode and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sealpost.client.store import KEYFILE
from sealpost.client.store.keyfile import KeyFile

__all__ = ["UnlockState", "unlock_state"]


@dataclass(frozen=True, slots=True)
class UnlockState:
    failures: int  # wrong passcodes in a row so far
    retry_after: float  # seconds until the next try is allowed (0: now)
    wipe_after: int | None  # the failure that wipes the profile (None: never)

    @property
    def tries_left(self) -> int | None:
        """Tries before the wipe (the last one included), or None without a wipe."""
        return None if self.wipe_after is None else max(0, self.wipe_after - self.failures)


def unlock_state(profile: Path | str, clock: Callable[[], float] = time.time) -> UnlockState:
    """The counter of the profile in ``profile``: :class:`NoProfile` where there is none,
    :class:`CorruptProfile` where the keyfile is damaged."""
    failures, not_before, wipe_after = KeyFile(Path(profile) / KEYFILE).counter()
    return UnlockState(failures, max(0.0, not_before - clock()), wipe_after)
