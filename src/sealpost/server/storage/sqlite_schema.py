"""The SQLite relay's tables, and the migrations from each older schema version: a
database of an older version is brought to :data:`SCHEMA_VERSION` at open, all or nothing
(:func:`_migrate`), and accounts from before the transparency log get their first entry
(:func:`_log_unlogged_accounts`). ``PRAGMA user_version`` holds the version.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Final

from sealpost.server.storage.sqlite_log import log_account_state
from sealpost.transparency.log import account_map_key, account_map_value, decode_entry
from sealpost.transparency.merkle import leaf_hash
from sealpost.transparency.smt import SqliteMapStore
from sealpost.transparency.smt import build as build_map

__all__ = ["SCHEMA_VERSION"]

log = logging.getLogger("sealpost.server.storage")

#: 2: shared bodies and queue bytes; 3: the account map (kt_map_*) and tree heads that
#: commit to it (see _MIGRATIONS).
SCHEMA_VERSION: Final = 3


_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account_id          BLOB PRIMARY KEY,
    username_lower      TEXT NOT NULL UNIQUE,
    username            TEXT NOT NULL,
    account_key         BLOB NOT NULL,
    delivery_token_hash BLOB NOT NULL,
    sealed_from_anyone  INTEGER NOT NULL,
    created             INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    account_id  BLOB NOT NULL REFERENCES accounts(account_id),
    device_id   INTEGER NOT NULL,
    certificate BLOB NOT NULL,
    registered  INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signed_prekeys (
    account_id BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    prekey     BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS one_time_prekeys (
    account_id BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    prekey     BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kem_prekeys (
    account_id BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    kind       INTEGER NOT NULL,  -- 1 last resort (one per device), 2 one-time
    key_id     INTEGER NOT NULL,
    prekey     BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id, kind, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  BLOB NOT NULL,
    device_id   INTEGER NOT NULL,
    message_id  BLOB NOT NULL UNIQUE,
    body        BLOB NOT NULL,     -- the body, or with body_ref the prefix of a shared one
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    body_ref    INTEGER,           -- shared_bodies.id: the message is body || that body
    size        INTEGER NOT NULL DEFAULT 0  -- bytes the device receives (queue quota)
);
CREATE TABLE IF NOT EXISTS shared_bodies (  -- one multi-recipient send's body, stored once
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    refs INTEGER NOT NULL              -- queued messages using it (queue_unref keeps it)
);
CREATE INDEX IF NOT EXISTS queue_by_device ON queue (account_id, device_id, seq);
CREATE INDEX IF NOT EXISTS queue_by_expiry ON queue (expires_at);
CREATE TABLE IF NOT EXISTS nonces (
    nonce      BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires_at);
CREATE TABLE IF NOT EXISTS attachments (
    attachment_id BLOB PRIMARY KEY,
    size          INTEGER NOT NULL,
    created       INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    owner         BLOB NOT NULL DEFAULT x''  -- uploading account (its byte quota)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attachments_by_expiry ON attachments (expires_at);
CREATE TABLE IF NOT EXISTS revocations (
    account_id BLOB NOT NULL,
    device_id  INTEGER NOT NULL,
    revocation BLOB NOT NULL,
    revoked    INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_entries (
    idx          INTEGER PRIMARY KEY,  -- the leaf's index in the Merkle log, from 0
    account_id   BLOB NOT NULL,
    sequence     INTEGER NOT NULL,
    entry        BLOB NOT NULL,        -- LogEntry wire bytes
    certificates BLOB NOT NULL,        -- what its devices commitment covers (base.pack_list)
    revocations  BLOB NOT NULL,
    UNIQUE (account_id, sequence)
);
CREATE TABLE IF NOT EXISTS invites (  -- sealpost admin invite: codes kept as hashes only
    invite_id  TEXT PRIMARY KEY,
    code_hash  BLOB NOT NULL,
    uses_left  INTEGER NOT NULL,
    uses       INTEGER NOT NULL DEFAULT 0,
    created    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,        -- 0: never
    revoked    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_removals (  -- removed accounts: their names' quarantine
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     BLOB NOT NULL,
    username_lower TEXT NOT NULL,
    log_index      INTEGER NOT NULL,   -- its DeletionEntry
    cause          INTEGER NOT NULL,
    removed_at     INTEGER NOT NULL,
    free_at        INTEGER NOT NULL,   -- the name may be registered again from then on
    audited        INTEGER NOT NULL DEFAULT 0  -- the server's log has said it
);
CREATE INDEX IF NOT EXISTS removals_by_name ON account_removals (username_lower, seq);
CREATE TABLE IF NOT EXISTS log_heads (
    tree_size INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    head      BLOB NOT NULL            -- SignedTreeHead wire bytes
);
"""


#: Schema changes from each version to the next, run in one transaction at open.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (  # -> 2: shared bodies of multi-recipient sends, queue bytes, attachment owners
        "ALTER TABLE queue ADD COLUMN body_ref INTEGER",
        "ALTER TABLE queue ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
        "UPDATE queue SET size = length(body)",
        "ALTER TABLE attachments ADD COLUMN owner BLOB NOT NULL DEFAULT x''",
    ),
    2: (  # -> 3: the account map, built from the log (_MIGRATION_BUILDS); the old-format
        # tree heads, which did not commit to a map, dropped (a new one is signed at once,
        # and a client proves it consistent with the old one it kept: the log is the same)
        "DELETE FROM kt_map_leaves",
        "DELETE FROM kt_map_nodes",
        "DELETE FROM log_heads",
    ),
}


#: What needs the current shape of the tables (so runs after the migrations).
_SCHEMA_AFTER_MIGRATIONS = """
CREATE INDEX IF NOT EXISTS attachments_by_owner ON attachments (owner, expires_at);
-- Whatever deletes a queued message (ack, purge, device removal) releases its shared body,
-- and the last one deletes it, in the same transaction.
CREATE TRIGGER IF NOT EXISTS queue_unref AFTER DELETE ON queue
WHEN OLD.body_ref IS NOT NULL
BEGIN
    UPDATE shared_bodies SET refs = refs - 1 WHERE id = OLD.body_ref;
    DELETE FROM shared_bodies WHERE id = OLD.body_ref AND refs <= 0;
END;
"""


def _build_account_map(conn: sqlite3.Connection) -> None:
    """Fill the (empty) account map from the log: each username's newest entry."""
    newest: dict[str, tuple[int, bytes]] = {}
    for idx, raw in conn.execute("SELECT idx, entry FROM log_entries ORDER BY idx"):
        entry = bytes(raw)
        newest[decode_entry(entry).username] = (idx, leaf_hash(entry))
    build_map(
        SqliteMapStore(conn),
        [(account_map_key(name), account_map_value(i, h)) for name, (i, h) in newest.items()],
    )
    log.info("built the key-transparency map of %d accounts from the log", len(newest))


#: What a migration step does beyond its statements, after them, in its transaction.
_MIGRATION_BUILDS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {
    2: _build_account_map,
}


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a database of schema ``version`` to :data:`SCHEMA_VERSION`, all or nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        while version != SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            if version in _MIGRATION_BUILDS:
                _MIGRATION_BUILDS[version](conn)
            version += 1
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        conn.close()
        raise
    log.info("database schema migrated to version %d", SCHEMA_VERSION)


def _log_unlogged_accounts(conn: sqlite3.Connection) -> None:
    """Log every account that has no entry yet (a database from before the log)."""
    missing = [
        bytes(a)
        for (a,) in conn.execute(
            "SELECT account_id FROM accounts WHERE account_id NOT IN"
            " (SELECT account_id FROM log_entries) ORDER BY created, account_id"
        )
    ]
    if not missing:
        return
    conn.execute("BEGIN IMMEDIATE")
    for account_id in missing:
        log_account_state(conn, account_id)
    conn.execute("COMMIT")
    log.info("logged %d accounts that had no key-transparency entry", len(missing))
