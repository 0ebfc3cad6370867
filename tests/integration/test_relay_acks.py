"""Acks and reading on the relay's sockets, over raw TCP to a real server: acks written
together with the close, in one segment, are committed; a burst of acks past the bound a
connection may hold uncommitted all commit; a client that floods frames while its
handler cannot go on is held back by the socket (the server stops reading it) and the
server's memory does not follow the flood."""

from __future__ import annotations

import json
import os
import select
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from helpers import TIMEOUT, Client, ServerProcess, b64, unb64, wait_for
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from sealpost.protocol.signing import sign_websocket_challenge


class RawSocket:
    """A WebSocket client on a plain socket (websockets' sans-I/O core), so that a test
    decides what goes out in one segment, and when it stops reading."""

    def __init__(self, url: str, *, buffers: int | None = None) -> None:
        parts = urlsplit(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if buffers is not None:  # before connecting, so the window stays this small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((parts.hostname, parts.port))
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.ws.send_request(self.ws.connect())
        self._flush()
        self._pending: list[Frame] = []
        while not any(isinstance(e, Response) for e in self._read()):
            pass
        assert self.ws.handshake_exc is None, self.ws.handshake_exc

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.ws.data_to_send()))

    def _read(self) -> list[Any]:
        """Read once; keep the frames, return every event."""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.ws.receive_data(data)
        events = self.ws.events_received()
        self._pending += [e for e in events if isinstance(e, Frame)]
        return events

    def recv(self) -> dict[str, Any]:
        while not self._pending:
            self._read()
        frame = self._pending.pop(0)
        assert frame.opcode is Opcode.TEXT, frame
        doc: dict[str, Any] = json.loads(frame.data)
        return doc

    def send(self, *texts: str, close: bool = False) -> None:
        """``texts`` (and a close, with ``close``) in one ``sendall``."""
        for text in texts:
            self.ws.send_text(text.encode())
        if close:
            self.ws.send_close(1000)
        self._flush()

    def close(self) -> None:
        self.sock.close()


def stream_of(client: Client, challenges: list[dict[str, Any]] | None = None) -> RawSocket:
    """``client``'s device's stream, authenticated (the challenge appended to
    ``challenges``)."""
    assert client.device is not None
    device = client.device
    raw = RawSocket(client.url.replace("http://", "ws://", 1) + "/v1/stream")
    challenge = raw.recv()
    if challenges is not None:
        challenges.append(challenge)
    raw.send(
        json.dumps(
            sign_websocket_challenge(
                device.keys.signing_key,
                device.account_id,
                device.device_id,
                unb64(challenge["challenge"]),
            )
        )
    )
    assert raw.recv() == {"type": "ready"}
    return raw


def queued(client: Client) -> list[str]:
    return [m["id"] for m in client.request("GET", "/v1/messages").json()["messages"]]


def fill(recipient: Client, count: int) -> None:
    """Queue ``count`` messages for ``recipient``, pipelined on one sealed socket."""
    assert recipient.device is not None
    account_id = recipient.device.account_id
    token = b64(recipient.device.delivery_token)
    raw = RawSocket(recipient.url.replace("http://", "ws://", 1) + "/v1/sealed")
    try:
        for start in range(0, count, 100):
            reqs = range(start, min(count, start + 100))
            raw.send(
                *(
                    json.dumps(
                        {
                            "type": "send",
                            "req": req,
                            "messages": [
                                {
                                    "account_id": account_id.hex(),
                                    "device_id": 1,
                                    "body": b64(os.urandom(40)),
                                }
                            ],
                            "tokens": {account_id.hex(): token},
                        }
                    )
                    for req in reqs
                )
            )
            assert [raw.recv() for _ in reqs] == [
                {"type": "sent", "req": req, "stored": 1} for req in reqs
            ]
    finally:
        raw.close()


def ack(message_id: str) -> str:
    return json.dumps({"type": "ack", "id": message_id})


def test_acks_written_with_the_close_in_one_segment_are_committed(
    registered: Callable[..., Client],
) -> None:
    """The protocol hears the acks and the close in one read: the acks are taken as they
    are parsed, and the connection ending lets them reach the database."""
    bob = registered()
    fill(bob, 5)
    raw = stream_of(bob)
    try:
        pushed = [raw.recv() for _ in range(6)]
        assert [p["type"] for p in pushed] == ["message"] * 5 + ["empty"]
        raw.send(*(ack(p["id"]) for p in pushed[:4]), close=True)
    finally:
        raw.close()
    wait_for(lambda: queued(bob) == [pushed[4]["id"]], what="the four acks to commit")


def test_a_burst_of_acks_past_the_uncommitted_bound_all_commit(
    registered: Callable[..., Client],
) -> None:
    """1,500 acks in one write: more than a connection may hold uncommitted (1,024), so
    its reading waits for a commit partway; none is lost, and the socket goes on."""
    bob = registered()
    fill(bob, 1500)
    raw = stream_of(bob)
    try:
        ids = []
        while len(ids) < 1500:
            frame = raw.recv()
            if frame["type"] == "message":
                ids.append(frame["id"])
        raw.send(*(ack(i) for i in ids))
        wait_for(lambda: queued(bob) == [], what="1,500 acks to commit")
        fill(bob, 1)  # still served
        frame = raw.recv()
        while frame["type"] != "message":
            frame = raw.recv()
    finally:
        raw.close()


def _rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_flooding_frames_while_its_handler_is_blocked_is_held_back(
    make_server: Callable[..., ServerProcess],
) -> None:
    """On /v1/sealed, sends that fail to decode are answered one by one; a client that
    never reads the answers fills the server's write buffer, its handler waits to write,
    and the frames it keeps sending pile up only to the inbox's bound: the server stops
    reading, so the client's writes stall, long before the 64 MB it tries to send, and
    the server's memory grows by far less than what was sent. Once the client reads
    again, the answers come, in order."""
    server = make_server("--rate-sealed-per-address", "0", "--sealed-idle-timeout", "600")
    url = server.url.replace("http://", "ws://", 1) + "/v1/sealed"
    raw = RawSocket(url, buffers=16 * 1024)
    frame = b'{"type":"send","req":%d,"messages":"not a list"}'
    try:
        before = _rss_kib(server)
        raw.sock.setblocking(False)
        sent = 0
        req = 0
        chunk = b""
        while sent < 64 << 20:
            if not chunk:
                for _ in range(100):
                    raw.ws.send_text(frame % req)
                    req += 1
                chunk = b"".join(raw.ws.data_to_send())
            _, writable, _ = select.select([], [raw.sock], [], 3.0)
            if not writable:
                break  # stalled: the server stopped reading
            try:
                n = raw.sock.send(chunk)
            except BlockingIOError:
                continue
            sent += n
            chunk = chunk[n:]
        assert sent < 32 << 20, f"{sent} bytes went out: the server kept reading"
        grown = _rss_kib(server) - before
        assert grown < 24 * 1024, f"the server grew {grown} KiB for {sent} bytes sent"
        raw.sock.setblocking(True)
        raw.sock.settimeout(TIMEOUT)
        answers = [raw.recv() for _ in range(1000)]
        assert [a["req"] for a in answers] == list(range(1000))
        assert {a["type"] for a in answers} == {"error"}
    finally:
        raw.close()


def acks(message_ids: list[str]) -> str:
    return json.dumps({"type": "acks", "ids": message_ids})


def test_the_challenge_offers_the_acks_frame_and_one_frame_acks_many(
    registered: Callable[..., Client],
) -> None:
    """``{"type":"acks","ids":[...]}`` deletes each of its messages, as as many ``ack``
    frames would; the challenge says the server takes it, so a client of an older server
    goes on with ``ack``."""
    bob = registered()
    fill(bob, 300)
    challenges: list[dict[str, Any]] = []
    raw = stream_of(bob, challenges)
    try:
        assert challenges[0]["features"] == ["acks"]
        ids: list[str] = []
        while len(ids) < 300:
            frame = raw.recv()
            if frame["type"] == "message":
                ids.append(frame["id"])
        raw.send(acks(ids[:256]), acks(ids[256:299]))  # the last one stays queued
        wait_for(lambda: queued(bob) == [ids[299]], what="299 acks in two frames to commit")
        raw.send(ack(ids[299]))
        wait_for(lambda: queued(bob) == [], what="the last ack")
    finally:
        raw.close()


def test_an_acks_frame_out_of_bounds_closes_the_stream_and_deletes_nothing(
    registered: Callable[..., Client],
) -> None:
    """No ids, more than 256, or an id that is not 16 bytes of hex: 4400, as any frame
    that does not decode, and none of its ids is acked."""
    bob = registered()
    fill(bob, 3)
    for bad in (
        {"type": "acks", "ids": []},
        {"type": "acks", "ids": ["00" * 16] * 257},
        {"type": "acks", "ids": ["zz" * 16]},
        {"type": "acks", "ids": "00" * 16},
        {"type": "acks", "ids": ["00" * 16], "extra": 1},
    ):
        raw = stream_of(bob)
        try:
            ids = [raw.recv()["id"] for _ in range(3)]
            assert raw.recv() == {"type": "empty"}
            if bad["ids"] and isinstance(bad["ids"], list) and bad["ids"][0] == "00" * 16:
                bad = {**bad, "ids": [ids[0], *bad["ids"][1:]]}  # a real id among them
            raw.send(json.dumps(bad))
            while True:
                events = raw._read()
                closes = [e for e in events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
                if closes:
                    assert int.from_bytes(closes[0].data[:2]) == 4400, bad
                    break
        finally:
            raw.close()
        assert queued(bob) == ids, bad
