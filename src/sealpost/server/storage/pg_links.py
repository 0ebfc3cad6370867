"""Device-link channels in PostgreSQL (``link_channels``, migration 8), for several processes
serving one database: the rows behind :class:`sealpost.server.links.shared.SharedLinks`.

Each method is one transaction on the row of one channel (its primary key), so two
processes acting on a channel at once are ordered by its row lock (but
:meth:`PgLinks.link_answered`, one read of many channels' rows, changing none):

- :meth:`PgLinks.link_key` marks the key fetched only while the channel is alive, and
  :meth:`PgLinks.link_expire` (the new device's process, at the deadline it keeps) ends it
  only if it was not; whichever commits first decides, so a fetch that the GET answered
  always extends the channel, and a channel that expired never answers a fetch.
- :meth:`PgLinks.link_answer` takes the first body only: a second PUT, on any process,
  finds it (or the delivered flag) and is refused.

A channel is alive while ``now()`` (the database's clock, one clock for every process) is
before its ``key_deadline`` until the key is fetched, then before its ``deadline``. What is
stored is public or opaque: the new device's public KEM key and the provisioning body,
sealed to that device; the body is set NULL once delivered.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from sealpost.server.storage.pg_core import Conn, PgCore

__all__ = ["LinkAnswer", "LinkRow", "PgLinks"]


class LinkAnswer(enum.Enum):
    """What :meth:`PgLinks.link_answer` did."""

    STORED = "stored"
    UNKNOWN = "unknown"  # no such channel, or it expired
    ANSWERED = "answered"  # a body was PUT already


@dataclass(frozen=True, slots=True)
class LinkRow:
    """A channel's state as its two waiters read it."""

    fetched: bool
    body: bytes | None = field(repr=False)
    delivered: bool


class PgLinks(PgCore):
    """Device-link channels."""

    async def link_open(self, channel_id: bytes, kem: bytes, *, key_ttl: float, ttl: float) -> None:
        """A new channel, alive ``key_ttl`` seconds until its key is fetched, ``ttl`` from
        now at most (``key_ttl`` is at most ``ttl``)."""

        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO link_channels (channel_id, kem, key_deadline, deadline)"
                " VALUES ($1, $2, now() + make_interval(secs => $3),"
                " now() + make_interval(secs => $4))",
                channel_id,
                kem,
                float(min(key_ttl, ttl)),
                float(ttl),
            )

        await self._tx(op, transaction=False)

    async def link_key(self, channel_id: bytes) -> bytes | None:
        """The channel's KEM key, marked fetched (it may now live until ``deadline``);
        ``None`` if it is unknown or expired."""

        async def op(conn: Conn) -> bytes | None:
            kem = await conn.fetchval(
                "UPDATE link_channels SET fetched = true WHERE channel_id = $1"
                " AND CASE WHEN fetched THEN deadline ELSE key_deadline END > now()"  # alive
                " RETURNING kem",
                channel_id,
            )
            return None if kem is None else bytes(kem)

        return await self._tx(op, transaction=False)

    async def link_answer(self, channel_id: bytes, body: bytes) -> LinkAnswer:
        """Keep the provisioning ``body`` for the channel, unless it is unknown or expired
        or was answered already (then nothing changes)."""

        async def op(conn: Conn) -> LinkAnswer:
            answered = await conn.fetchval(
                "SELECT body IS NOT NULL OR delivered FROM link_channels"
                " WHERE channel_id = $1"
                " AND CASE WHEN fetched THEN deadline ELSE key_deadline END > now()"  # alive
                " FOR UPDATE",
                channel_id,
            )
            if answered is None:
                return LinkAnswer.UNKNOWN
            if answered:
                return LinkAnswer.ANSWERED
            await conn.execute(
                "UPDATE link_channels SET body = $2 WHERE channel_id = $1", channel_id, body
            )
            return LinkAnswer.STORED

        return await self._tx(op)

    async def link_state(self, channel_id: bytes) -> LinkRow | None:
        """The channel as it is now; ``None`` once it was deleted."""

        async def op(conn: Conn) -> LinkRow | None:
            row = await conn.fetchrow(
                "SELECT fetched, body, delivered FROM link_channels WHERE channel_id = $1",
                channel_id,
            )
            if row is None:
                return None
            return LinkRow(row[0], None if row[1] is None else bytes(row[1]), row[2])

        return await self._tx(op, transaction=False)

    async def link_answered(self, channel_ids: Sequence[bytes]) -> list[bytes]:
        """Those of ``channel_ids`` whose body was PUT and not yet delivered: one query
        for every channel a process waits on."""

        async def op(conn: Conn) -> list[bytes]:
            rows = await conn.fetch(
                "SELECT channel_id FROM link_channels"
                " WHERE channel_id = ANY($1::bytea[]) AND body IS NOT NULL",
                list(channel_ids),
            )
            return [bytes(row[0]) for row in rows]

        return await self._tx(op, transaction=False)

    async def link_delivery(self, channel_id: bytes) -> bool | None:
        """Whether the channel's body was delivered; ``None`` once it was deleted."""

        async def op(conn: Conn) -> bool | None:
            delivered = await conn.fetchval(
                "SELECT delivered FROM link_channels WHERE channel_id = $1", channel_id
            )
            return None if delivered is None else bool(delivered)

        return await self._tx(op, transaction=False)

    async def link_expire(self, channel_id: bytes, *, fetched_too: bool) -> bool:
        """End a channel that reached a deadline of its new device's process: delete it if
        nobody answered it and (unless ``fetched_too``) nobody fetched its key; whether
        it was deleted (if not, a fetch or a body came first: read it again)."""

        async def op(conn: Conn) -> bool:
            gone = await conn.fetchval(
                "DELETE FROM link_channels WHERE channel_id = $1 AND body IS NULL"
                " AND NOT delivered AND (NOT fetched OR $2) RETURNING true",
                channel_id,
                fetched_too,
            )
            return bool(gone)

        return await self._tx(op, transaction=False)

    async def link_delivered(self, channel_id: bytes) -> None:
        """The body was written to the new device's socket and the socket closed: drop the
        body and say so to the PUT's process."""

        async def op(conn: Conn) -> None:
            await conn.execute(
                "UPDATE link_channels SET body = NULL, delivered = true WHERE channel_id = $1",
                channel_id,
            )

        await self._tx(op, transaction=False)

    async def link_drop(self, channel_id: bytes) -> None:
        """Delete the channel (the link ended, delivered or not)."""

        async def op(conn: Conn) -> None:
            await conn.execute("DELETE FROM link_channels WHERE channel_id = $1", channel_id)

        await self._tx(op, transaction=False)
