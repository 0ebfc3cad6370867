"""The prekeys service on another transport (sealpost.client.relay): no server process, a
relay that records what it is sent, and a clock the test moves. Private halves are kept
before the public halves go out; the signed prekey rotates on the injected clock only;
old ones are dropped after their retention."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from sealpost.client import Client
from sealpost.client.errors import ServerUnavailable
from sealpost.client.services.prekeys import (
    PREKEY_BATCH,
    SPK_RETENTION,
    SPK_ROTATION,
    InitialPrekeys,
)
from sealpost.client.store import TEST_PARAMS, Store
from sealpost.client.store.prekeys import KEM_LAST_RESORT, KEM_ONE_TIME, ONE_TIME, SIGNED
from sealpost.crypto.sign import SigningKey
from sealpost.protocol import AccountIdentity, DeviceKeys
from sealpost.protocol.keys import OneTimePreKeyPair
from sealpost.protocol.wire import OneTimePreKey
from support import NOW, SeededRng


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingRelay:
    """A :class:`~sealpost.client.relay.RelayTransport` that answers the prekey calls and
    checks, at each upload, that the store already holds every private half."""

    def __init__(self, store: Store) -> None:
        self.url = "http://relay.invalid"
        self.identity = None
        self.refill = False
        self.uploads: list[dict[str, Any]] = []
        self._store = store

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        signed: bool = True,
        headers: Mapping[str, str] | None = None,
        signer: object = None,
    ) -> Any:
        if (method, path) == ("GET", "/v1/keys/status"):
            return {"refill": self.refill}
        if (method, path) == ("PUT", "/v1/keys"):
            assert body is not None
            repos = self._store.repos()
            for encoded in body.get("one_time_prekeys", []):
                key = OneTimePreKey.decode(base64.b64decode(encoded))
                held = repos.prekeys.get(ONE_TIME, key.key_id)
                assert held is not None, "uploaded before its private half was kept"
                assert OneTimePreKeyPair.from_bytes(held).public == key
            self.uploads.append(dict(body))
            return None
        raise ServerUnavailable(f"this relay does not answer {method} {path}")

    async def post_streamed(
        self, path: str, content: AsyncIterator[bytes], *, length: int
    ) -> tuple[Any, bytes]:
        raise ServerUnavailable("no attachments here")

    @contextlib.asynccontextmanager
    async def get_streamed(self, path: str) -> AsyncIterator[Any]:
        raise ServerUnavailable("no attachments here")
        yield None  # pragma: no cover

    async def open_stream(self) -> Any:
        raise ServerUnavailable("no stream here")

    async def open_sealed(self) -> Any:
        raise ServerUnavailable("no sealed socket here")

    async def open_link(self, kem_public: bytes) -> Any:
        raise ServerUnavailable("no link channel here")

    async def close(self) -> None:
        return None


def _offline_profile(path: Path, clock: Clock) -> Store:
    """A registered-looking profile, made locally (what registration keeps)."""
    rng = SeededRng("prekeys service")
    account = AccountIdentity.generate(rng)
    device = DeviceKeys.generate(account, 1, now=int(clock()), rng=rng)
    initial = InitialPrekeys.generate(device, now=int(clock()), rng=rng)
    store = Store.create(path, "passcode for tests", params=TEST_PARAMS, rng=rng)
    with store.unit() as repos:
        repos.meta.set_many(
            {
                "server_url": b"http://relay.invalid",
                "username": b"alice",
                "account": account.to_bytes(),
                "device": device.to_bytes(),
                "server_key": SigningKey.generate(rng).public_key().public_bytes_raw(),
                "spk_created": str(int(clock())).encode(),
                "next_prekey_id": str(initial.next_id).encode(),
            }
        )
        repos.prekeys.add(initial.rows(), int(clock()))
    return store


@pytest.fixture
def client_and_relay(tmp_path: Path) -> Any:
    clock = Clock(float(NOW))
    store = _offline_profile(tmp_path / "p", clock)
    relay = RecordingRelay(store)
    client = Client(store, transport=relay, clock=clock, rng=SeededRng("client"))
    yield client, relay, clock, store
    asyncio.run(client.close())


def test_nothing_to_do_uploads_nothing(client_and_relay: Any) -> None:
    client, relay, _clock, _store = client_and_relay
    asyncio.run(client.maintain_prekeys())
    assert relay.uploads == []


def test_a_refill_keeps_the_private_halves_first(client_and_relay: Any) -> None:
    client, relay, _clock, store = client_and_relay
    relay.refill = True
    asyncio.run(client.maintain_prekeys())
    (upload,) = relay.uploads
    assert len(upload["one_time_prekeys"]) == len(upload["kem_one_time_prekeys"]) == PREKEY_BATCH
    assert "signed_prekey" not in upload
    repos = store.repos()
    assert repos.prekeys.count(ONE_TIME) == repos.prekeys.count(KEM_ONE_TIME) == 2 * PREKEY_BATCH
    assert repos.meta.get_int("next_prekey_id") == PREKEY_BATCH + 2 + 2 * PREKEY_BATCH


def test_the_signed_prekey_rotates_on_the_injected_clock(client_and_relay: Any) -> None:
    client, relay, clock, store = client_and_relay
    clock.now += SPK_ROTATION - 1
    asyncio.run(client.maintain_prekeys())
    assert relay.uploads == []  # a second early: the wall clock plays no part
    clock.now += 1
    asyncio.run(client.maintain_prekeys())
    (upload,) = relay.uploads
    assert {"signed_prekey", "kem_last_resort"} <= set(upload)
    repos = store.repos()
    assert repos.prekeys.count(SIGNED) == repos.prekeys.count(KEM_LAST_RESORT) == 2
    assert repos.meta.get_int("spk_created") == int(clock.now)
    clock.now = NOW + SPK_ROTATION + SPK_RETENTION  # the first keys are past retention
    asyncio.run(client.maintain_prekeys())
    assert repos.prekeys.get(SIGNED, 1) is None
    assert repos.prekeys.count(SIGNED) == 2  # the two newest answer late first messages
