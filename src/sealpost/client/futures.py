"""The futures a queued send is settled through (:class:`~sealpost.client.rows.Outgoing`):
one its caller awaits, or a quiet one nobody awaits (a control message: a sender-key
distribution, a group chain, a state request), whose failure is logged."""

from __future__ import annotations

import asyncio
import logging

from sealpost.client.records import Message

__all__ = ["future", "quiet_future"]

log = logging.getLogger("sealpost.client")


def future() -> asyncio.Future[Message | None]:
    return asyncio.get_running_loop().create_future()


def quiet_future() -> asyncio.Future[Message | None]:
    """A future nobody awaits (a sender-key distribution's): its failure is logged."""
    out = future()

    def done(f: asyncio.Future[Message | None]) -> None:
        if not f.cancelled() and f.exception() is not None:
            log.warning("a sender key was not delivered: %s", type(f.exception()).__name__)

    out.add_done_callback(done)
    return out
