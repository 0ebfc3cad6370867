"""Every process on one database serves the same keys (issue 16).

Each ``sealpost server`` process loads its keys from its own ``--data`` directory, so a
process started with the wrong directory (not mounted, another machine's) would serve
another server key and another log key, and, leading, sign tree heads with a key no client
pinned: every client and auditor would see a key change (a key-transparency alarm for
every user). So the database records the deployment's public keys, and every process
checks its own against them at :meth:`~.postgres.PostgresStorage.open`, before it takes
any lock (it never leads, never serves):

- the first process to open a database records its keys (migration 7's one-row
  ``server_keys``; ``INSERT ... ON CONFLICT DO NOTHING``, so of two first processes one
  inserts and the other's insert waits for it, then does nothing);
- every process then reads the row (a statement of its own, which sees the committed row)
  and refuses to start, with :class:`KeyMismatch` naming the key that differs, if its own
  are not those;
- a database that had no row yet but has signed tree heads (one from before migration 7)
  is recorded only by a process whose log key verifies the latest of them, so the first
  process after the upgrade cannot record a foreign key for all the others;
- ``sealpost admin accounts remove``, which signs a deletion entry with the log key of its
  own ``--data``, checks that key the same way first (:func:`check_log_key`, recording
  nothing).

Only public keys are stored. The third secret of a deployment, the rate-limit buckets' HMAC
key, is derived from the server key (:func:`~sealpost.server.ratelimit_redis.limiter_secret`):
the same server key means the same HMAC key, so nothing about it is stored, not even a hash
of it (which would let whoever reads the database test guesses of it).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import asyncpg

from sealpost._errors import BadSignature, DecodeError
from sealpost.crypto.sign import VerifyKey
from sealpost.server.storage.pg_cluster import ClusterError
from sealpost.transparency.log import SignedTreeHead

__all__ = ["DeploymentKeys", "KeyMismatch", "check_keys", "check_log_key"]


@dataclass(frozen=True, slots=True)
class DeploymentKeys:
    """The public halves of this process's keys (32 raw bytes each)."""

    server_key: bytes  # DATA/server_key: signs sender certificates
    log_key: bytes  # DATA/log_key: signs the key-transparency log's tree heads


class KeyMismatch(ClusterError):
    """This process's keys are not the ones the database's other processes serve."""


_NAMES = {"server_key": "server key", "log_key": "log key"}


async def check_keys(conn: asyncpg.Connection, keys: DeploymentKeys) -> None:
    """Record ``keys`` if the database has none yet; raise :class:`KeyMismatch` if it has
    others. Writes nothing when it raises."""
    recorded = await _recorded(conn)
    if recorded is None:
        await _check_heads(conn, keys.log_key)
        await conn.execute(
            "INSERT INTO server_keys (server_key, log_key, recorded) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            keys.server_key,
            keys.log_key,
            int(time.time()),
        )
        recorded = await _recorded(conn)  # ours, or that of a process that came first
        assert recorded is not None
    differs = [
        f"the {_NAMES[name]} in DATA/{name} is {_b64(mine)}, the database's {_b64(theirs)}"
        for name, mine, theirs in zip(
            _NAMES, (keys.server_key, keys.log_key), recorded, strict=True
        )
        if mine != theirs
    ]
    if differs:
        raise KeyMismatch("; ".join(differs) + _WHAT_TO_DO)


async def check_log_key(conn: asyncpg.Connection, log_key: bytes) -> None:
    """Raise :class:`KeyMismatch` unless ``log_key`` is the deployment's: the recorded one,
    or with none recorded the signer of the newest tree head (if any). Writes nothing:
    for ``sealpost admin``, which signs deletion entries with the log key of its --data."""
    recorded = await _recorded(conn)
    if recorded is None:
        await _check_heads(conn, log_key)
    elif recorded[1] != log_key:
        raise KeyMismatch(
            f"the log key in DATA/log_key is {_b64(log_key)}, the database's"
            f" {_b64(recorded[1])}" + _WHAT_TO_DO
        )


_WHAT_TO_DO = (
    ". This process's --data directory is not the one the other processes on this database"
    " use: mount the shared data directory, or copy server_key and log_key from it into"
    ' --data (mode 0600), then try again (docs/OPERATIONS.md, "Several processes")'
)


async def _recorded(conn: asyncpg.Connection) -> tuple[bytes, bytes] | None:
    row = await conn.fetchrow("SELECT server_key, log_key FROM server_keys")
    return None if row is None else (bytes(row["server_key"]), bytes(row["log_key"]))


async def _check_heads(conn: asyncpg.Connection, log_key: bytes) -> None:
    """A database from before migration 7 records no keys, but its latest tree head (if
    any) was signed by the deployment's log key: the first process to record keys must
    hold that key, or it would record a foreign one for all the others."""
    head = await conn.fetchval("SELECT head FROM log_heads ORDER BY tree_size DESC LIMIT 1")
    if head is None:
        return
    try:
        SignedTreeHead.decode(bytes(head)).verify(VerifyKey.from_public_bytes(log_key))
    except (DecodeError, BadSignature):
        raise KeyMismatch(
            f"the log key in DATA/log_key, {_b64(log_key)}, did not sign the database's"
            " latest tree head" + _WHAT_TO_DO
        ) from None


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()
