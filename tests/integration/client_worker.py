"""A client process for the crash tests: ``send`` or ``receive`` until done, resuming
from what its own store says after being killed; ``flush`` sends what the profile holds
unsent (the outbox and the sends kept while the server was down), then exits."""

from __future__ import annotations

import asyncio
import sys

from sealpost.client import Client, UnknownContact

PASSCODE = "crash-test-passcode"


async def send(profile: str, peer: str, total: int) -> None:
    client = await Client.open(profile, PASSCODE)
    try:
        await client.flush_outbox()
        try:
            done = sum(1 for m in client.history(peer, 10_000) if m.outgoing)
        except UnknownContact:  # killed before the first message was stored
            done = 0
        for i in range(done, total):
            await client.send(peer, f"m{i:04d}")
            print(i, flush=True)
    finally:
        await client.close()


async def receive(profile: str, peer: str, total: int) -> None:
    client = await Client.open(profile, PASSCODE)
    try:
        while True:
            try:
                got = len(client.history(peer, 10_000))
            except UnknownContact:  # nothing received yet
                got = 0
            if got >= total:
                return
            await client.receive(wait=1)
    finally:
        await client.close()


async def flush(profile: str, peer: str, total: int) -> None:
    client = await Client.open(profile, PASSCODE)
    print("open", flush=True)  # the test kills it from here on
    try:
        await client.flush_outbox()
    finally:
        await client.close()


if __name__ == "__main__":
    mode, profile, peer, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    work = {"send": send, "receive": receive, "flush": flush}[mode]
    asyncio.run(work(profile, peer, total))
