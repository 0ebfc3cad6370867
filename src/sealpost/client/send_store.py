"""The session rows the send pipeline reads and writes, in one place until they move into
the store's sessions repository (``client/store/sessions.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["drop_sessions_except", "load_sessions", "save_sessions"]


def load_sessions(db: Any, address: tuple[bytes, int]) -> bytes | None:
    """The stored session record of a remote device (None: none yet)."""
    row = db.execute(
        "SELECT state FROM sessions WHERE account_id = ? AND device_id = ?", address
    ).fetchone()
    return None if row is None else bytes(row[0])


def save_sessions(db: Any, records: Sequence[tuple[tuple[bytes, int], bytes]], now: int) -> None:
    """Store session records (``now``: seconds)."""
    db.executemany(
        "INSERT OR REPLACE INTO sessions (account_id, device_id, state, updated) "
        "VALUES (?, ?, ?, ?)",
        [(a, d, record, now) for (a, d), record in records],
    )


def drop_sessions_except(db: Any, account_id: bytes, keep: Sequence[int]) -> None:
    """Forget the stored sessions of an account's devices not in ``keep``."""
    marks = ",".join("?" * len(keep)) or "NULL"
    db.execute(
        f"DELETE FROM sessions WHERE account_id = ? AND device_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
        (account_id, *keep),
    )
