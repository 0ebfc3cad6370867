"""Prekey upkeep by the client: refilled when the server says the stock is low, signed and
last-resort prekeys rotated weekly, with old ones still answering late first messages;
and ``listen`` printing messages as they come."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from helpers import ServerProcess, unique_name

from sealpost.client import Client, MessageReceived
from sealpost.client.store import TEST_PARAMS

DAY = 24 * 3600


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_refill_and_weekly_rotation(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server("--prekey-refill-below", "150", "--auth-window", str(30 * DAY))

    async def scenario() -> None:
        clock = Clock()
        names = [unique_name("pk") for _ in range(3)]
        bob = await Client.create(
            tmp_path / names[0], "pw", server_url=server.url, username=names[0],
            params=TEST_PARAMS, clock=clock,
        )  # fmt: skip
        alice = await Client.create(
            tmp_path / names[1], "pw", server_url=server.url, username=names[1],
            params=TEST_PARAMS,
        )  # fmt: skip
        try:
            status = await bob._ctx.transport.request("GET", "/v1/keys/status")
            assert status["one_time_prekeys"] == 100 and status["refill"] is True
            await bob.maintain_prekeys()
            status = await bob._ctx.transport.request("GET", "/v1/keys/status")
            assert status["one_time_prekeys"] == 200 and status["kem_one_time_prekeys"] == 200
            # alice's first message (a bundle with the old signed prekey) stays in the queue
            await alice.send(bob.username, "sent before the rotation")
            clock.now += 8 * DAY
            old_spk = bob.store.get_meta("spk_created")
            await bob.maintain_prekeys()
            assert bob.store.get_meta("spk_created") != old_spk
            clock.now -= 8 * DAY  # back to the senders' time, so their certificates are valid
            carol = await Client.create(
                tmp_path / names[2], "pw", server_url=server.url, username=names[2],
                params=TEST_PARAMS,
            )  # fmt: skip
            try:
                await carol.send(bob.username, "sent after the rotation")
            finally:
                await carol.close()
            got = {
                e.message.text for e in await bob.receive(wait=10) if isinstance(e, MessageReceived)
            }
            assert got == {"sent before the rotation", "sent after the rotation"}
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(scenario())


def test_listen_prints_messages_as_they_arrive(server: ServerProcess, tmp_path: Path) -> None:
    async def make(name: str) -> None:
        client = await Client.create(
            tmp_path / name, "listen-passcode", server_url=server.url, username=name,
            params=TEST_PARAMS,
        )  # fmt: skip
        await client.close()

    alice, bob = unique_name("ls"), unique_name("ls")
    asyncio.run(make(alice))
    asyncio.run(make(bob))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    env["SEALPOST_PASSCODE"] = "listen-passcode"
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealpost.cli",
            "--profile",
            str(tmp_path / bob),
            "listen",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        time.sleep(1.0)
        sent = subprocess.run(
            [sys.executable, "-m", "sealpost.cli", "--profile", str(tmp_path / alice), "send",
             bob, "are you listening?"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert listener.stdout is not None
        line = listener.stdout.readline()
        doc = json.loads(line)
        assert (doc["from"], doc["text"]) == (alice, "are you listening?")
    finally:
        listener.terminate()
        listener.wait(10)
        if listener.stdout is not None:
            listener.stdout.close()


def test_client_refills_when_told_stock_is_low(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Someone drains bob's one-time prekeys by fetching bundles while bob is connected and
    gets no message: the server's prekeys_low frame makes him refill at once."""
    server = make_server("--prekey-refill-below", "95", "--rate-per-address", "0")

    async def scenario() -> None:
        name = unique_name("pk")
        bob = await Client.create(
            tmp_path / name, "pw", server_url=server.url, username=name, params=TEST_PARAMS
        )
        try:
            status = await bob._ctx.transport.request("GET", "/v1/keys/status")
            assert status["one_time_prekeys"] == 100 and status["refill"] is False
            listening = asyncio.create_task(bob.receive(wait=8))
            await asyncio.sleep(1.0)  # connected and idle
            path = f"/v1/keys/{bob.account_id.hex()}/{bob.device_id}"
            async with httpx.AsyncClient(base_url=server.url) as stranger:
                for _ in range(6):
                    assert (await stranger.get(path)).status_code == 200
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                status = await bob._ctx.transport.request("GET", "/v1/keys/status")
                if status["one_time_prekeys"] > 94:
                    break
                await asyncio.sleep(0.1)
            assert not listening.done()  # refilled while still listening, not after
            assert status["one_time_prekeys"] == 194
            assert status["kem_one_time_prekeys"] == 194
            await listening
        finally:
            await bob.close()

    asyncio.run(scenario())
