"""Key-transparency alarms, raised: what the log checks do when a check fails.

An alarm is a row of the encrypted store (:mod:`sealpost.client.store.alarms`), kept once
per kind, subject and detail until the user dismisses it (``sealpost alarms``; every CLI
command shows the ones standing), and an :class:`~sealpost.client.records.AlarmRaised`
event. Its text names public things only (usernames, device ids, tree sizes); its evidence
is the signed heads that show the fault. :meth:`Alarms.fail` is the alarm for a check whose
caller must not go on (nothing is encrypted to devices the log does not vouch for): it
raises :class:`~sealpost.client.errors.TransparencyFailure` after recording the alarm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NoReturn

from sealpost.client.context import ClientContext
from sealpost.client.errors import TransparencyFailure
from sealpost.client.records import AlarmRaised

__all__ = ["Alarms"]

log = logging.getLogger("sealpost.client.transparency")


class Alarms:
    """Records alarms in the store and tells the client (its event sink)."""

    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx

    def alarm(self, kind: str, subject: str, detail: str, evidence: Sequence[bytes] = ()) -> None:
        """Record an alarm (once per kind, subject and detail) and tell the client."""
        with self._ctx.store.unit() as repos:
            alarm = repos.alarms.raise_alarm(
                kind, subject, detail, evidence, int(self._ctx.clock())
            )
        log.warning("key transparency alarm: %s (%s)", kind, subject)
        if alarm is not None:
            self._ctx.events.emit(AlarmRaised(alarm))

    def fail(
        self, kind: str, subject: str, detail: str, evidence: Sequence[bytes] = ()
    ) -> NoReturn:
        """Record the alarm, then raise :class:`TransparencyFailure` (``kind``, ``detail``)."""
        self.alarm(kind, subject, detail, evidence)
        raise TransparencyFailure(kind, detail)
