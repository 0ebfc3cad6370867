"""This device's prekeys: the private halves of what it uploaded, by kind and key id.

Kinds (:data:`SIGNED`, :data:`KEM_LAST_RESORT`, :data:`ONE_TIME`, :data:`KEM_ONE_TIME`):
the signed prekey and the ML-KEM last-resort prekey, kept a while after each weekly
rotation so that late first messages still open; and the one-time X25519 and ML-KEM
prekeys, each deleted in the same unit as the first message that used it, so a one-time
key answers one session at most. A record is the key pair's own encoding
(:mod:`sealpost.protocol.keys`). The bookkeeping beside them (the next key id, when the
signed prekey was made) is in ``meta``. Deciding when to make, upload, refill and rotate
is the prekeys service's (:mod:`sealpost.client.services.prekeys`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from sealpost.client.store.connection import Connection

__all__ = ["KEM_LAST_RESORT", "KEM_ONE_TIME", "ONE_TIME", "SIGNED", "PrekeyRepository"]

SIGNED: Final = "spk"
KEM_LAST_RESORT: Final = "kem_lr"
ONE_TIME: Final = "otpk"
KEM_ONE_TIME: Final = "kem"

#: (kind, key id, record)
PrekeyRow = tuple[str, int, bytes]


class PrekeyRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def get(self, kind: str, key_id: int) -> bytes | None:
        """The record of one prekey, ``None`` if it is not (or no longer) held."""
        row = self._db.one(
            "SELECT record FROM prekeys WHERE kind = ? AND key_id = ?", (kind, key_id)
        )
        return None if row is None else bytes(row[0])

    def add(self, rows: Iterable[PrekeyRow], now: int) -> None:
        """Keep these prekeys (made at ``now``, seconds). A key id already held for its
        kind raises and adds none of them."""
        with self._db.atomic():
            self._db.executemany(
                "INSERT INTO prekeys (kind, key_id, record, created) VALUES (?, ?, ?, ?)",
                [(kind, key_id, record, now) for kind, key_id, record in rows],
            )

    def use(self, keys: Iterable[tuple[str, int]]) -> None:
        """Delete these (kind, key id) prekeys: one-time keys a message consumed."""
        self._db.executemany("DELETE FROM prekeys WHERE kind = ? AND key_id = ?", list(keys))

    def drop_rotated(self, before: int) -> int:
        """Delete the signed and last-resort prekeys made before ``before`` (seconds);
        returns how many went."""
        cur = self._db.execute(
            "DELETE FROM prekeys WHERE kind IN (?, ?) AND created < ?",
            (SIGNED, KEM_LAST_RESORT, before),
        )
        return int(cur.rowcount)

    def count(self, kind: str) -> int:
        (n,) = self._db.one("SELECT COUNT(*) FROM prekeys WHERE kind = ?", (kind,))
        return int(n)
