"""The process's real sources of randomness and time, injected into the sans-I/O core.

:mod:`sealpost.protocol` and :mod:`sealpost.crypto` never read the OS RNG or the clock
themselves: every operation that needs them takes an ``rng`` (``Callable[[int], bytes]``)
and, where relevant, ``now`` (seconds since the epoch). These are the defaults those
parameters fall back to; tests pass seeded ones instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["Rng", "system_clock", "system_rng"]

#: A source of random bytes: called with a length, returns that many bytes.
Rng = Callable[[int], bytes]


def system_rng(n: int) -> bytes:
    """Return ``n`` bytes from the operating system's CSPRNG."""
    return os.urandom(n)


def system_clock() -> int:
    """Return the current time in whole seconds since the Unix epoch."""
    return int(time.time())
