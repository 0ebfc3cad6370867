"""How the client's stream acks a batch (client/sockets.py): in ``acks`` frames of at most
256 ids when the server's challenge offers them, else one ``ack`` frame each, what an
older server takes; every frame is one the server's own decoder accepts."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import msgspec

from sealpost.client.sockets import MAX_ACKS, Stream, _acks_frame
from sealpost.client.transport import Identity
from sealpost.crypto.sign import SigningKey
from sealpost.server.frames import MAX_ACKS as SERVER_MAX_ACKS
from sealpost.server.frames import AckFrame, AcksFrame


class _Server:
    """The server's end of a stream, as websockets' connection shows it to the client:
    the challenge (with ``features`` or not), ``ready``, then it records what it is sent."""

    def __init__(self, challenge: dict[str, Any]) -> None:
        self._incoming = [json.dumps(challenge), json.dumps({"type": "ready"})]
        self.sent: list[str] = []
        self._closed = asyncio.Event()

    async def recv(self) -> str:
        return self._incoming.pop(0)

    async def send(self, text: str) -> None:
        self.sent.append(text)

    def __aiter__(self) -> _Server:
        return self

    async def __anext__(self) -> str:
        await self._closed.wait()
        raise StopAsyncIteration

    async def close(self) -> None:
        self._closed.set()


def _challenge(**extra: Any) -> dict[str, Any]:
    return {"type": "challenge", "challenge": base64.b64encode(os.urandom(32)).decode(), **extra}


async def _acked(challenge: dict[str, Any], count: int) -> list[Any]:
    server = _Server(challenge)
    stream = Stream(server)  # type: ignore[arg-type]
    await stream.authenticate(Identity(SigningKey.generate(os.urandom), os.urandom(16), 1))
    server.sent.clear()  # the auth frame
    ids = [os.urandom(16) for _ in range(count)]
    await stream.ack_all(ids)
    await stream.close()
    frames = [msgspec.json.decode(t, type=AckFrame | AcksFrame) for t in server.sent]
    got = [bytes.fromhex(i) for f in frames for i in ([f.id] if type(f) is AckFrame else f.ids)]
    assert got == ids  # every id once, in order, whatever the frames
    return frames


def test_a_server_that_offers_acks_gets_a_frame_per_256() -> None:
    frames = asyncio.run(_acked(_challenge(features=["acks"]), 600))
    assert [type(f) for f in frames] == [AcksFrame] * 3
    assert [len(f.ids) for f in frames] == [256, 256, 88]
    assert MAX_ACKS == SERVER_MAX_ACKS


def test_a_single_ack_is_an_ack_frame_even_where_acks_are_offered() -> None:
    frames = asyncio.run(_acked(_challenge(features=["acks"]), 1))
    assert [type(f) for f in frames] == [AckFrame]


def test_an_older_server_gets_an_ack_frame_each() -> None:
    """No ``features``, an unknown one, or a malformed list: the first protocol."""
    for challenge in (_challenge(), _challenge(features=["other"]), _challenge(features="acks")):
        frames = asyncio.run(_acked(challenge, 5))
        assert [type(f) for f in frames] == [AckFrame] * 5


def test_the_acks_frame_is_the_documented_json() -> None:
    ids = [os.urandom(16) for _ in range(3)]
    assert json.loads(_acks_frame(ids)) == {"type": "acks", "ids": [i.hex() for i in ids]}
