"""The outbox keeps a group send as the same bytes across a crash, in the form the relay
takes: a group-sealed body goes out as ``body`` with ``[account, device]`` recipients, an
outbox row from before envelope keys (shared part and wraps) in the legacy form."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3

from sealpost.client.rows import Outgoing, Prepared
from sealpost.client.send_store import OutboxRepository, decode, outboxed
from sealpost.client.transport import _multi_frame, b64
from sealpost.protocol.content import TextContent
from sealpost.protocol.group_sealed import seal_group


def _prepared(multi: tuple[bytes, list[tuple[bytes, int, bytes]]]) -> Prepared:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
    finally:
        loop.close()
    text = TextContent(os.urandom(16), 1, os.urandom(32), "alice", "hi", os.urandom(32))
    return Prepared(Outgoing("#g", text, future, store=True), None, [], {}, [], multi)


def test_group_sealed_send_survives_the_outbox_and_goes_out_in_the_new_form() -> None:
    body = seal_group(b"inner", os.urandom(32), os.urandom)
    a, b = os.urandom(16), os.urandom(16)
    recipients = [(a, 1, b""), (b, 2, b"")]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, message_uuid BLOB, payload BLOB)")
    row = OutboxRepository(conn).add([outboxed(_prepared((body, recipients)))])
    (payload,) = conn.execute("SELECT payload FROM outbox WHERE id = ?", (row,)).fetchone()
    [back] = decode(payload)
    assert back.multi == (body, recipients)
    frame = json.loads(_multi_frame(7, body, recipients, {}))
    assert frame == {
        "type": "send_multi",
        "req": 7,
        "body": b64(body),
        "recipients": [[a.hex(), 1], [b.hex(), 2]],
    }


def test_a_legacy_outbox_row_goes_out_in_the_legacy_form() -> None:
    shared, wrap = b"\x00" * 80, os.urandom(48)
    a = os.urandom(16)
    frame = json.loads(_multi_frame(3, shared, [(a, 1, wrap)], {a: b"\x01" * 32}))
    assert frame["shared"] == b64(shared) and "body" not in frame
    assert frame["recipients"] == [[a.hex(), 1, b64(wrap)]]
    assert frame["tokens"] == {a.hex(): b64(b"\x01" * 32)}
