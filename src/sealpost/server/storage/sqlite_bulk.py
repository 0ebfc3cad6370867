"""A group commit of plain sends and acks as a few statements, their work off the event loop.

Most batches of a busy relay hold nothing but sends (queue inserts) and acks (queue
deletes), and their checks pass on what the storage keeps in memory. Run one statement per
operation on the event loop, they took a fifth of its time (``bench/relay.py --devices
100``, py-spy); run one per operation on a thread, each statement's return would wait for
the GIL (the loop holds it), which cost more than the statement. Here the loop checks the
batch from memory, counts the rows of each ack that wants a count in one ``SELECT`` (index
lookups) and hands the commit thread a few statements for the rest: one multi-row ``INSERT
... ON CONFLICT (message_id) DO NOTHING`` per :data:`ROWS` queued messages, one ``DELETE``
per :data:`ROWS` acked ids, and the ``COMMIT``. ``sqlite3`` releases the GIL while SQLite
runs a statement, so the inserts, the index updates and ``secure_delete``'s overwrites
happen on the other core while the loop goes on.

What it must tell the loop, and how it knows without reading rows back (each row read
would be another wait for the GIL):

- the queued messages' sequence numbers: within one statement SQLite gives the inserted
  rows consecutive ones (``AUTOINCREMENT``, one writer), the last of them
  ``lastrowid``; padding rows (statements come in a few sizes, so that they stay
  prepared) repeat the last real row, conflict with it and are skipped after it (a
  skipped row uses up a sequence number: gaps are allowed);
- that every message was new: ``rowcount`` equals the real rows. A resend of a message
  still queued inserts nothing and :func:`run` gives up (``None``, rolled back): the
  storage then runs the batch operation by operation, which stores it once and tells
  which;
- each ack's count, where one is asked for (``ack_all``): :func:`count_acks` returns the
  acking operation's index once per row the ``DELETE`` will remove, in one
  ``group_concat``. The relay's streams ask for none (``ack_each_nowait``): their acks
  go straight to the ``DELETE`` (:func:`ack_params`), with no read on the loop.

The loop has made sure that no message id occurs twice among the batch's inserts and acks,
so that counting the acks first and running every insert before every ack gives what
running them in order would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import cache
from typing import Final

__all__ = ["ROWS", "AckRow", "Inserts", "QueueRow", "ack_params", "count_acks", "run"]

#: Most rows one statement inserts or names (7 or 4 parameters each, below SQLite's limit of
#: 32766); a statement of n rows is padded to the next power of two from 8.
ROWS: Final = 1024

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


class _QueuedAlready(Exception):
    pass


class Inserts:
    """The parameters of the statements inserting ``rows`` (built on the loop, so that the
    commit thread holds the GIL for as little as it can)."""

    __slots__ = ("chunks",)

    def __init__(self, rows: Sequence[QueueRow]) -> None:
        self.chunks: list[tuple[int, list[object]]] = []  # (real rows, padded parameters)
        for start in range(0, len(rows), ROWS):
            chunk = rows[start : start + ROWS]
            params: list[object] = [value for row in chunk for value in row]
            params += list(chunk[-1]) * (_size(len(chunk)) - len(chunk))
            self.chunks.append((len(chunk), params))


def ack_params(rows: Sequence[AckRow]) -> list[list[object]]:
    """The parameters of the ``DELETE`` statements that remove ``rows`` (for :func:`run`),
    uncounted."""
    out: list[list[object]] = []
    for start in range(0, len(rows), ROWS):
        chunk = rows[start : start + ROWS]
        params: list[object] = [value for row in chunk for value in row]
        params += [None] * (4 * (_size(len(chunk)) - len(chunk)))
        out.append(params)
    return out


def count_acks(
    conn: sqlite3.Connection, rows: Sequence[AckRow], ops: int
) -> tuple[list[int], list[list[object]]]:
    """In the open transaction: how many of each of ``ops`` operations' rows there are,
    and the parameters of the ``DELETE`` statements that remove them (for :func:`run`)."""
    counts = [0] * ops
    deletes: list[list[object]] = []
    for params in ack_params(rows):
        (hits,) = conn.execute(_ack_sql(len(params) // 4)[0], params).fetchone()
        if hits:
            for index in str(hits).split(","):
                counts[int(index)] += 1
            deletes.append(params)
    return counts, deletes


def run(
    conn: sqlite3.Connection,
    inserts: Inserts,
    deletes: Sequence[list[object]],
    commit: Callable[[sqlite3.Connection], None],
) -> list[int] | None:
    """On the commit thread, in the transaction the loop opened: ``inserts``, then
    ``deletes`` (from :func:`count_acks`), committed by ``commit``; the inserted rows'
    sequence numbers. ``None``, rolled back, if a message was queued already or a
    statement failed: the caller runs the batch operation by operation, which tells who
    fails. Raises only if the commit failed (rolled back, or not: the caller rolls
    back)."""
    seqs: list[int] = []
    try:
        for real, params in inserts.chunks:
            cur = conn.execute(_insert_sql(len(params) // 7), params)
            if cur.rowcount != real or cur.lastrowid is None:
                raise _QueuedAlready
            seqs += range(cur.lastrowid - real + 1, cur.lastrowid + 1)
        for params in deletes:
            conn.execute(_ack_sql(len(params) // 4)[1], params)
    except Exception:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return None
    commit(conn)
    return seqs
