"""Key-transparency records: alarms, the pins of each account's log entry, the gossiped
heads still waiting for a consistency proof, and this client's place in the log.

``alarms``: each alarm once per (kind, subject, detail), kept until the user dismisses it;
its text names public things only, its evidence is the signed heads (length-prefixed).
``kt_pins``: per account, the newest log entry (sequence, index) a checked lookup showed:
a lookup that goes back is refused. ``kt_unproven``: gossiped heads whose consistency proof
could not be fetched yet, with who sent them and when that first failed. In ``meta``: the
newest checked head (``log_head``) and how far this account's own entries were monitored
(``log_monitored``, ``log_monitored_seq``, ``log_monitored_revoked``). The checks
themselves are the services' (:mod:`sealpost.client.services.transparency`: heads in
``log_heads``, lookups in ``lookup_proofs``, alarms raised in ``alarms``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sealpost.client.store.connection import Connection
from sealpost.client.store.meta import MetaRepository

__all__ = [
    "ALARM_KINDS",
    "Alarm",
    "AlarmRepository",
    "LogPin",
    "LogRepository",
    "MonitorMark",
    "Unproven",
]

#: What each alarm means, in the words the CLI shows.
ALARM_KINDS: Mapping[str, str] = {
    "bad_tree_head": "the server sent a log tree head that its pinned log key did not sign",
    "log_inconsistent": "the server's key-transparency log is not one append-only history "
    "(rewritten, or different for different users)",
    "directory_mismatch": "the server served keys or devices that its log does not hold",
    "unknown_device": "a device this account did not add is in this account's log",
    "forged_device": "this account's log lists a device certificate its key did not sign",
    "account_key_changed": "this account's log holds an identity key that is not this account's",
    "log_entries_missing": "entries of this account's log are missing or out of order",
    "revoked_device_returned": "a device this account revoked is back in its log, or its "
    "revocation was dropped",
    "stale_lookup": "the server answered a lookup with an older state of an account than "
    "this client has already seen (a replayed answer, hiding a change such as a revocation)",
    "consistency_refused": "the server would not prove that a tree head a contact gossiped "
    "is consistent with this client's (a split view it cannot justify)",
    "account_removed": "the server's log says this account was removed (by the server's "
    "operator, or at its own request): contacts can no longer reach it",
    "log_key_changed": "the server signs its log with another key than the one pinned: "
    "it lost its data, or another server answers at its address",
}


@dataclass(frozen=True, slots=True)
class Alarm:
    alarm_id: int
    kind: str
    subject: str  # whom or what it is about: a username, "log", this account
    detail: str
    raised: int  # seconds since the epoch
    dismissed: bool

    @property
    def meaning(self) -> str:
        return ALARM_KINDS.get(self.kind, self.kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.alarm_id,
            "kind": self.kind,
            "subject": self.subject,
            "meaning": self.meaning,
            "detail": self.detail,
            "raised": self.raised,
            "dismissed": self.dismissed,
        }


class AlarmRepository:
    def __init__(self, db: Connection) -> None:
        self._db = db

    def raise_alarm(
        self, kind: str, subject: str, detail: str, evidence: Sequence[bytes], now: int
    ) -> Alarm | None:
        """Record an alarm; ``None`` if the same one (kind, subject, detail) is held."""
        blob = b"".join(len(e).to_bytes(2, "big") + e for e in evidence)
        cur = self._db.execute(
            "INSERT OR IGNORE INTO alarms (kind, subject, detail, evidence, raised)"
            " VALUES (?, ?, ?, ?, ?)",
            (kind, subject, detail, blob, now),
        )
        if not cur.rowcount:
            return None
        return Alarm(int(cur.lastrowid), kind, subject, detail, now, False)

    def list(self, *, include_dismissed: bool = False) -> list[Alarm]:
        """Oldest first, without the dismissed ones unless asked."""
        rows = self._db.all(
            "SELECT id, kind, subject, detail, raised, dismissed FROM alarms"
            " WHERE dismissed <= ? ORDER BY id",
            (1 if include_dismissed else 0,),
        )
        return [Alarm(i, k, s, d, r, bool(x)) for i, k, s, d, r, x in rows]

    def dismiss(self, alarm_ids: Iterable[int] | None = None) -> int:
        """Dismiss these alarms (all with ``None``); how many were dismissed."""
        if alarm_ids is None:
            cur = self._db.execute("UPDATE alarms SET dismissed = 1 WHERE dismissed = 0")
            return int(cur.rowcount)
        return sum(
            int(
                self._db.execute(
                    "UPDATE alarms SET dismissed = 1 WHERE id = ? AND dismissed = 0", (i,)
                ).rowcount
            )
            for i in alarm_ids
        )


@dataclass(frozen=True, slots=True)
class LogPin:
    sequence: int
    log_index: int


@dataclass(frozen=True, slots=True)
class Unproven:
    head: bytes
    source: str
    first_failed: int


@dataclass(frozen=True, slots=True)
class MonitorMark:
    """How far this account's own log entries were checked."""

    after: int = -1  # the index of the last entry checked (-1: none)
    sequence: int = 0  # its sequence number
    revoked: frozenset[int] = frozenset()  # device ids revoked in the entries checked


class LogRepository:
    def __init__(self, db: Connection, meta: MetaRepository) -> None:
        self._db = db
        self._meta = meta.get
        self._set_meta = meta.set_many

    def head(self) -> bytes | None:
        """The newest tree head checked, as signed."""
        return self._meta("log_head")

    def set_head(self, raw: bytes) -> None:
        self._set_meta({"log_head": raw})

    def log_key(self) -> bytes | None:
        return self._meta("log_key")

    def set_log_key(self, log_key: bytes) -> None:
        self._set_meta({"log_key": log_key})

    def pin(self, account_id: bytes) -> LogPin | None:
        row = self._db.one(
            "SELECT sequence, log_index FROM kt_pins WHERE account_id = ?", (account_id,)
        )
        return None if row is None else LogPin(int(row[0]), int(row[1]))

    def is_pinned(self, username: str) -> bool:
        return self._db.one("SELECT 1 FROM kt_pins WHERE username = ?", (username,)) is not None

    def pinned_after(self, username: str, account_id: bytes, index: int) -> bool:
        """Whether another account of this name was pinned at a log index after ``index``
        (a newer account than the one a deletion at ``index`` removed)."""
        row = self._db.one(
            "SELECT 1 FROM kt_pins WHERE username = ? AND account_id != ? AND log_index > ?",
            (username, account_id, index),
        )
        return row is not None

    def set_pin(self, account_id: bytes, username: str, pin: LogPin) -> None:
        self._db.execute(
            "INSERT INTO kt_pins (account_id, username, sequence, log_index)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (account_id) DO UPDATE SET"
            " username = excluded.username, sequence = excluded.sequence,"
            " log_index = excluded.log_index",
            (account_id, username, pin.sequence, pin.log_index),
        )

    def unproven(self) -> list[Unproven]:
        return [
            Unproven(bytes(h), str(s), int(f))
            for h, s, f in self._db.all("SELECT head, source, first_failed FROM kt_unproven")
        ]

    def add_unproven(self, head: bytes, source: str, now: int) -> None:
        """Keep a gossiped head to prove later (the first failure's time stays)."""
        self._db.execute(
            "INSERT OR IGNORE INTO kt_unproven (head, source, first_failed) VALUES (?, ?, ?)",
            (head, source, now),
        )

    def proven(self, head: bytes) -> None:
        self._db.execute("DELETE FROM kt_unproven WHERE head = ?", (head,))

    def monitored(self) -> MonitorMark:
        after = self._meta("log_monitored")
        seq = self._meta("log_monitored_seq")
        revoked = (self._meta("log_monitored_revoked") or b"").decode()
        return MonitorMark(
            -1 if after is None else int(after.decode()),
            0 if seq is None else int(seq.decode()),
            frozenset(int(d) for d in revoked.split(",") if d),
        )

    def set_monitored(self, mark: MonitorMark) -> None:
        self._set_meta(
            {
                "log_monitored": str(mark.after).encode(),
                "log_monitored_seq": str(mark.sequence).encode(),
                "log_monitored_revoked": ",".join(str(d) for d in sorted(mark.revoked)).encode(),
            }
        )
