"""What idempotent sends cost the relay per envelope (docs/PROTOCOL.md, "Send ids").

Two figures, each beside its baseline in the same run:

- the SQLite queue insert (the real schema's columns, unique message id index and the two
  other indexes, in memory so that only the statement is measured) with
  ``ON CONFLICT (message_id) DO NOTHING`` against the plain insert, in alternating rounds;
- the queued message's id derived from a send id (``queued_message_id``) against the 16
  random bytes the server drew before.

    .venv/bin/python bench/send_id_cost.py [--rows 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import time
import timeit

from sealpost.protocol.send_id import queued_message_id

SCHEMA = """
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, account_id BLOB NOT NULL,
    device_id INTEGER NOT NULL, message_id BLOB NOT NULL UNIQUE, body BLOB NOT NULL,
    received_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, body_ref INTEGER,
    size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queue_by_device ON queue (account_id, device_id, seq);
CREATE INDEX queue_by_expiry ON queue (expires_at);
"""
PLAIN = (
    "INSERT INTO queue (account_id, device_id, message_id, body, received_at, expires_at,"
    " size) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
UPSERT = PLAIN + " ON CONFLICT (message_id) DO NOTHING"


def insert_us(sql: str, rows: int) -> float:
    """Microseconds per insert of ``rows`` fresh messages in one transaction."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(SCHEMA)
    account, body = os.urandom(16), os.urandom(200)
    values = [(account, i % 100, os.urandom(16), body, 1, 2, 200) for i in range(rows)]
    conn.execute("BEGIN")
    start = time.perf_counter()
    for v in values:
        conn.execute(sql, v).rowcount  # noqa: B018 (read as the storage reads it)
    elapsed = time.perf_counter() - start
    conn.execute("COMMIT")
    conn.close()
    return elapsed / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    plain, upsert = [], []
    for _ in range(args.rounds):
        plain.append(insert_us(PLAIN, args.rows))
        upsert.append(insert_us(UPSERT, args.rows))
    p, u = statistics.median(plain), statistics.median(upsert)
    print(f"insert, plain:       {p:.2f} us (median of {args.rounds})")
    print(f"insert, ON CONFLICT: {u:.2f} us  ratio {u / p:.3f}")
    send_id, account = os.urandom(16), os.urandom(16)
    n = 100_000
    drawn = min(timeit.repeat(lambda: os.urandom(16), number=n, repeat=5)) / n * 1e6
    derived = (
        min(timeit.repeat(lambda: queued_message_id(send_id, account, 1), number=n, repeat=5))
        / n
        * 1e6
    )
    print(f"message id, os.urandom(16): {drawn:.2f} us; derived: {derived:.2f} us")


if __name__ == "__main__":
    main()
