"""A group commit of plain sends and acks as a few statements, run off the event loop.

Most batches of a busy relay hold nothing but sends (queue inserts) and acks (queue
deletes), and their checks pass on what the storage keeps in memory. Run one statement per
operation on the event loop, they took a fifth of its time (``bench/relay.py --devices
100``, py-spy); run one per operation on a thread, each statement's return would wait for
the GIL (the loop holds it), which cost more than the statement. Here the loop checks the
batch from memory and hands the commit thread a few statements for all of it: one
multi-row ``INSERT ... ON CONFLICT (message_id) DO NOTHING`` per :data:`ROWS` queued
messages, one ``SELECT`` counting each ack's hits and one ``DELETE`` per :data:`ROWS`
acked ids, and the ``COMMIT``. ``sqlite3`` releases the GIL while SQLite runs a
statement, so the inserts, the index updates and ``secure_delete``'s overwrites happen on
the other core while the loop goes on.

What it must tell the loop, and how it knows without reading rows back (each row read
would be another wait for the GIL):

- the queued messages' sequence numbers: within one statement SQLite gives the inserted
  rows consecutive ones (``AUTOINCREMENT``, one writer), the last of them
  ``lastrowid``; padding rows (statements come in a few sizes, so that they stay
  prepared) repeat the last real row, conflict with it and are skipped after it;
- that every message was new: ``rowcount`` equals the real rows. A resend of a message
  still queued inserts nothing and :func:`run` gives up (``None``, rolled back): the
  storage then runs the batch operation by operation, which stores it once and tells
  which;
- each ack's count: the ``SELECT`` returns the acking operation's index once per row it
  will delete, in one ``group_concat``.

The loop has made sure that no message id occurs twice among the batch's inserts and acks,
so that running every insert before every ack gives what running them in order would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import cache
from typing import Final

__all__ = ["ROWS", "AckRow", "QueueRow", "run"]

#: Most rows one statement inserts or names (7 or 4 parameters each, far below SQLite's
#: limit of 32766); a statement of n rows is padded to the next power of two from 8.
ROWS: Final = 256

#: (account id, device id, message id, body, received_at, expires_at, size)
QueueRow = tuple[bytes, int, bytes, bytes, int, int, int]
#: (index of the acking operation, message id, account id, device id)
AckRow = tuple[int, bytes, bytes, int]

_JOIN = (
    " FROM (VALUES {}) v JOIN queue q ON q.message_id = v.column2"
    " AND q.account_id = v.column3 AND q.device_id = v.column4"
)


def _size(n: int) -> int:
    return max(8, 1 << (n - 1).bit_length())


@cache
def _insert_sql(size: int) -> str:
    return (
        "INSERT INTO queue (account_id, device_id, message_id, body, received_at, expires_at,"  # noqa: S608 (ours)
        " size) VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * size) + " ON CONFLICT"
        " (message_id) DO NOTHING"
    )


@cache
def _ack_sql(size: int) -> tuple[str, str]:
    join = _JOIN.format(",".join(["(?, ?, ?, ?)"] * size))
    return (
        "SELECT group_concat(v.column1)" + join,
        "DELETE FROM queue WHERE seq IN (SELECT q.seq" + join + ")",  # noqa: S608 (ours)
    )


def _insert(conn: sqlite3.Connection, rows: Sequence[QueueRow]) -> list[int] | None:
    """Each row's sequence number, in order; ``None`` if one was queued already."""
    seqs: list[int] = []
    for start in range(0, len(rows), ROWS):
        chunk = rows[start : start + ROWS]
        size = _size(len(chunk))
        params: list[object] = [value for row in chunk for value in row]
        params += list(chunk[-1]) * (size - len(chunk))
        cur = conn.execute(_insert_sql(size), params)
        if cur.rowcount != len(chunk) or cur.lastrowid is None:
            return None
        seqs += range(cur.lastrowid - len(chunk) + 1, cur.lastrowid + 1)
    return seqs


def _ack(conn: sqlite3.Connection, rows: Sequence[AckRow], ops: int) -> list[int]:
    """How many of each operation's rows there were (now deleted)."""
    counts = [0] * ops
    for start in range(0, len(rows), ROWS):
        chunk = rows[start : start + ROWS]
        size = _size(len(chunk))
        params: list[object] = [value for row in chunk for value in row]
        params += [None] * (4 * (size - len(chunk)))
        select, delete = _ack_sql(size)
        (hits,) = conn.execute(select, params).fetchone()
        if hits:
            for index in str(hits).split(","):
                counts[int(index)] += 1
            conn.execute(delete, params)
    return counts


def run(
    conn: sqlite3.Connection,
    inserts: Sequence[QueueRow],
    acks: Sequence[AckRow],
    ops: int,
    commit: Callable[[sqlite3.Connection], None],
) -> tuple[list[int], list[int]] | None:
    """On the commit thread: one transaction of ``inserts`` then ``acks`` (of ``ops``
    acking operations, numbered from 0), committed by ``commit``; the inserted rows'
    sequence numbers and each operation's count. ``None``, with nothing changed, if a
    message was queued already or a statement failed: the caller runs the batch
    operation by operation, which tells who fails. Raises only if the commit failed
    (rolled back, or not: the caller rolls back)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        seqs = _insert(conn, inserts)
        counts = _ack(conn, acks, ops) if seqs is not None else []
    except Exception:
        seqs = None
    if seqs is None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return None
    commit(conn)
    return seqs, counts
