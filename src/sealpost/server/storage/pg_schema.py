"""The PostgreSQL schema of :class:`~sealpost.server.storage.postgres.PostgresStorage`, as
versioned migrations applied in order, each in its own transaction, under an advisory lock
(so several processes starting at once apply each migration once).

Tables follow the SQLite schema (:mod:`.sqlite`) with two changes for a shared database:

- ``device_queues`` keeps, per device, the last queue sequence number handed out, the
  queue's depth and the device's connection epoch. A send increments the first two in its
  own transaction (the row lock orders concurrent sends to one device, so sequence numbers
  are committed in increasing order and a reader never sees a later one before an earlier
  one), so queue order needs no global sequence and the depth check needs no ``COUNT(*)``.
  It is updated on every send and ack: it has no index but its primary key (so updates
  are HOT, heap-only) and half of each page is left free for them (``fillfactor = 50``).
- ``queue`` is keyed ``(account_id, device_id, seq)``: rows are inserted and deleted,
  never updated, so its only other indexes (message id, expiry) never see an update;
  autovacuum runs on it after 1% of its rows changed rather than 20%, without cost delay,
  because a relay's queue is mostly dead rows waiting to be vacuumed.

docs/OPERATIONS.md ("PostgreSQL") says the same for operators.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LOCK_LEADER", "LOCK_MIGRATE", "LOCK_PROCESSES", "MIGRATIONS"]

#: Advisory lock keys (one namespace for sealpost: 0x5EA1 in the high half).
LOCK_MIGRATE: Final = 0x5EA1_0001
LOCK_PROCESSES: Final = 0x5EA1_0002  # exclusive: a process without Redis; shared: with
LOCK_LEADER: Final = 0x5EA1_0003  # the process that signs tree heads and purges
LOCK_LOG: Final = 0x5EA1_0004  # (transaction lock) appends to the log, one at a time

_HOT_QUEUE: Final = (
    "autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01,"
    " autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0"
)

_V1: Final = f"""
CREATE TABLE accounts (
    account_id          bytea PRIMARY KEY,
    username_lower      text NOT NULL UNIQUE,
    username            text NOT NULL,
    account_key         bytea NOT NULL,
    delivery_token_hash bytea NOT NULL,
    sealed_from_anyone  boolean NOT NULL,
    created             bigint NOT NULL
);
CREATE TABLE devices (
    account_id  bytea NOT NULL REFERENCES accounts (account_id),
    device_id   bigint NOT NULL,
    certificate bytea NOT NULL,
    registered  bigint NOT NULL,
    PRIMARY KEY (account_id, device_id)
);
CREATE TABLE device_queues (
    account_id bytea NOT NULL,
    device_id  bigint NOT NULL,
    last_seq   bigint NOT NULL DEFAULT 0,
    depth      integer NOT NULL DEFAULT 0,
    bytes      bigint NOT NULL DEFAULT 0,
    epoch      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, device_id)
) WITH (fillfactor = 50, {_HOT_QUEUE});
CREATE TABLE signed_prekeys (
    account_id bytea NOT NULL,
    device_id  bigint NOT NULL,
    key_id     bigint NOT NULL,
    prekey     bytea NOT NULL,
    PRIMARY KEY (account_id, device_id)
);
CREATE TABLE one_time_prekeys (
    account_id bytea NOT NULL,
    device_id  bigint NOT NULL,
    key_id     bigint NOT NULL,
    prekey     bytea NOT NULL,
    PRIMARY KEY (account_id, device_id, key_id)
);
CREATE TABLE kem_prekeys (
    account_id bytea NOT NULL,
    device_id  bigint NOT NULL,
    kind       smallint NOT NULL,  -- 1 last resort (one per device), 2 one-time
    key_id     bigint NOT NULL,
    prekey     bytea NOT NULL,
    PRIMARY KEY (account_id, device_id, kind, key_id)
);
CREATE TABLE queue (
    account_id  bytea NOT NULL,
    device_id   bigint NOT NULL,
    seq         bigint NOT NULL,
    message_id  bytea NOT NULL UNIQUE,
    body        bytea NOT NULL,   -- the body, or with body_ref the prefix of a shared one
    received_at bigint NOT NULL,
    expires_at  bigint NOT NULL,
    body_ref    bigint,           -- shared_bodies.id: the message is body || that body
    size        integer NOT NULL, -- bytes the device receives (its queue's byte quota)
    PRIMARY KEY (account_id, device_id, seq)
) WITH ({_HOT_QUEUE}, toast.autovacuum_vacuum_scale_factor = 0.01,
        toast.autovacuum_vacuum_cost_delay = 0);
CREATE INDEX queue_by_expiry ON queue (expires_at);
-- One multi-recipient send's body, stored once; refs is updated on every ack of one of
-- its messages, so no index but the key, and room for HOT updates.
CREATE TABLE shared_bodies (
    id   bigserial PRIMARY KEY,
    body bytea NOT NULL,
    refs integer NOT NULL
) WITH (fillfactor = 70, {_HOT_QUEUE});
-- Whatever deletes a queued message (ack, purge, device removal) releases its shared body,
-- and the last one deletes it, in the same transaction.
CREATE FUNCTION queue_unref() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE shared_bodies SET refs = refs - 1 WHERE id = OLD.body_ref;
    DELETE FROM shared_bodies WHERE id = OLD.body_ref AND refs <= 0;
    RETURN NULL;
END $$;
CREATE TRIGGER queue_unref AFTER DELETE ON queue
    FOR EACH ROW WHEN (OLD.body_ref IS NOT NULL) EXECUTE FUNCTION queue_unref();
CREATE TABLE nonces (
    nonce      bytea PRIMARY KEY,
    expires_at bigint NOT NULL
) WITH ({_HOT_QUEUE});
CREATE INDEX nonces_by_expiry ON nonces (expires_at);
CREATE TABLE attachments (
    attachment_id bytea PRIMARY KEY,
    size          bigint NOT NULL,
    created       bigint NOT NULL,
    expires_at    bigint NOT NULL,
    owner         bytea NOT NULL DEFAULT ''::bytea  -- uploading account (its byte quota)
);
CREATE INDEX attachments_by_expiry ON attachments (expires_at);
CREATE INDEX attachments_by_owner ON attachments (owner, expires_at);
CREATE TABLE revocations (
    account_id bytea NOT NULL,
    device_id  bigint NOT NULL,
    revocation bytea NOT NULL,
    revoked    bigint NOT NULL,
    PRIMARY KEY (account_id, device_id)
);
CREATE TABLE log_entries (
    idx          bigint PRIMARY KEY,
    account_id   bytea NOT NULL,
    sequence     bigint NOT NULL,
    entry        bytea NOT NULL,
    certificates bytea NOT NULL,
    revocations  bytea NOT NULL,
    UNIQUE (account_id, sequence)
);
CREATE TABLE log_nodes (
    level integer NOT NULL,
    idx   bigint NOT NULL,
    hash  bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
-- The account map (sealpost.transparency.smt): leaves and node hashes, replaced in place
-- as accounts change (rarely: once per device change), so room for HOT updates.
CREATE TABLE kt_map_leaves (
    key   bytea PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE kt_map_nodes (
    depth  integer NOT NULL,
    prefix bytea NOT NULL,
    hash   bytea NOT NULL,
    PRIMARY KEY (depth, prefix)
) WITH (fillfactor = 70);
CREATE TABLE log_heads (
    tree_size bigint PRIMARY KEY,
    timestamp bigint NOT NULL,
    head      bytea NOT NULL
);
"""  # noqa: S608 (our own constants only)

#: A send and an ack each in one statement, so that a device's ``device_queues`` row is
#: locked only while that statement and its commit run, not across round trips to the
#: server process (bench/relay.py, N = 100: 184 msgs/s with the statements sent one by
#: one, the row lock waited for by most of the connections).
_V2: Final = """
-- Queue rows (account, device, message id, body or prefix, size), in the order given:
-- the devices' rows locked in sorted order, the quotas checked, each device's next
-- sequence numbers taken. 0: stored; 1: a device has no queue row (removed meanwhile);
-- 2: a queue would pass max_depth or max_bytes (nothing is changed for 1 or 2).
CREATE FUNCTION sealpost_enqueue(
    a bytea[], d bigint[], m bytea[], b bytea[], sz integer[], ref bigint,
    received bigint, expires bigint, max_depth integer, max_bytes bigint
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n_missing integer;
    n_full integer;
BEGIN
    PERFORM 1 FROM device_queues q
        JOIN (SELECT DISTINCT x.a, x.d FROM unnest(a, d) AS x(a, d)) v
        ON q.account_id = v.a AND q.device_id = v.d
        ORDER BY q.account_id, q.device_id FOR UPDATE OF q;
    SELECT count(*) FILTER (WHERE q.account_id IS NULL),
           count(*) FILTER (WHERE q.depth + v.n > max_depth
                            OR (max_bytes > 0 AND q.bytes + v.s > max_bytes))
        INTO n_missing, n_full
        FROM (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
              FROM unnest(a, d, sz) AS x(a, d, s) GROUP BY x.a, x.d) v
        LEFT JOIN device_queues q ON q.account_id = v.a AND q.device_id = v.d;
    IF n_missing > 0 THEN RETURN 1; END IF;
    IF n_full > 0 THEN RETURN 2; END IF;
    WITH v AS (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
               FROM unnest(a, d, sz) AS x(a, d, s) GROUP BY x.a, x.d),
         upd AS (UPDATE device_queues q
                 SET last_seq = q.last_seq + v.n, depth = q.depth + v.n, bytes = q.bytes + v.s
                 FROM v WHERE q.account_id = v.a AND q.device_id = v.d
                 RETURNING q.account_id, q.device_id, q.last_seq - v.n AS base)
    INSERT INTO queue (account_id, device_id, seq, message_id, body, size, received_at,
                       expires_at, body_ref)
    SELECT x.a, x.d, upd.base + row_number() OVER (PARTITION BY x.a, x.d ORDER BY x.i),
           x.m, x.b, x.s, received, expires, ref
    FROM unnest(a, d, m, b, sz) WITH ORDINALITY AS x(a, d, m, b, s, i)
    JOIN upd ON upd.account_id = x.a AND upd.device_id = x.d;
    RETURN 0;
END $$;
-- Delete a device's own messages; how many (-1, deleting nothing: ep is not its epoch).
CREATE FUNCTION sealpost_ack(acc bytea, dev bigint, ids bytea[], ep bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    cur_epoch bigint;
    n integer;
    total bigint;
BEGIN
    SELECT epoch INTO cur_epoch FROM device_queues
        WHERE account_id = acc AND device_id = dev FOR UPDATE;
    IF NOT FOUND THEN RETURN 0; END IF;
    IF ep IS NOT NULL AND cur_epoch <> ep THEN RETURN -1; END IF;
    WITH gone AS (DELETE FROM queue WHERE account_id = acc AND device_id = dev
                  AND message_id = ANY(ids) RETURNING size)
    SELECT count(*), COALESCE(sum(size), 0) INTO n, total FROM gone;
    IF n > 0 THEN
        UPDATE device_queues SET depth = depth - n, bytes = bytes - total
            WHERE account_id = acc AND device_id = dev;
    END IF;
    RETURN n;
END $$;
"""

#: 3: invites (codes as hashes) and removed accounts (their names' quarantine), for
#: registration modes and ``sealpost admin``.
_V3: Final = """
CREATE TABLE invites (
    invite_id  text PRIMARY KEY,
    code_hash  bytea NOT NULL,
    uses_left  integer NOT NULL,
    uses       integer NOT NULL DEFAULT 0,
    created    bigint NOT NULL,
    expires_at bigint NOT NULL,  -- 0: never
    revoked    boolean NOT NULL DEFAULT false
);
CREATE TABLE account_removals (
    seq            bigserial PRIMARY KEY,
    account_id     bytea NOT NULL,
    username_lower text NOT NULL,
    log_index      bigint NOT NULL,   -- its DeletionEntry
    cause          smallint NOT NULL,
    removed_at     bigint NOT NULL,
    free_at        bigint NOT NULL,   -- the name may be registered again from then on
    audited        boolean NOT NULL DEFAULT false
);
CREATE INDEX removals_by_name ON account_removals (username_lower, seq);
"""

#: 4: a group commit (:mod:`.pg_batch`): the sends and acks that arrived while the previous
#: batch committed, in one statement and one transaction, so that they share one WAL flush
#: (bench/relay.py, N = 100: 501 msgs/s with a transaction per send and per ack).
_V4: Final = """
-- Queue rows (account, device, message id, body, size, received, expires: one per envelope,
-- in the order the sends came) and acks (op number, account, device, message id, epoch or
-- NULL: one per message id). Every device row either touches is locked first, in one
-- sorted pass (so concurrent batches, on any process, never deadlock on them). status 0:
-- done; 1: a send's device has no queue row (removed meanwhile), 2: a queue would pass
-- max_depth or max_bytes; for 1 and 2 nothing is changed (the caller runs each operation
-- on its own to learn which). seqs: each envelope's sequence number, in order. stale: the
-- ack ops whose epoch is not their device's (they delete nothing). acked: the op number of
-- each message deleted.
CREATE FUNCTION sealpost_batch(
    a bytea[], d bigint[], m bytea[], b bytea[], sz integer[], rcv bigint[], xp bigint[],
    max_depth integer, max_bytes bigint,
    ack_op integer[], ack_a bytea[], ack_d bigint[], ack_m bytea[], ack_ep bigint[],
    OUT status integer, OUT seqs bigint[], OUT stale integer[], OUT acked integer[]
) LANGUAGE plpgsql AS $$
DECLARE
    n_missing integer;
    n_full integer;
BEGIN
    PERFORM 1 FROM device_queues q
        JOIN (SELECT x.a, x.d FROM unnest(a, d) AS x(a, d)
              UNION SELECT y.a, y.d FROM unnest(ack_a, ack_d) AS y(a, d)) v
        ON q.account_id = v.a AND q.device_id = v.d
        ORDER BY q.account_id, q.device_id FOR UPDATE OF q;
    SELECT count(*) FILTER (WHERE q.account_id IS NULL),
           count(*) FILTER (WHERE q.depth + v.n > max_depth
                            OR (max_bytes > 0 AND q.bytes + v.s > max_bytes))
        INTO n_missing, n_full
        FROM (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
              FROM unnest(a, d, sz) AS x(a, d, s) GROUP BY x.a, x.d) v
        LEFT JOIN device_queues q ON q.account_id = v.a AND q.device_id = v.d;
    seqs := '{}';
    stale := '{}';
    acked := '{}';
    IF n_missing > 0 THEN status := 1; RETURN; END IF;
    IF n_full > 0 THEN status := 2; RETURN; END IF;
    status := 0;
    IF cardinality(a) > 0 THEN
        WITH v AS (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
                   FROM unnest(a, d, sz) AS x(a, d, s) GROUP BY x.a, x.d),
             upd AS (UPDATE device_queues q
                     SET last_seq = q.last_seq + v.n, depth = q.depth + v.n,
                         bytes = q.bytes + v.s
                     FROM v WHERE q.account_id = v.a AND q.device_id = v.d
                     RETURNING q.account_id, q.device_id, q.last_seq - v.n AS base),
             r AS (SELECT x.*, upd.base + row_number()
                              OVER (PARTITION BY x.a, x.d ORDER BY x.i) AS seq
                   FROM unnest(a, d, m, b, sz, rcv, xp) WITH ORDINALITY
                        AS x(a, d, m, b, s, rc, ex, i)
                   JOIN upd ON upd.account_id = x.a AND upd.device_id = x.d),
             ins AS (INSERT INTO queue (account_id, device_id, seq, message_id, body, size,
                                        received_at, expires_at)
                     SELECT r.a, r.d, r.seq, r.m, r.b, r.s, r.rc, r.ex FROM r)
        SELECT array_agg(r.seq ORDER BY r.i) INTO seqs FROM r;
    END IF;
    IF cardinality(ack_op) > 0 THEN
        SELECT COALESCE(array_agg(DISTINCT y.o), '{}') INTO stale
            FROM unnest(ack_op, ack_a, ack_d, ack_ep) AS y(o, a, d, e)
            JOIN device_queues q ON q.account_id = y.a AND q.device_id = y.d
            WHERE y.e IS NOT NULL AND q.epoch <> y.e;
        WITH gone AS (DELETE FROM queue q
                      USING unnest(ack_op, ack_a, ack_d, ack_m) AS y(o, a, d, m)
                      WHERE q.message_id = y.m AND q.account_id = y.a AND q.device_id = y.d
                        AND y.o <> ALL (stale)
                      RETURNING y.o, q.account_id, q.device_id, q.size),
             lower AS (UPDATE device_queues q
                       SET depth = q.depth - g.n, bytes = q.bytes - g.s
                       FROM (SELECT gone.account_id, gone.device_id, count(*) AS n,
                                    sum(gone.size) AS s
                             FROM gone GROUP BY 1, 2) g
                       WHERE q.account_id = g.account_id AND q.device_id = g.device_id)
        SELECT COALESCE(array_agg(gone.o), '{}') INTO acked FROM gone;
    END IF;
END $$;
"""

#: 5: sends are idempotent on their message ids (derived from the sender's send id and the
#: device, :mod:`sealpost.protocol.send_id`): an envelope whose message id is already queued,
#: or earlier in the same call, is left out (not inserted, not counted against the quotas;
#: ``sealpost_batch`` gives it seq 0). Checked after the device rows are locked: a message id
#: names one device, so two processes storing the same resend take turns on that row, and
#: the second sees the first's row. The check is a probe of the unique message id index
#: there already: no new index.
_V5: Final = """
CREATE OR REPLACE FUNCTION sealpost_enqueue(
    a bytea[], d bigint[], m bytea[], b bytea[], sz integer[], ref bigint,
    received bigint, expires bigint, max_depth integer, max_bytes bigint
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n_missing integer;
    n_full integer;
    n_new integer;
    keep boolean[];
BEGIN
    PERFORM 1 FROM device_queues q
        JOIN (SELECT DISTINCT x.a, x.d FROM unnest(a, d) AS x(a, d)) v
        ON q.account_id = v.a AND q.device_id = v.d
        ORDER BY q.account_id, q.device_id FOR UPDATE OF q;
    SELECT COALESCE(array_agg(k.fresh ORDER BY k.i), '{}') INTO keep
        FROM (SELECT x.i, x.i = min(x.i) OVER (PARTITION BY x.m)
                          AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = x.m)
                          AS fresh
              FROM unnest(m) WITH ORDINALITY AS x(m, i)) k;
    SELECT count(*) FILTER (WHERE q.account_id IS NULL),
           count(*) FILTER (WHERE q.depth + v.n > max_depth
                            OR (max_bytes > 0 AND q.bytes + v.s > max_bytes))
        INTO n_missing, n_full
        FROM (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
              FROM unnest(a, d, sz, keep) AS x(a, d, s, k) WHERE x.k GROUP BY x.a, x.d) v
        LEFT JOIN device_queues q ON q.account_id = v.a AND q.device_id = v.d;
    IF n_missing > 0 THEN RETURN 1; END IF;
    IF n_full > 0 THEN RETURN 2; END IF;
    WITH v AS (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
               FROM unnest(a, d, sz, keep) AS x(a, d, s, k) WHERE x.k GROUP BY x.a, x.d),
         upd AS (UPDATE device_queues q
                 SET last_seq = q.last_seq + v.n, depth = q.depth + v.n, bytes = q.bytes + v.s
                 FROM v WHERE q.account_id = v.a AND q.device_id = v.d
                 RETURNING q.account_id, q.device_id, q.last_seq - v.n AS base)
    INSERT INTO queue (account_id, device_id, seq, message_id, body, size, received_at,
                       expires_at, body_ref)
    SELECT x.a, x.d, upd.base + row_number() OVER (PARTITION BY x.a, x.d ORDER BY x.i),
           x.m, x.b, x.s, received, expires, ref
    FROM unnest(a, d, m, b, sz, keep) WITH ORDINALITY AS x(a, d, m, b, s, k, i)
    JOIN upd ON upd.account_id = x.a AND upd.device_id = x.d
    WHERE x.k;
    IF ref IS NOT NULL THEN  -- the shared body: referenced by the messages stored
        SELECT count(*) INTO n_new FROM unnest(keep) AS k(k) WHERE k.k;
        IF n_new = 0 THEN
            DELETE FROM shared_bodies WHERE id = ref;
        ELSE
            UPDATE shared_bodies SET refs = n_new WHERE id = ref AND refs <> n_new;
        END IF;
    END IF;
    RETURN 0;
END $$;
CREATE OR REPLACE FUNCTION sealpost_batch(
    a bytea[], d bigint[], m bytea[], b bytea[], sz integer[], rcv bigint[], xp bigint[],
    max_depth integer, max_bytes bigint,
    ack_op integer[], ack_a bytea[], ack_d bigint[], ack_m bytea[], ack_ep bigint[],
    OUT status integer, OUT seqs bigint[], OUT stale integer[], OUT acked integer[]
) LANGUAGE plpgsql AS $$
DECLARE
    n_missing integer;
    n_full integer;
    keep boolean[];
BEGIN
    PERFORM 1 FROM device_queues q
        JOIN (SELECT x.a, x.d FROM unnest(a, d) AS x(a, d)
              UNION SELECT y.a, y.d FROM unnest(ack_a, ack_d) AS y(a, d)) v
        ON q.account_id = v.a AND q.device_id = v.d
        ORDER BY q.account_id, q.device_id FOR UPDATE OF q;
    SELECT COALESCE(array_agg(k.fresh ORDER BY k.i), '{}') INTO keep
        FROM (SELECT x.i, x.i = min(x.i) OVER (PARTITION BY x.m)
                          AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = x.m)
                          AS fresh
              FROM unnest(m) WITH ORDINALITY AS x(m, i)) k;
    SELECT count(*) FILTER (WHERE q.account_id IS NULL),
           count(*) FILTER (WHERE q.depth + v.n > max_depth
                            OR (max_bytes > 0 AND q.bytes + v.s > max_bytes))
        INTO n_missing, n_full
        FROM (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
              FROM unnest(a, d, sz, keep) AS x(a, d, s, k) WHERE x.k GROUP BY x.a, x.d) v
        LEFT JOIN device_queues q ON q.account_id = v.a AND q.device_id = v.d;
    seqs := '{}';
    stale := '{}';
    acked := '{}';
    IF n_missing > 0 THEN status := 1; RETURN; END IF;
    IF n_full > 0 THEN status := 2; RETURN; END IF;
    status := 0;
    IF cardinality(a) > 0 THEN
        WITH v AS (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
                   FROM unnest(a, d, sz, keep) AS x(a, d, s, k) WHERE x.k
                   GROUP BY x.a, x.d),
             upd AS (UPDATE device_queues q
                     SET last_seq = q.last_seq + v.n, depth = q.depth + v.n,
                         bytes = q.bytes + v.s
                     FROM v WHERE q.account_id = v.a AND q.device_id = v.d
                     RETURNING q.account_id, q.device_id, q.last_seq - v.n AS base),
             r AS (SELECT x.*, upd.base + row_number()
                              OVER (PARTITION BY x.a, x.d ORDER BY x.i) AS seq
                   FROM unnest(a, d, m, b, sz, rcv, xp, keep) WITH ORDINALITY
                        AS x(a, d, m, b, s, rc, ex, k, i)
                   JOIN upd ON upd.account_id = x.a AND upd.device_id = x.d
                   WHERE x.k),
             ins AS (INSERT INTO queue (account_id, device_id, seq, message_id, body, size,
                                        received_at, expires_at)
                     SELECT r.a, r.d, r.seq, r.m, r.b, r.s, r.rc, r.ex FROM r)
        SELECT array_agg(COALESCE(r.seq, 0) ORDER BY o.i) INTO seqs
            FROM generate_subscripts(a, 1) AS o(i) LEFT JOIN r ON r.i = o.i;
    END IF;
    IF cardinality(ack_op) > 0 THEN
        SELECT COALESCE(array_agg(DISTINCT y.o), '{}') INTO stale
            FROM unnest(ack_op, ack_a, ack_d, ack_ep) AS y(o, a, d, e)
            JOIN device_queues q ON q.account_id = y.a AND q.device_id = y.d
            WHERE y.e IS NOT NULL AND q.epoch <> y.e;
        WITH gone AS (DELETE FROM queue q
                      USING unnest(ack_op, ack_a, ack_d, ack_m) AS y(o, a, d, m)
                      WHERE q.message_id = y.m AND q.account_id = y.a AND q.device_id = y.d
                        AND y.o <> ALL (stale)
                      RETURNING y.o, q.account_id, q.device_id, q.size),
             lower AS (UPDATE device_queues q
                       SET depth = q.depth - g.n, bytes = q.bytes - g.s
                       FROM (SELECT gone.account_id, gone.device_id, count(*) AS n,
                                    sum(gone.size) AS s
                             FROM gone GROUP BY 1, 2) g
                       WHERE q.account_id = g.account_id AND q.device_id = g.device_id)
        SELECT COALESCE(array_agg(gone.o), '{}') INTO acked FROM gone;
    END IF;
END $$;
"""

#: 6: sends are fenced as acks are (issue 16): a send on a device's ``/v1/stream`` carries
#: that connection's epoch, and ``sealpost_batch`` stores it only if the epoch is still the
#: sending device's, checked in the batch's own transaction after the sender's
#: ``device_queues`` row is locked with the others (one sorted pass), so a
#: :func:`~.pg_queue.claim_device` that committed first is seen, and one that comes later
#: waits for the batch. A stale send is left out of the batch (``seqs``: -1 for each of its
#: envelopes, which count against no quota and make no message id seen) and the others are
#: stored. The epoch is read from the row the batch locks by its primary key: no index.
#: A new overload with three more arrays (CREATE OR REPLACE cannot add arguments), so the
#: 14-argument one stays, unchanged, for a process of the previous version still running
#: while another upgrades (its sends unfenced, as before).
_V6: Final = """
-- fa, fd, fe: per queue row, the sending device (account, device) and the epoch of the
-- connection the send came on, or NULLs for a send with no connection (sealed, HTTP).
CREATE FUNCTION sealpost_batch(
    a bytea[], d bigint[], m bytea[], b bytea[], sz integer[], rcv bigint[], xp bigint[],
    fa bytea[], fd bigint[], fe bigint[],
    max_depth integer, max_bytes bigint,
    ack_op integer[], ack_a bytea[], ack_d bigint[], ack_m bytea[], ack_ep bigint[],
    OUT status integer, OUT seqs bigint[], OUT stale integer[], OUT acked integer[]
) LANGUAGE plpgsql AS $$
DECLARE
    n_missing integer;
    n_full integer;
    fenced integer[];
    keep boolean[];
BEGIN
    PERFORM 1 FROM device_queues q
        JOIN (SELECT x.a, x.d FROM unnest(a, d) AS x(a, d)
              UNION SELECT f.a, f.d FROM unnest(fa, fd) AS f(a, d) WHERE f.a IS NOT NULL
              UNION SELECT y.a, y.d FROM unnest(ack_a, ack_d) AS y(a, d)) v
        ON q.account_id = v.a AND q.device_id = v.d
        ORDER BY q.account_id, q.device_id FOR UPDATE OF q;
    -- The rows of sends whose epoch is not their sender's (or whose sender is gone).
    SELECT COALESCE(array_agg(f.i), '{}') INTO fenced
        FROM unnest(fa, fd, fe) WITH ORDINALITY AS f(a, d, e, i)
        LEFT JOIN device_queues q ON q.account_id = f.a AND q.device_id = f.d
        WHERE f.e IS NOT NULL AND q.epoch IS DISTINCT FROM f.e;
    SELECT COALESCE(array_agg(k.i <> ALL (fenced) AND k.fresh ORDER BY k.i), '{}') INTO keep
        FROM (SELECT x.i, x.i = min(x.i) FILTER (WHERE x.i <> ALL (fenced))
                                OVER (PARTITION BY x.m)
                          AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = x.m)
                          AS fresh
              FROM unnest(m) WITH ORDINALITY AS x(m, i)) k;
    SELECT count(*) FILTER (WHERE q.account_id IS NULL),
           count(*) FILTER (WHERE q.depth + v.n > max_depth
                            OR (max_bytes > 0 AND q.bytes + v.s > max_bytes))
        INTO n_missing, n_full
        FROM (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
              FROM unnest(a, d, sz, keep) AS x(a, d, s, k) WHERE x.k GROUP BY x.a, x.d) v
        LEFT JOIN device_queues q ON q.account_id = v.a AND q.device_id = v.d;
    seqs := '{}';
    stale := '{}';
    acked := '{}';
    IF n_missing > 0 THEN status := 1; RETURN; END IF;
    IF n_full > 0 THEN status := 2; RETURN; END IF;
    status := 0;
    IF cardinality(a) > 0 THEN
        WITH v AS (SELECT x.a, x.d, count(*) AS n, sum(x.s) AS s
                   FROM unnest(a, d, sz, keep) AS x(a, d, s, k) WHERE x.k
                   GROUP BY x.a, x.d),
             upd AS (UPDATE device_queues q
                     SET last_seq = q.last_seq + v.n, depth = q.depth + v.n,
                         bytes = q.bytes + v.s
                     FROM v WHERE q.account_id = v.a AND q.device_id = v.d
                     RETURNING q.account_id, q.device_id, q.last_seq - v.n AS base),
             r AS (SELECT x.*, upd.base + row_number()
                              OVER (PARTITION BY x.a, x.d ORDER BY x.i) AS seq
                   FROM unnest(a, d, m, b, sz, rcv, xp, keep) WITH ORDINALITY
                        AS x(a, d, m, b, s, rc, ex, k, i)
                   JOIN upd ON upd.account_id = x.a AND upd.device_id = x.d
                   WHERE x.k),
             ins AS (INSERT INTO queue (account_id, device_id, seq, message_id, body, size,
                                        received_at, expires_at)
                     SELECT r.a, r.d, r.seq, r.m, r.b, r.s, r.rc, r.ex FROM r)
        SELECT array_agg(CASE WHEN o.i = ANY (fenced) THEN -1 ELSE COALESCE(r.seq, 0) END
                         ORDER BY o.i) INTO seqs
            FROM generate_subscripts(a, 1) AS o(i) LEFT JOIN r ON r.i = o.i;
    END IF;
    IF cardinality(ack_op) > 0 THEN
        SELECT COALESCE(array_agg(DISTINCT y.o), '{}') INTO stale
            FROM unnest(ack_op, ack_a, ack_d, ack_ep) AS y(o, a, d, e)
            JOIN device_queues q ON q.account_id = y.a AND q.device_id = y.d
            WHERE y.e IS NOT NULL AND q.epoch <> y.e;
        WITH gone AS (DELETE FROM queue q
                      USING unnest(ack_op, ack_a, ack_d, ack_m) AS y(o, a, d, m)
                      WHERE q.message_id = y.m AND q.account_id = y.a AND q.device_id = y.d
                        AND y.o <> ALL (stale)
                      RETURNING y.o, q.account_id, q.device_id, q.size),
             lower AS (UPDATE device_queues q
                       SET depth = q.depth - g.n, bytes = q.bytes - g.s
                       FROM (SELECT gone.account_id, gone.device_id, count(*) AS n,
                                    sum(gone.size) AS s
                             FROM gone GROUP BY 1, 2) g
                       WHERE q.account_id = g.account_id AND q.device_id = g.device_id)
        SELECT COALESCE(array_agg(gone.o), '{}') INTO acked FROM gone;
    END IF;
END $$;
"""

#: 7: the deployment's public keys (:mod:`.pg_keys`), recorded by the first process to open
#: the database and compared by every process at start-up, so that one started with another
#: data directory refuses to serve (and, leading, to sign tree heads with) keys no client
#: pinned. One row: its key is a constant. Public keys only; nothing about any secret.
_V7: Final = """
CREATE TABLE server_keys (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    server_key bytea NOT NULL,  -- public half of DATA/server_key
    log_key    bytea NOT NULL,  -- public half of DATA/log_key
    recorded   bigint NOT NULL  -- Unix time, seconds
);
"""

#: 8: device-link channels shared by every process (issue 16's audit: the new device's
#: socket, the key fetch and the provisioning PUT each reach any process), see
#: :mod:`sealpost.server.links.shared`. A row is a channel in flight: the new device's
#: public ML-KEM key, its two deadlines (on the database's clock, so that every process
#: judges them alike), whether a device of the account fetched the key, the provisioning
#: body once PUT (end-to-end encrypted to the new device: opaque here) and whether it was
#: delivered (the body is then set NULL at once). Rows are deleted when the link ends, and
#: by the leader's purge once past ``deadline`` (a process that died with channels open).
#: No index but the key: the table holds the channels open now, a few thousand at most.
_V8: Final = """
CREATE TABLE link_channels (
    channel_id   bytea PRIMARY KEY,
    kem          bytea NOT NULL,
    key_deadline timestamptz NOT NULL,
    deadline     timestamptz NOT NULL,
    fetched      boolean NOT NULL DEFAULT false,
    body         bytea,
    delivered    boolean NOT NULL DEFAULT false
);
"""

#: ``(version, SQL)``, applied in order; a released migration is never edited.
MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (1, _V1),
    (2, _V2),
    (3, _V3),
    (4, _V4),
    (5, _V5),
    (6, _V6),
    (7, _V7),
    (8, _V8),
)
