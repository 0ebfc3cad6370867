"""This device's prekeys: made, kept (the private halves first), uploaded, refilled, rotated.

A device registers with a signed prekey, an ML-KEM last-resort prekey and
:data:`PREKEY_BATCH` one-time prekeys of each kind (X25519 and ML-KEM)
(:class:`InitialPrekeys`). Afterwards :meth:`Prekeys.maintain` refills the one-time keys
when the server says the stock runs low and replaces the signed and last-resort prekeys
every :data:`SPK_ROTATION` seconds; old ones still answer late first messages for
:data:`SPK_RETENTION` seconds. New private halves are committed before the public halves
are uploaded, so every key the server hands out can be answered. :class:`Upkeep` runs
that, and the self-monitoring of key transparency, when the device connects. Time is the
context's clock only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sealpost.client.context import ClientContext
from sealpost.client.errors import TransparencyFailure, TransportError
from sealpost.client.services.monitoring import Monitoring
from sealpost.client.store.prekeys import KEM_LAST_RESORT, KEM_ONE_TIME, ONE_TIME, SIGNED
from sealpost.client.transport import b64
from sealpost.entropy import Rng
from sealpost.protocol import DeviceKeys, KemPreKeyKind, KemPreKeyPair, OneTimePreKeyPair
from sealpost.protocol.keys import SignedPreKeyPair

__all__ = [
    "PREKEY_BATCH",
    "SPK_RETENTION",
    "SPK_ROTATION",
    "UPKEEP_INTERVAL",
    "InitialPrekeys",
    "Prekeys",
    "Upkeep",
]

log = logging.getLogger("sealpost.client")

PREKEY_BATCH = 100  # one-time prekeys of each kind uploaded at a time
SPK_ROTATION = 7 * 24 * 3600  # signed and last-resort prekeys are replaced weekly
SPK_RETENTION = 30 * 24 * 3600  # old ones still answer late first messages this long
UPKEEP_INTERVAL = 3600.0  # seconds between prekey checks on (re)connecting

#: (kind, key id, record) as the prekeys repository keeps them
Row = tuple[str, int, bytes]


@dataclass(frozen=True, slots=True)
class InitialPrekeys:
    """What a new device registers with (key ids 1..; the next free id follows)."""

    signed: SignedPreKeyPair
    last_resort: KemPreKeyPair
    one_time: list[OneTimePreKeyPair]
    kem_one_time: list[KemPreKeyPair]

    @classmethod
    def generate(cls, device: DeviceKeys, *, now: int, rng: Rng) -> InitialPrekeys:
        return cls(
            device.new_signed_prekey(1, now=now, rng=rng),
            device.new_kem_prekey(1, KemPreKeyKind.LAST_RESORT, now=now, rng=rng),
            [OneTimePreKeyPair.generate(i, rng=rng) for i in range(1, PREKEY_BATCH + 1)],
            [
                device.new_kem_prekey(i, KemPreKeyKind.ONE_TIME, now=now, rng=rng)
                for i in range(2, PREKEY_BATCH + 2)
            ],
        )

    @property
    def next_id(self) -> int:
        return PREKEY_BATCH + 2

    def rows(self) -> list[Row]:
        return [
            (SIGNED, self.signed.key_id, self.signed.to_bytes()),
            (KEM_LAST_RESORT, self.last_resort.key_id, self.last_resort.to_bytes()),
            *[(ONE_TIME, k.key_id, k.to_bytes()) for k in self.one_time],
            *[(KEM_ONE_TIME, k.key_id, k.to_bytes()) for k in self.kem_one_time],
        ]

    def upload(self) -> dict[str, Any]:
        """The public halves, as the registration request carries them."""
        return {
            "signed_prekey": b64(self.signed.public.encode()),
            "kem_last_resort": b64(self.last_resort.public.encode()),
            "one_time_prekeys": [b64(k.public.encode()) for k in self.one_time],
            "kem_one_time_prekeys": [b64(k.public.encode()) for k in self.kem_one_time],
        }


class Prekeys:
    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx

    async def maintain(self) -> None:
        """Refill one-time prekeys when the server says the stock is low, and rotate the
        signed and last-resort prekeys weekly (old ones kept a while for late messages)."""
        ctx = self._ctx
        status = await ctx.transport.request("GET", "/v1/keys/status")
        now = int(ctx.clock())
        meta = ctx.store.repos().meta
        next_id = meta.get_int("next_prekey_id", 1000)
        body: dict[str, Any] = {}
        rows: list[Row] = []
        if isinstance(status, dict) and status.get("refill"):
            one_time = [
                OneTimePreKeyPair.generate(next_id + i, rng=ctx.rng) for i in range(PREKEY_BATCH)
            ]
            kem = [
                ctx.device.new_kem_prekey(
                    next_id + PREKEY_BATCH + i, KemPreKeyKind.ONE_TIME, now=now, rng=ctx.rng
                )
                for i in range(PREKEY_BATCH)
            ]
            next_id += 2 * PREKEY_BATCH
            body["one_time_prekeys"] = [b64(k.public.encode()) for k in one_time]
            body["kem_one_time_prekeys"] = [b64(k.public.encode()) for k in kem]
            rows += [(ONE_TIME, k.key_id, k.to_bytes()) for k in one_time]
            rows += [(KEM_ONE_TIME, k.key_id, k.to_bytes()) for k in kem]
        rotate = now - meta.get_int("spk_created") >= SPK_ROTATION
        if rotate:
            spk = ctx.device.new_signed_prekey(next_id, now=now, rng=ctx.rng)
            kem_lr = ctx.device.new_kem_prekey(
                next_id + 1, KemPreKeyKind.LAST_RESORT, now=now, rng=ctx.rng
            )
            next_id += 2
            body["signed_prekey"] = b64(spk.public.encode())
            body["kem_last_resort"] = b64(kem_lr.public.encode())
            rows += [
                (SIGNED, spk.key_id, spk.to_bytes()),
                (KEM_LAST_RESORT, kem_lr.key_id, kem_lr.to_bytes()),
            ]
        if not body:
            return
        # keep the private halves first: a key the server hands out must be answerable
        with ctx.store.unit() as repos:
            repos.prekeys.add(rows, now)
            repos.meta.set_int("next_prekey_id", next_id)
        await ctx.transport.request("PUT", "/v1/keys", body=body)
        if rotate:
            with ctx.store.unit() as repos:
                repos.meta.set_int("spk_created", now)
                # older signed and last-resort keys answer late first messages a while
                repos.prekeys.drop_rotated(now - SPK_RETENTION)


class Upkeep:
    """On connecting: the prekeys at most every :data:`UPKEEP_INTERVAL` seconds (so a
    device that rarely gets new sessions still rotates its signed prekey weekly), and the
    self-monitoring of the log when it is due."""

    def __init__(self, ctx: ClientContext, prekeys: Prekeys, monitoring: Monitoring) -> None:
        self._ctx = ctx
        self._prekeys = prekeys
        self._monitoring = monitoring
        self._last: float | None = None

    async def run(self) -> None:
        now = self._ctx.clock()
        if self._last is None or now - self._last >= UPKEEP_INTERVAL:
            self._last = now
            await self._prekeys.maintain()
        if self._monitoring.due():
            try:
                await self._monitoring.monitor()
            except (TransportError, TransparencyFailure) as exc:  # alarmed, or try later
                log.warning("self-monitoring did not finish: %s", type(exc).__name__)
