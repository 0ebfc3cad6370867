"""What the client's services need from a relay: the transport as a small protocol.

The services (:mod:`sealpost.client.services`) never build a connection: they get a
:class:`RelayTransport` through :class:`~sealpost.client.context.ClientContext` and speak
to it in these terms only. :class:`sealpost.client.transport.Transport` is the one that
talks to a real server (httpx, websockets); a test may pass any other object of this shape
(``Client(store, transport=...)``, ``Client.open(..., transport=...)``), for instance an
in-process relay built from the server's own handlers, and run the pipelines in one event
loop without a server process.

The calls, all raising :class:`~sealpost.client.errors.TransportError` on failure:

- :meth:`RelayTransport.request`: one JSON request, signed by this device unless
  ``signed=False`` (the format is :mod:`sealpost.protocol.signing`);
- :meth:`RelayTransport.post_streamed` / :meth:`RelayTransport.get_streamed`: an
  attachment's body in one pass, up and down;
- :meth:`RelayTransport.open_stream`: this device's authenticated pushes
  (:class:`RelayStream`); :meth:`RelayTransport.open_sealed`: the anonymous socket for
  sealed sends (:class:`RelaySealed`); :meth:`RelayTransport.open_link`: a new device's
  link channel (:class:`RelayLink`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from sealpost.client.transport import Identity, Push

__all__ = ["Envelope", "RelayLink", "RelaySealed", "RelayStream", "RelayTransport", "StreamedBody"]

#: One envelope to send: (recipient account id, recipient device id, opaque body).
Envelope = tuple[bytes, int, bytes]


class StreamedBody(Protocol):
    """A download being received: its headers, then its body in pieces."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class RelaySealed(Protocol):
    """``/v1/sealed``: anonymous, pipelined sends; each future resolves once the server
    stored the send (with the number it answered) or fails with a ``TransportError``."""

    @property
    def alive(self) -> bool: ...

    async def send(
        self, messages: Sequence[Envelope], tokens: Mapping[bytes, bytes], *, send_id: bytes = b""
    ) -> asyncio.Future[int]:
        """``send_id``: the seed of the envelopes' send ids (:mod:`sealpost.protocol.send_id`;
        b"": none, as old clients send)."""

    async def send_multi(
        self,
        shared: bytes,
        recipients: Sequence[Envelope],
        tokens: Mapping[bytes, bytes],
        *,
        send_id: bytes = b"",
    ) -> asyncio.Future[int]: ...

    async def close(self) -> None: ...


class RelayStream(Protocol):
    """``/v1/stream``: this device's pushes in queue order, acknowledged once stored, and
    signed sends to this account's other devices. A push with an empty ``server_id`` marks
    the end of a backlog (then ``idle`` is true until the next message)."""

    idle: bool
    on_prekeys_low: Callable[[], None] | None

    @property
    def close_code(self) -> int | None: ...

    def pushes(self) -> AsyncIterator[Push]: ...

    def pending_pushes(self) -> int: ...

    async def next_push(self, timeout: float | None) -> Push | None: ...

    async def ack(self, server_id: bytes) -> None: ...

    async def ack_all(self, server_ids: Sequence[bytes]) -> None:
        """Acknowledge these pushes, in as few frames as the server takes."""

    async def send(self, messages: Sequence[Envelope]) -> asyncio.Future[int]: ...

    async def close(self) -> None: ...


class RelayLink(Protocol):
    """The new device's end of a link channel."""

    channel: bytes

    async def provisioning(self, timeout: float) -> bytes: ...

    async def close(self) -> None: ...


class RelayTransport(Protocol):
    """One relay, optionally acting as one device (``identity``)."""

    @property
    def url(self) -> str: ...

    @property
    def identity(self) -> Identity | None: ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        signed: bool = True,
        headers: Mapping[str, str] | None = None,
        signer: Identity | None = None,
    ) -> Any:
        """One JSON request; returns the decoded answer (``None`` for 204)."""

    async def post_streamed(
        self, path: str, content: AsyncIterator[bytes], *, length: int
    ) -> tuple[Any, bytes]:
        """A signed upload of exactly ``length`` bytes in one pass (the signature over its
        SHA-256 trails the body); returns the answer and that SHA-256."""

    def get_streamed(self, path: str) -> AbstractAsyncContextManager[StreamedBody]:
        """An unsigned download; an error answer raises before anything is yielded."""

    async def open_stream(self) -> RelayStream: ...

    async def open_sealed(self) -> RelaySealed: ...

    async def open_link(self, kem_public: bytes) -> RelayLink: ...

    async def close(self) -> None: ...
