"""The hand-off socket (client/handoff.py) without a server: who may hand a send to the
profile's holder, what a malformed request gets, and that nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from sealpost.client.handoff import SOCKET_FILE, HandoffServer, SendRequest, hand_off
from sealpost.client.store import TEST_PARAMS, Store

PASSCODE = "correct horse"


def test_handoff_checks_the_passcode_and_the_request(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "p", PASSCODE, params=TEST_PARAMS)
    asked: list[SendRequest] = []

    async def on_send(request: SendRequest) -> dict[str, Any]:
        asked.append(request)
        return {"id": "00" * 16}

    async def scenario() -> None:
        assert await hand_off(tmp_path / "p", PASSCODE, SendRequest("bob", "hi")) is None
        server = await HandoffServer.start(store, on_send)
        try:
            path = tmp_path / "p" / SOCKET_FILE
            assert path.stat().st_mode & 0o777 == 0o600
            wrong = await hand_off(tmp_path / "p", "guess", SendRequest("bob", "hi"))
            assert wrong == {"error": "wrong passcode", "code": 3} and asked == []
            file = tmp_path / "f.txt"
            right = await hand_off(tmp_path / "p", PASSCODE, SendRequest("bob", "hi", file))
            assert right == {"id": "00" * 16}
            assert [(r.to, r.text, r.file) for r in asked] == [("bob", "hi", file.absolute())]
            assert "hi" not in repr(asked[0])
            for line in (
                b"not json\n",
                b'{"to": "bob"}\n',
                b'{"passcode": 1, "to": 2, "text": 3}\n',
            ):
                reader, writer = await asyncio.open_unix_connection(str(path))
                writer.write(line)
                await writer.drain()
                assert json.loads(await reader.readline())["code"] == 2
                writer.close()
            assert len(asked) == 1
        finally:
            await server.close()
        assert not (tmp_path / "p" / SOCKET_FILE).exists()
        # a socket nobody serves (its holder was killed) is ignored by senders
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(tmp_path / "p" / SOCKET_FILE))
        stale.close()
        assert await hand_off(tmp_path / "p", PASSCODE, SendRequest("bob", "hi")) is None
        server = await HandoffServer.start(store, on_send)  # the holder replaces it
        await server.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
