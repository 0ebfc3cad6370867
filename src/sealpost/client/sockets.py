"""The relay's WebSockets as the client holds them (docs/PROTOCOL.md, "WebSocket frames"):

- :class:`Stream`, ``/v1/stream``: the device's own socket. It answers the signed challenge,
  then hands on the server's pushes in queue order (:class:`Push`, and an empty one at the
  end of each backlog) for the client to ack once they are stored locally; it also takes
  the device's own authenticated sends;
- :class:`SealedSocket`, ``/v1/sealed``: anonymous sealed sends. Nothing on it names the
  sender; sends are pipelined, up to :data:`WINDOW` in flight, and answered in order, each
  only once the server has stored it;
- :class:`LinkChannel`, ``/v1/link``: what a new device waits on for its provisioning.

The frames are built here, by hand where they are hot (hex and base64 need no JSON
escaping). :class:`~sealpost.client.transport.Transport` opens the sockets; this module
does no I/O of its own beyond them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from sealpost.client.errors import ServerError, ServerUnavailable
from sealpost.protocol.group_sealed import GROUP_SEALED_PREFIX
from sealpost.protocol.send_id import envelope_send_id, multi_send_id
from sealpost.protocol.signing import sign_websocket_challenge

if TYPE_CHECKING:
    from sealpost.client.transport import Identity

__all__ = [
    "ACKS_FEATURE",
    "MAX_ACKS",
    "TIMEOUT",
    "WINDOW",
    "LinkChannel",
    "Push",
    "SealedSocket",
    "Stream",
    "b64",
    "envelopes_json",
    "unb64",
]

TIMEOUT = 15.0
#: Sends in flight on one socket; the server allows 64.
WINDOW = 64
#: Ids in one ``acks`` frame (the server takes up to 256).
MAX_ACKS = 256
#: The ``features`` entry of a server's challenge that offers the ``acks`` frame.
ACKS_FEATURE = "acks"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ServerError(0, "bad_response", "expected a base64 string from the server")
    try:
        # strict: what b64decode(validate=True) refuses, without its regular expression
        # over every pushed envelope
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError:
        raise ServerError(0, "bad_response", "bad base64 from the server") from None


@dataclass(frozen=True, slots=True)
class Push:
    """A message the server pushed: its queue id, the opaque envelope, its arrival time."""

    server_id: bytes
    body: bytes
    received_at: int


class LinkChannel:
    """The new device's end of a link channel: waits for the provisioning message."""

    def __init__(self, ws: ClientConnection, channel: bytes) -> None:
        self._ws = ws
        self.channel = channel

    async def provisioning(self, timeout: float) -> bytes:
        try:
            doc = json.loads(await asyncio.wait_for(self._ws.recv(), timeout=timeout))
        except TimeoutError:
            raise ServerUnavailable("no device answered the link in time") from None
        except ConnectionClosed as exc:
            raise ServerUnavailable(f"the link channel closed ({exc.rcvd})") from None
        except ValueError:
            raise ServerError(0, "bad_response", "malformed link frame") from None
        if not isinstance(doc, dict) or doc.get("type") != "provision":
            raise ServerError(0, "bad_response", "unexpected link frame")
        return unb64(doc.get("body"))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()


def envelopes_json(
    messages: Sequence[tuple[bytes, int, bytes]], send_id: bytes = b""
) -> list[dict[str, Any]]:
    """A send's ``messages``: each envelope with its send id derived from the seed
    ``send_id`` (:mod:`sealpost.protocol.send_id`; none when it is b"")."""
    out = []
    for a, d, body in messages:
        item = {"account_id": a.hex(), "device_id": d, "body": b64(body)}
        if send_id:
            item["send_id"] = b64(envelope_send_id(send_id, a, d))
        out.append(item)
    return out


def _send_frame(
    req: int,
    messages: Sequence[tuple[bytes, int, bytes]],
    tokens: Mapping[bytes, bytes],
    send_id: bytes = b"",
) -> str:
    """``{"type":"send","req":N,"messages":[{"account_id":HEX,"device_id":N,"body":B64}],
    "tokens":{HEX:B64}}`` (no ``tokens`` when there are none; with a ``send_id`` seed, each
    envelope also carries its ``"send_id":B64``). Written as text, not through
    ``json.dumps`` (a send frame per message): every value is an integer, hex or base64,
    so there is nothing to escape and this is the JSON ``json.dumps`` would make, without
    its spaces."""
    items = ",".join(_envelope_text(a, d, body, send_id) for a, d, body in messages)
    if not tokens:
        return f'{{"type":"send","req":{int(req)},"messages":[{items}]}}'
    named = ",".join(f'"{a.hex()}":"{b64(t)}"' for a, t in tokens.items())
    return f'{{"type":"send","req":{int(req)},"messages":[{items}],"tokens":{{{named}}}}}'


def _envelope_text(account: bytes, device: int, body: bytes, seed: bytes) -> str:
    """One envelope of :func:`_send_frame`, with its send id when there is a seed."""
    sid = f',"send_id":"{b64(envelope_send_id(seed, account, device))}"' if seed else ""
    return f'{{"account_id":"{account.hex()}","device_id":{int(device)},"body":"{b64(body)}"{sid}}}'


def _ack_frame(server_id: bytes) -> str:
    """``{"type":"ack","id":HEX}`` (as :func:`_send_frame`, written as text)."""
    return f'{{"type":"ack","id":"{server_id.hex()}"}}'


def _acks_frame(server_ids: Sequence[bytes]) -> str:
    """``{"type":"acks","ids":[HEX, ...]}``: several pushes acknowledged at once."""
    return '{"type":"acks","ids":["' + '","'.join(i.hex() for i in server_ids) + '"]}'


def _multi_frame(
    req: int,
    shared: bytes,
    recipients: Sequence[tuple[bytes, int, bytes]],
    tokens: Mapping[bytes, bytes],
    send_id: bytes = b"",
) -> str:
    doc: dict[str, Any] = {"type": "send_multi", "req": req}
    if send_id:
        doc["send_id"] = b64(multi_send_id(send_id))
    if shared[:2] == GROUP_SEALED_PREFIX:
        # one body for every device, no wraps
        doc["body"] = b64(shared)
        doc["recipients"] = [[a.hex(), d] for a, d, _ in recipients]
    else:
        doc["shared"] = b64(shared)
        doc["recipients"] = [[a.hex(), d, b64(wrap)] for a, d, wrap in recipients]
    if tokens:
        doc["tokens"] = {a.hex(): b64(t) for a, t in tokens.items()}
    return json.dumps(doc)


def _answer_error(doc: Mapping[str, Any]) -> ServerError:
    extra = {k: v for k, v in doc.items() if k not in ("type", "req", "error", "message")}
    status = 429 if doc.get("error") == "rate_limited" else 400
    return ServerError(status, str(doc.get("error")), str(doc.get("message")), extra)


class _Pipelined:
    """Request/answer bookkeeping shared by both sockets: sends are numbered, answers come
    back in order and resolve their futures; a closed socket fails every pending one."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._reqs = itertools.count(1)
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._window = asyncio.Semaphore(WINDOW)
        self.closed: BaseException | None = None

    async def send(
        self,
        messages: Sequence[tuple[bytes, int, bytes]],
        tokens: Mapping[bytes, bytes],
        send_id: bytes = b"",
    ) -> asyncio.Future[int]:
        """Submit a send; the returned future resolves once the server stored it."""
        return await self.submit(lambda req: _send_frame(req, messages, tokens, send_id))

    async def submit(self, frame: Callable[[int], str]) -> asyncio.Future[int]:
        """Submit the frame ``frame(req)``; the future resolves with the server's answer."""
        if self.closed is not None:
            raise ServerUnavailable("the connection to the server was lost")
        await self._window.acquire()
        req = next(self._reqs)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            await self.ws.send(frame(req))
        except ConnectionClosed:
            if self._pending.pop(req, None) is not None:
                self._window.release()
            elif future.done() and not future.cancelled():
                future.exception()  # failed by fail_all meanwhile, and handed to no one
            raise ServerUnavailable("the connection to the server was lost") from None
        return future

    def answer(self, doc: Mapping[str, Any]) -> None:
        future = self._pending.pop(doc.get("req"), None)  # type: ignore[arg-type]
        if future is None:
            return
        self._window.release()
        if future.done():
            return
        if doc.get("type") == "sent":
            future.set_result(int(doc.get("stored", 0)))
        else:
            future.set_exception(_answer_error(doc))

    def fail_all(self, reason: BaseException) -> None:
        self.closed = reason
        for future in self._pending.values():
            self._window.release()  # a submit waiting for the window fails now, not never
            if not future.done():
                future.set_exception(ServerUnavailable("the connection to the server was lost"))
        self._pending.clear()


class SealedSocket:
    """``/v1/sealed``: anonymous, pipelined sends."""

    def __init__(self, ws: ClientConnection) -> None:
        self._pipe = _Pipelined(ws)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self._pipe.ws:
                doc = json.loads(frame)
                if isinstance(doc, dict):
                    self._pipe.answer(doc)
        except (ConnectionClosed, ValueError) as exc:
            self._pipe.fail_all(exc)
        else:
            self._pipe.fail_all(ConnectionError("closed"))

    @property
    def alive(self) -> bool:
        return self._pipe.closed is None

    async def send(
        self,
        messages: Sequence[tuple[bytes, int, bytes]],
        tokens: Mapping[bytes, bytes],
        *,
        send_id: bytes = b"",
    ) -> asyncio.Future[int]:
        """A sealed send; ``send_id``: the seed of its envelopes' send ids (b"": none)."""
        return await self._pipe.send(messages, tokens, send_id)

    async def send_multi(
        self,
        shared: bytes,
        recipients: Sequence[tuple[bytes, int, bytes]],
        tokens: Mapping[bytes, bytes],
        *,
        send_id: bytes = b"",
    ) -> asyncio.Future[int]:
        """One multi-recipient send: a group-sealed body (``0x01 0x23``, the wraps are
        empty) stored as it is for every device, or a legacy ``0x22`` shared part with a
        key wrap per device; ``send_id`` as for :meth:`send`."""
        return await self._pipe.submit(
            lambda req: _multi_frame(req, shared, recipients, tokens, send_id)
        )

    async def close(self) -> None:
        await self._pipe.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Stream:
    """``/v1/stream``: this device's pushes (iterate :meth:`pushes`, then :meth:`ack`) and
    authenticated sends to its own account's other devices."""

    def __init__(self, ws: ClientConnection) -> None:
        self._pipe = _Pipelined(ws)
        self._pushes: asyncio.Queue[Push | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        #: The last frame the server pushed was the end of a backlog: nothing is queued
        #: for this device beyond what :meth:`next_push` still holds.
        self.idle = False
        #: Called when the server says this device's one-time prekeys run low.
        self.on_prekeys_low: Callable[[], None] | None = None
        #: The server takes several acks in one frame (its challenge said so).
        self.batch_acks = False

    async def authenticate(self, identity: Identity) -> None:
        ws = self._pipe.ws
        try:
            async with asyncio.timeout(TIMEOUT):
                challenge = json.loads(await ws.recv())
                if challenge.get("type") != "challenge":
                    raise ServerError(0, "bad_response", "expected a challenge")
                features = challenge.get("features")
                self.batch_acks = isinstance(features, list) and ACKS_FEATURE in features
                answer = sign_websocket_challenge(
                    identity.signing_key,
                    identity.account_id,
                    identity.device_id,
                    unb64(challenge.get("challenge")),
                )
                await ws.send(json.dumps(answer))
                ready = json.loads(await ws.recv())
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 0
            if code == 4401:
                raise ServerError(401, "unauthorized", "the server refused this device") from None
            raise ServerUnavailable(f"the server closed the stream ({code})") from None
        except (TimeoutError, ValueError, AttributeError):
            raise ServerUnavailable("the server did not complete the stream handshake") from None
        if ready != {"type": "ready"}:
            raise ServerError(0, "bad_response", "expected ready")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self._pipe.ws:
                doc = json.loads(frame)
                if not isinstance(doc, dict):
                    continue
                if doc.get("type") == "empty":  # the backlog's end: a push with no id
                    self.idle = True
                    self._pushes.put_nowait(Push(b"", b"", 0))
                elif doc.get("type") == "message":
                    self.idle = False
                    server_id = bytes.fromhex(str(doc.get("id")))
                    received_at = doc.get("received_at")
                    self._pushes.put_nowait(
                        Push(
                            server_id,
                            unb64(doc.get("body")),
                            received_at if isinstance(received_at, int) else 0,
                        )
                    )
                elif doc.get("type") == "prekeys_low":
                    if self.on_prekeys_low is not None:
                        self.on_prekeys_low()
                else:
                    self._pipe.answer(doc)
        except (ConnectionClosed, ValueError, ServerError) as exc:
            self._pipe.fail_all(exc)
        else:
            self._pipe.fail_all(ConnectionError("closed"))
        self._pushes.put_nowait(None)

    @property
    def close_code(self) -> int | None:
        return self._pipe.ws.close_code

    async def pushes(self) -> AsyncIterator[Push]:
        """Pushed messages until the connection closes; a push with an empty
        ``server_id`` marks the end of a backlog (the server's ``empty`` frame)."""
        while True:
            push = await self._pushes.get()
            if push is None:
                self._pushes.put_nowait(None)
                return
            yield push

    def pending_pushes(self) -> int:
        return self._pushes.qsize()

    async def next_push(self, timeout: float | None) -> Push | None:
        """The next push, or ``None`` on timeout or when the stream ended."""
        try:
            async with asyncio.timeout(timeout):
                push = await self._pushes.get()
        except TimeoutError:
            return None
        if push is None:
            self._pushes.put_nowait(None)
        return push

    async def ack(self, server_id: bytes) -> None:
        await self.ack_all((server_id,))

    async def ack_all(self, server_ids: Sequence[bytes]) -> None:
        """Acknowledge these pushes: in ``acks`` frames of up to :data:`MAX_ACKS` where the
        server offers them, else an ``ack`` frame each (what older servers take)."""
        if self.batch_acks and len(server_ids) > 1:
            frames = [
                _acks_frame(server_ids[i : i + MAX_ACKS])
                for i in range(0, len(server_ids), MAX_ACKS)
            ]
        else:
            frames = [_ack_frame(server_id) for server_id in server_ids]
        try:
            for frame in frames:
                await self._pipe.ws.send(frame)
        except ConnectionClosed:
            raise ServerUnavailable("the connection to the server was lost") from None

    async def send(self, messages: Sequence[tuple[bytes, int, bytes]]) -> asyncio.Future[int]:
        return await self._pipe.send(messages, {})

    async def close(self) -> None:
        await self._pipe.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
