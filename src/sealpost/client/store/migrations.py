"""The profile database's schema: version 1, frozen, and the steps that bring an older
profile forward when it is opened.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` ``[i]`` takes a
database from version ``i + 1`` to ``i + 2``, each step in one transaction together with the
``user_version`` bump, so a step that fails leaves the profile at the version before it. A
database of a newer version than :data:`SCHEMA_VERSION` is refused
(:class:`UnsupportedSchema`), and a read-only open of an older one too (it cannot be
upgraded without a write).
"""

from __future__ import annotations

from typing import Any

import sqlcipher3.dbapi2 as sqlcipher  # type: ignore[import-untyped]

from sealpost.client.store.errors import CorruptProfile, ReadOnlyProfile, UnsupportedSchema

__all__ = ["MIGRATIONS", "SCHEMA_V1", "SCHEMA_VERSION", "migrate"]

# Version 1 of the schema, frozen: profiles written with it exist. Change it only through
# a new entry in MIGRATIONS.
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE prekeys (
    kind TEXT NOT NULL, key_id INTEGER NOT NULL, record BLOB NOT NULL,
    created INTEGER NOT NULL, PRIMARY KEY (kind, key_id));
CREATE TABLE contacts (
    account_id BLOB PRIMARY KEY, username TEXT NOT NULL, account_key BLOB NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0, key_changed INTEGER NOT NULL DEFAULT 0,
    previous_key BLOB, delivery_token BLOB, added INTEGER NOT NULL);
CREATE UNIQUE INDEX contacts_username ON contacts(username);
CREATE TABLE contact_devices (
    account_id BLOB NOT NULL REFERENCES contacts(account_id) ON DELETE CASCADE,
    device_id INTEGER NOT NULL, certificate BLOB NOT NULL,
    PRIMARY KEY (account_id, device_id));
CREATE TABLE sessions (
    account_id BLOB NOT NULL, device_id INTEGER NOT NULL, state BLOB NOT NULL,
    updated INTEGER NOT NULL, PRIMARY KEY (account_id, device_id));
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, message_uuid BLOB NOT NULL UNIQUE, peer BLOB NOT NULL,
    outgoing INTEGER NOT NULL, body TEXT NOT NULL, sent_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL, status TEXT NOT NULL);
CREATE INDEX messages_peer ON messages(peer, id);
CREATE TABLE processed (server_id BLOB PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE outbox (id INTEGER PRIMARY KEY, message_uuid BLOB NOT NULL, payload BLOB NOT NULL);
"""

#: ``MIGRATIONS[i]`` takes a database from schema version ``i + 1`` to ``i + 2``. Each
#: runs in one transaction together with the ``user_version`` bump. Append, never edit.
MIGRATIONS: tuple[str, ...] = (
    # 2: which of the peer's devices sent a message; a durable event log.
    """
    ALTER TABLE messages ADD COLUMN sender_device INTEGER;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL, at INTEGER NOT NULL);
    """,
    # 3: groups and sender keys, the account's other devices, disappearing messages,
    # attachments and deletions.
    """
    ALTER TABLE messages ADD COLUMN author BLOB;
    ALTER TABLE messages ADD COLUMN expires_at INTEGER;
    ALTER TABLE messages ADD COLUMN attachment BLOB;
    ALTER TABLE messages ADD COLUMN attachment_path TEXT;
    CREATE INDEX messages_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE own_devices (
        device_id INTEGER PRIMARY KEY, certificate BLOB, name TEXT NOT NULL,
        added INTEGER NOT NULL);
    CREATE TABLE revoked_devices (
        account_id BLOB NOT NULL, device_id INTEGER NOT NULL, revocation BLOB,
        PRIMARY KEY (account_id, device_id));
    CREATE TABLE groups (
        group_id BLOB PRIMARY KEY, state BLOB NOT NULL, name TEXT NOT NULL,
        member INTEGER NOT NULL DEFAULT 1, rotate INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL);
    CREATE TABLE sender_keys (
        group_id BLOB NOT NULL, account_id BLOB NOT NULL, device_id INTEGER NOT NULL,
        chain_id INTEGER NOT NULL, state BLOB NOT NULL, updated INTEGER NOT NULL,
        PRIMARY KEY (group_id, account_id, device_id, chain_id));
    CREATE TABLE own_sender_keys (group_id BLOB PRIMARY KEY, state BLOB NOT NULL);
    CREATE TABLE sender_key_shared (
        group_id BLOB NOT NULL, account_id BLOB NOT NULL, device_id INTEGER NOT NULL,
        chain_id INTEGER NOT NULL, PRIMARY KEY (group_id, account_id, device_id));
    CREATE TABLE timers (peer BLOB PRIMARY KEY, seconds INTEGER NOT NULL);
    CREATE TABLE tombstones (
        message_uuid BLOB PRIMARY KEY, author BLOB NOT NULL, at INTEGER NOT NULL);
    """,
    # 4: key-transparency alarms (the log key, newest head and monitor position are meta).
    """
    CREATE TABLE alarms (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL,
        detail TEXT NOT NULL, evidence BLOB NOT NULL, raised INTEGER NOT NULL,
        dismissed INTEGER NOT NULL DEFAULT 0, UNIQUE (kind, subject, detail));
    """,
    # 5: group-sealed envelopes name the sender chain by its envelope id; the members that
    # confirmed delivery of a group message this account sent (16-byte account ids).
    """
    ALTER TABLE sender_keys ADD COLUMN envelope_id BLOB;
    ALTER TABLE messages ADD COLUMN receipts BLOB;
    CREATE INDEX sender_keys_envelope ON sender_keys(envelope_id)
        WHERE envelope_id IS NOT NULL;
    """,
    # 6: key transparency: each looked-up account's newest log entry seen (a lookup that
    # goes back is refused), and gossiped heads the server has not yet proven consistent.
    """
    CREATE TABLE kt_pins (
        account_id BLOB PRIMARY KEY, username TEXT NOT NULL, sequence INTEGER NOT NULL,
        log_index INTEGER NOT NULL);
    CREATE TABLE kt_unproven (
        head BLOB PRIMARY KEY, source TEXT NOT NULL, first_failed INTEGER NOT NULL);
    """,
    # 7: a group's chain of signed states from its root (NULL: a group stored before
    # chains, or provisioned by another device: its state alone), and the newest version a
    # member's message named above this device's (0: none) with that member's account id.
    """
    ALTER TABLE groups ADD COLUMN chain BLOB;
    ALTER TABLE groups ADD COLUMN behind INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE groups ADD COLUMN behind_from BLOB;
    """,
    # 8: drop what nothing used: the sender device of a message (never written) and the
    # durable event log (never written nor read).
    """
    ALTER TABLE messages DROP COLUMN sender_device;
    DROP TABLE events;
    """,
    # 9: full-text search of message texts (FTS5, inside the encrypted database): an
    # index over messages.body kept by triggers, so every insert, edit and delete of a
    # message changes the index in the same transaction, whatever path made it. The
    # index holds no copy of the text (content='messages'); secure-delete makes a
    # deletion remove the message's terms from the index pages instead of marking them
    # deleted. The messages already there are indexed ('rebuild') in this step.
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        body, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2');
    INSERT INTO messages_fts(messages_fts, rank) VALUES ('secure-delete', 1);
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
    END;
    INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
    """,
    # 10: a message deleted for everyone or expired leaves a placeholder row: its text,
    # file and index entry go, its time and author stay, and ``gone`` says why
    # ('deleted' or 'expired'; NULL: a message as it was written).
    """
    ALTER TABLE messages ADD COLUMN gone TEXT;
    """,
    # 11: sends written while the server could not be reached, not yet encrypted: the
    # conversation and the content, to encrypt once it can be (never a key); their history
    # rows are in messages, QUEUED (sealpost.client.store.pending).
    """
    CREATE TABLE pending_sends (
        id INTEGER PRIMARY KEY, message_uuid BLOB NOT NULL UNIQUE, peer TEXT NOT NULL,
        group_id BLOB, content BLOB NOT NULL);
    """,
)
#: The schema version this code writes (``PRAGMA user_version`` of a current profile).
SCHEMA_VERSION = 1 + len(MIGRATIONS)


def _run_in_transaction(conn: Any, script: str, version: int) -> None:
    # executescript() commits any open transaction first, so BEGIN/COMMIT go in the script
    try:
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {int(version)};\nCOMMIT;"
        )
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def migrate(conn: Any, *, read_only: bool = False) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, one transaction per step."""
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if read_only and version != SCHEMA_VERSION:
            if version > SCHEMA_VERSION:
                raise UnsupportedSchema(version)
            raise ReadOnlyProfile("the profile must be opened writable once, to upgrade it")
        if version == 0:
            _run_in_transaction(conn, SCHEMA_V1, 1)
            version = 1
        if version > SCHEMA_VERSION:
            raise UnsupportedSchema(version)
        for step in range(version, SCHEMA_VERSION):
            _run_in_transaction(conn, MIGRATIONS[step - 1], step + 1)
    except sqlcipher.DatabaseError:
        raise CorruptProfile("the database schema could not be brought up to date") from None
