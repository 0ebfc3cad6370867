"""Everything a client service needs, built once for a profile
(:func:`sealpost.client.services.assembly.context`) and passed to each service's
constructor (no global state, no service locator; the server's :mod:`sealpost.server.context`
is the model).

Time comes from :attr:`ClientContext.clock` and randomness from :attr:`ClientContext.rng`
only, so a test can run the whole client on a fake clock and a seeded generator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from sealpost.client.records import Event
from sealpost.client.relay import RelayTransport
from sealpost.client.store import Store
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng
from sealpost.protocol import AccountIdentity, DeviceKeys

__all__ = ["ClientContext", "EventSink", "PendingState"]


@dataclass(slots=True)
class EventSink:
    """Events produced outside :meth:`Client.receive` (by sends, device changes, alarms),
    held until the application takes them."""

    pending: list[Event] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        self.pending.append(event)

    def extend(self, events: list[Event]) -> None:
        self.pending.extend(events)

    def take(self) -> list[Event]:
        out, self.pending = self.pending, []
        return out


@dataclass(slots=True)
class PendingState:
    """The pending sends (:mod:`sealpost.client.store.pending`) as this process knows them:
    kept by :mod:`~sealpost.client.services.pending` for an offline text, and by
    :meth:`~sealpost.client.services.delivery.Delivery.settle` for a text to encrypt anew."""

    queued: set[int] = field(default_factory=set)  # on the sender loop now: not sent again
    any: bool | None = None  # whether the profile holds any (None: read it again)


@dataclass(slots=True)
class ClientContext:
    """This device's identity and the shared means: the store, the transport, the clock,
    the random generator, the batch lock and the event sink."""

    store: Store
    transport: RelayTransport
    account: AccountIdentity
    device: DeviceKeys
    username: str
    server_url: str
    server_key: VerifyKey
    delivery_token: bytes
    clock: Callable[[], float]
    rng: Rng
    # Held while ratchets step and their results are committed (a send batch or a
    # receive batch), so two batches never interleave on one session.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: PendingState = field(default_factory=PendingState)
    events: EventSink = field(default_factory=EventSink)

    def __repr__(self) -> str:
        return f"ClientContext(username={self.username!r}, device={self.device.device_id})"

    @property
    def account_id(self) -> bytes:
        return self.account.account_id

    @property
    def device_id(self) -> int:
        return self.device.device_id

    def now_ms(self) -> int:
        return int(self.clock() * 1000)
