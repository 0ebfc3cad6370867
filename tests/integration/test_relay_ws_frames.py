"""The relay's own parsing of client frames (``LeanWebSocketProtocol.data_received``'s
fast path), over raw TCP to a real server: acks with pings between them, sent a frame a
segment and then cut into segments within frames, all commit, and every ping is
answered with its own pong, in order."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from helpers import Client, wait_for
from test_relay_acks import ack, fill, queued, stream_of
from websockets.frames import Opcode


def test_acks_and_pings_cut_anywhere_all_commit_and_each_ping_is_answered(
    registered: Callable[..., Client],
) -> None:
    bob = registered()
    fill(bob, 6)
    raw = stream_of(bob)
    try:
        pushed = [raw.recv() for _ in range(7)]
        assert [p["type"] for p in pushed] == ["message"] * 6 + ["empty"]
        for i, p in enumerate(pushed[:6]):
            raw.ws.send_text(ack(p["id"]).encode())
            raw.ws.send_ping(b"ping %d" % i)
        frames = raw.ws.data_to_send()
        rest = b"".join(frames[6:])
        # the first three acks and pings a frame a segment, the rest cut every 37 bytes,
        # so that cuts land in headers, masks and payloads
        segments = frames[:6] + [rest[i : i + 37] for i in range(0, len(rest), 37)]
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for segment in segments:
            raw.sock.sendall(segment)
            time.sleep(0.005)
        wait_for(lambda: queued(bob) == [], what="the six acks to commit")
        pongs: list[bytes] = []
        while len(pongs) < 6:
            for frame in raw._read():
                if getattr(frame, "opcode", None) is Opcode.PONG:
                    pongs.append(bytes(frame.data))
        assert pongs == [b"ping %d" % i for i in range(6)]
    finally:
        raw.close()
