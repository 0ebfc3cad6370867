"""A client talking to the relay's WebSocket protocol in process (for tests/server): the
protocol object of a real server (:class:`~sealpost.server.ws_protocol.LeanWebSocketProtocol`
unless told), fed a client's bytes by websockets' sans-I/O client, writing to an in-memory
transport. No socket, no thread: what the protocol does with each read is seen at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from sealpost.server.ws_protocol import LeanWebSocketProtocol

__all__ = ["Peer", "Transport"]


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it asked to stop reading."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False
        self.resumes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8765)}.get(
            name, default
        )


class Peer:
    """A client (websockets' sans-I/O one) talking to a :class:`LeanWebSocketProtocol`
    that runs ``app``, on a :class:`Transport`."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        max_size: int = 1 << 20,
        cls: type[Any] = LeanWebSocketProtocol,
    ) -> None:
        config = Config(app=app, ws_max_size=max_size, ws_ping_interval=None, log_level="error")
        config.load()
        self.protocol = cls(config, ServerState(), {})
        self.transport = Transport()
        self.protocol.connection_made(self.transport)
        self.client = ClientProtocol(parse_uri("ws://127.0.0.1:8765/v1/stream"))
        self.client.send_request(self.client.connect())
        self._push()

    def _push(self) -> None:
        for data in self.client.data_to_send():
            if data:
                self.protocol.data_received(data)

    async def accepted(self) -> None:
        for _ in range(100):
            await asyncio.sleep(0)
            if self.transport.written:
                self.client.receive_data(bytes(self.transport.written))
                self.transport.written.clear()
                return
        raise AssertionError("not accepted")

    def send(self, *texts: str) -> None:
        """Frames arriving in one read."""
        for text in texts:
            self.client.send_text(text.encode())
        self.protocol.data_received(b"".join(self.client.data_to_send()))

    def close(self) -> None:
        self.client.send_close(1000)
        self.protocol.data_received(b"".join(self.client.data_to_send()))
