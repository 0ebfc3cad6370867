"""An in-process relay for client tests (h11's ``ConnectionPair`` idea, with the server
as the middle party): the server's own application (:func:`sealpost.server.app.create_app`:
``MessagesApi``, the stream, key transparency) over a :class:`SqliteStorage` in a temporary
directory, served by uvicorn inside the test's own event loop on 127.0.0.1 port 0. Real
code end to end, no server process, no mock: two or three real
:class:`~sealpost.client.Client` objects talk through it in one ``asyncio.run``.

:class:`Faults` sits between the sockets and the application and can break the sealed
socket at the two moments a crash matters to the send pipeline: before the server stored a
send (the message is lost on the way), or after it stored it and before its answer came
back (the sender never learns it was stored)::

    async with InProcessRelay.start(tmp_path) as relay:
        alice, bob = await relay.client("alice"), await relay.client("bob")
        await alice.send("bob", "hi")
        assert texts(await bob.receive(wait=5)) == ["hi"]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import uvicorn

from sealpost.client import Client, MessageReceived
from sealpost.client.store import TEST_PARAMS
from sealpost.crypto.sign import SigningKey
from sealpost.entropy import system_clock, system_rng
from sealpost.server.app import create_app
from sealpost.server.config import ServerConfig
from sealpost.server.fanout.local import LocalFanout
from sealpost.server.storage.sqlite import SqliteStorage

PASSCODE = "in-process-relay"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Faults:
    """What the relay breaks next (each counter: how many more times).

    On ``/v1/sealed``, ``lose_sends``: the server never reads the next send frame (nothing
    is stored); ``lose_answers``: the server stores the next send, and its ``sent`` answer
    never reaches the client. Either way the socket then hangs, with the client waiting for
    the answer, until :meth:`cut` closes it: the moment to take a :func:`crash` snapshot.
    On ``/v1/stream``, ``lose_acks``: the next acknowledgements (the frames that carry
    them, an ``acks`` frame whole) never reach the server, so
    it keeps those messages queued and pushes them again on the next connection (what
    happens when a receiver dies between storing a message and acknowledging it)."""

    lose_sends: int = 0
    lose_answers: int = 0
    lose_acks: int = 0
    #: sends the server was handed on /v1/sealed (``send`` and ``send_multi`` frames)
    sealed_sends: int = 0
    #: what was lost, in order ("send" or "answer")
    lost: list[str] = field(default_factory=list)
    _hanging: list[asyncio.Event] = field(default_factory=list)

    def cut(self) -> None:
        """Close every socket a fault left hanging."""
        for closed in self._hanging:
            closed.set()
        self._hanging.clear()

    async def wait_lost(self, count: int = 1, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len(self.lost) < count:
                await asyncio.sleep(0.005)

    def wrap(self, app: App) -> App:
        async def faulty(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "websocket" and scope["path"] == "/v1/stream":
                return await app(scope, self._acks(receive), send)
            if scope["type"] != "websocket" or scope["path"] != "/v1/sealed":
                return await app(scope, receive, send)
            closed = asyncio.Event()  # set by cut() once this socket hangs
            hanging = False

            def hang(what: str) -> None:
                nonlocal hanging
                hanging = True
                self.lost.append(what)
                self._hanging.append(closed)

            async def close() -> Message:
                await closed.wait()
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": 1011})
                return {"type": "websocket.disconnect", "code": 1011}

            async def from_client() -> Message:
                while True:
                    if hanging:
                        return await close()  # what the client sends now is never read
                    reading = asyncio.ensure_future(receive())
                    cutting = asyncio.ensure_future(closed.wait())
                    await asyncio.wait({reading, cutting}, return_when=asyncio.FIRST_COMPLETED)
                    cutting.cancel()
                    if not reading.done():
                        reading.cancel()
                        return await close()
                    message = reading.result()
                    if message["type"] != "websocket.receive" or not _is_send(message):
                        return message
                    if self.lose_sends:
                        self.lose_sends -= 1
                        hang("send")
                        continue
                    self.sealed_sends += 1
                    return message

            async def to_client(message: Message) -> None:
                if message["type"] == "websocket.send":
                    if hanging:
                        return
                    if (
                        self.lose_answers
                        and json.loads(message.get("text") or "{}").get("type") == "sent"
                    ):
                        self.lose_answers -= 1
                        hang("answer")
                        return
                await send(message)

            await app(scope, from_client, to_client)
            return None

        return faulty

    def _acks(self, receive: Receive) -> Receive:
        async def from_client() -> Message:
            while True:
                message = await receive()
                kind = _frame_type(message) if self.lose_acks else None
                if kind in ("ack", "acks"):  # an ``acks`` frame loses all of its ids
                    count = 1 if kind == "ack" else len(json.loads(message["text"])["ids"])
                    self.lose_acks = max(0, self.lose_acks - count)
                    self.lost += ["ack"] * count
                    continue
                return message

        return from_client


def crash(client: Client, into: Path) -> Path:
    """What the disk holds if ``client``'s process died now: a copy of its profile (the
    database with its write-ahead log, and the keyfile; not the lock, which dies with the
    process). Open the copy to restart it; the original must send nothing more."""
    shutil.copytree(
        client.store.path, into, ignore=shutil.ignore_patterns("lock", "*-shm", "send.sock")
    )
    return into


def _frame_type(message: Message) -> str | None:
    """The ``type`` of a client's JSON frame (``None`` for anything else)."""
    text = message.get("text") if message["type"] == "websocket.receive" else None
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return str(doc.get("type")) if isinstance(doc, dict) else None


def _is_send(message: Message) -> bool:
    return _frame_type(message) in ("send", "send_multi")


class _Server(uvicorn.Server):
    """Uvicorn serving inside a test: Ctrl-C stays pytest's (no signal handlers)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


class InProcessRelay:
    """The server's application on a loopback port of this event loop; see the module."""

    def __init__(
        self, root: Path, server: uvicorn.Server, storage: SqliteStorage, faults: Faults, url: str
    ) -> None:
        self.root = root
        self.url = url
        self.storage = storage
        self.faults = faults
        self._server = server
        self._clients: list[Client] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, root: Path, **settings: Any) -> AsyncIterator[InProcessRelay]:
        """Serve a fresh relay whose data is under ``root / "relay"``; ``settings`` are
        :class:`ServerConfig` fields (the per-address rate limits are off by default)."""
        data = root / "relay"
        data.mkdir(parents=True, exist_ok=True)
        config = ServerConfig(
            data=data,
            port=0,
            log_level="warning",
            rate_per_address=0,
            rate_sealed_per_address=0,
        )
        config = replace(config, **settings)
        storage = SqliteStorage(data / "sealpost.db")
        faults = Faults()
        app = create_app(
            config,
            storage=storage,
            fanout=LocalFanout(),
            server_key=SigningKey.generate(system_rng),
            log_key=SigningKey.generate(system_rng),
            clock=system_clock,
            rng=system_rng,
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        server = _Server(
            uvicorn.Config(
                faults.wrap(app),
                log_config=None,
                log_level=logging.WARNING,
                access_log=False,
                lifespan="on",
                ws="websockets-sansio",
                ws_max_size=config.max_frame,
                ws_per_message_deflate=False,
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        relay = cls(root, server, storage, faults, f"http://{host}:{port}")
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the in-process relay did not start")
                await asyncio.sleep(0.005)
            yield relay
        finally:
            for client in relay._clients:
                with contextlib.suppress(Exception):
                    await client.close()
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            sock.close()

    async def client(self, name: str, **options: Any) -> Client:
        """Register ``name`` on this relay with a profile under ``root``; closed at the end."""
        client = await Client.create(
            self.root / name,
            PASSCODE,
            server_url=self.url,
            username=name,
            params=TEST_PARAMS,
            **options,
        )
        self._clients.append(client)
        return client

    async def link(self, existing: Client, name: str) -> Client:
        """A new device ``name`` of ``existing``'s account, linked as a user would (the
        new device shows the code, ``existing`` confirms it); closed at the end."""
        shown: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        task = asyncio.ensure_future(
            Client.link_new(
                self.root / f"{existing.username}-{name}",
                PASSCODE,
                server_url=self.url,
                device_name=name,
                show=lambda code, confirmation: shown.put_nowait((code, confirmation)),
                params=TEST_PARAMS,
            )
        )
        try:
            code, confirmation = await asyncio.wait_for(shown.get(), 20)
            await existing.link_accept(code, lambda _name, digits: digits == confirmation)
            new = await asyncio.wait_for(task, 30)
        finally:
            task.cancel()
        self._clients.append(new)
        return new

    async def open(self, path: Path) -> Client:
        """Open the profile at ``path`` (a :func:`crash` copy, say); closed at the end."""
        client = await Client.open(path, PASSCODE)
        self._clients.append(client)
        return client


def texts(events: list[Any]) -> list[str]:
    """The texts of the messages among ``events``, in order."""
    return [e.message.text for e in events if isinstance(e, MessageReceived)]
