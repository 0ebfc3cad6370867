"""Crash safety: kill -9 the server while clients send; every acknowledged message is then
delivered exactly once."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import httpx
from helpers import Client, Device, ServerProcess, unb64, wait_for


def test_kill_9_mid_send_loses_and_duplicates_nothing(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(
        "--rate-per-address", "0", "--rate-sealed-per-address", "0", "--fetch-batch", "5000"
    )
    bob_device = Device.generate()
    with Client(server.url, bob_device) as bob:
        assert bob.register("bob").status_code == 201
    acknowledged: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        with Client(server.url) as client:
            n = 0
            while not stop.is_set():
                body = f"w{worker}-{n}-".encode() + os.urandom(8).hex().encode()
                n += 1
                try:
                    response = client.send_sealed([(bob_device.account_id, 1, body)])
                except httpx.TransportError:
                    return  # the server is gone; this send was never acknowledged
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(body)

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= 150, what="acknowledged sends")
    server.kill9()  # while the senders are still sending
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    with lock:
        acked = list(acknowledged)

    server.start()
    with Client(server.url, bob_device) as bob:
        page = bob.request("GET", "/v1/messages").json()
        assert page["more"] is False
        delivered = [unb64(m["body"]) for m in page["messages"]]
        assert len(delivered) == len(set(delivered)), "a message was stored twice"
        assert set(acked) <= set(delivered), "an acknowledged message was lost"
        # per sender, the queue keeps the order in which sends were acknowledged
        for worker in range(4):
            mine = [b for b in delivered if b.startswith(f"w{worker}-".encode())]
            assert mine == sorted(mine, key=lambda b: int(b.split(b"-")[1]))
        with bob.stream() as stream:
            frames = stream.receive_messages(len(delivered))
            assert [unb64(f["body"]) for f in frames] == delivered
            for frame in frames:
                stream.ack(frame["id"])
        wait_for(
            lambda: bob.request("GET", "/v1/messages").json()["messages"] == [],
            what="all acks to commit",
        )
