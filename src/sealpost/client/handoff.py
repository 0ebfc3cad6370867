"""Hand a send to the process that holds the profile, over a Unix socket in it.

One process at a time holds a profile (:mod:`sealpost.client.profilelock`). A long-running
one (``sealpost listen``, a bot) would then make every other command on that profile wait
and fail; for sending, that is the one a user runs beside ``listen``. So the holder may
serve ``send.sock`` in the profile directory (the directory is 0700, the socket 0600):
another process connects, proves it knows the passcode, and the holder sends the message
itself, with its own sessions, so no message key is ever used twice.

The exchange is one JSON line each way (UTF-8, at most :data:`MAX_REQUEST` bytes)::

    → {"passcode": "...", "to": "bob", "text": "hi", "file": "/abs/path" | null}
    ← {"id": "<message id hex>"}  or  {"error": "one sentence", "code": <exit code>}

The passcode is checked as :meth:`~sealpost.client.store.Store.check_passcode` does (one
Argon2id derivation per try, one try at a time): a process that can reach the socket can
read the keyfile too, and guessing through the socket costs it what guessing offline does.
The holder's answer is whatever its ``on_send`` callback returns; the CLI's turns errors
into the sentence and exit code that command would have printed itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealpost.client.store import Store

__all__ = ["MAX_REQUEST", "SOCKET_FILE", "HandoffServer", "SendRequest", "hand_off"]

log = logging.getLogger("sealpost.client.handoff")

SOCKET_FILE = "send.sock"
MAX_REQUEST = 256 * 1024  # a text is at most 64 KiB; a file goes by its path
_CONNECT_TIMEOUT = 2.0  # a holder that does not answer the connect is not serving


@dataclass(frozen=True, slots=True)
class SendRequest:
    to: str
    text: str
    file: Path | None = None

    def __repr__(self) -> str:
        return f"SendRequest(to={self.to!r}, {len(self.text)} characters)"  # no text, no passcode


OnSend = Callable[[SendRequest], Awaitable[dict[str, Any]]]


class HandoffServer:
    """``send.sock`` served by the process holding the profile; :meth:`close` when done."""

    def __init__(self, server: asyncio.AbstractServer, path: Path) -> None:
        self._server = server
        self.path = path

    @classmethod
    async def start(cls, store: Store, on_send: OnSend) -> HandoffServer:
        """Serve the profile of ``store`` (whose lock this process holds, so any socket file
        there is a stale one from a process that died). Raises ``OSError`` if the socket
        cannot be made (a path too long for a Unix socket, say)."""
        path = store.path / SOCKET_FILE
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        checking = asyncio.Lock()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                answer = await _answer(reader, store, on_send, checking)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass  # the other side went away
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        server = await asyncio.start_unix_server(handle, path=str(path), limit=MAX_REQUEST)
        os.chmod(path, 0o600)
        return cls(server, path)

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(OSError):
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _answer(
    reader: asyncio.StreamReader, store: Store, on_send: OnSend, checking: asyncio.Lock
) -> dict[str, Any]:
    try:
        line = await reader.readline()
        doc = json.loads(line)
        passcode, to, text = doc["passcode"], doc["to"], doc["text"]
        file = doc.get("file")
        if not all(isinstance(v, str) for v in (passcode, to, text)) or not (
            file is None or (isinstance(file, str) and os.path.isabs(file))
        ):
            raise TypeError("fields")
    except (ValueError, KeyError, TypeError, asyncio.LimitOverrunError):
        return {"error": "the hand-off request is malformed", "code": 2}
    async with checking:  # one Argon2id derivation at a time
        ok = await asyncio.to_thread(store.check_passcode, passcode)
    if not ok:
        log.warning("a hand-off with a wrong passcode was refused")
        return {"error": "wrong passcode", "code": 3}
    return await on_send(SendRequest(to, text, None if file is None else Path(file)))


async def hand_off(
    profile: Path, passcode: str, request: SendRequest, *, timeout: float = 600.0
) -> dict[str, Any] | None:
    """Give ``request`` to the process serving ``profile``'s socket and return its answer;
    ``None`` if no process serves it (the caller then opens the profile itself)."""
    path = Path(profile) / SOCKET_FILE
    if not path.is_socket():
        return None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=MAX_REQUEST), _CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        return None  # a stale socket: nobody listens on it
    try:
        doc = {
            "passcode": passcode,
            "to": request.to,
            "text": request.text,
            "file": None if request.file is None else str(request.file.absolute()),
        }
        writer.write(json.dumps(doc).encode() + b"\n")
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), timeout))
    except (OSError, ValueError, TimeoutError):
        return {"error": "the process holding the profile did not answer the hand-off", "code": 1}
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not isinstance(answer, dict):
        return {"error": "the process holding the profile answered nonsense", "code": 1}
    return answer
