"""The outbox keeps a group send as the same bytes across a crash, in the form the relay
takes: a group-sealed body goes out as ``body`` with ``[account, device]`` recipients, an
outbox row from before envelope keys (shared part and wraps) in the legacy form."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from sealpost._errors import DecodeError
from sealpost.client.rows import Outgoing, Prepared
from sealpost.client.services.delivery import outboxed
from sealpost.client.sockets import _multi_frame, b64
from sealpost.client.status import MessageStatus
from sealpost.client.store import TEST_PARAMS, Store
from sealpost.client.store.connection import Connection
from sealpost.client.store.messages import OutgoingRow
from sealpost.client.store.outbox import Outboxed, OutboxRepository, Retry, _encode, decode
from sealpost.protocol.content import TextContent, encode_unpadded
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
    db = Connection(conn)
    db.in_unit = True  # as inside store.unit()
    row = OutboxRepository(db).add([outboxed(_prepared((body, recipients)))])
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


def test_settle_keeps_only_the_unanswered_sends_and_a_retry_record_survives(
    tmp_path: Path,
) -> None:
    store = Store.create(tmp_path / "p", "a long passcode", params=TEST_PARAMS)
    try:
        first, second = _prepared((b"one", [])), _prepared((b"two", []))
        second.item.attempts = 2
        with store.unit() as repos:
            row = repos.outbox.add([outboxed(first), outboxed(second)])
        [(got_row, sends)] = store.repos().outbox.pending()
        assert got_row == row and [s.multi for s in sends] == [(b"one", []), (b"two", [])]
        retry = sends[1].retry
        assert retry is not None and retry.attempts == 2 and retry.peer == "#g"
        assert retry.content == second.item.content and retry.store
        with store.unit() as repos:
            repos.outbox.settle(row, [sends[1]])  # the first was answered for
        [(_, kept)] = store.repos().outbox.pending()
        assert kept == [sends[1]]
        with store.unit() as repos:
            repos.outbox.settle(row, [])
        assert store.repos().outbox.pending() == []
    finally:
        store.close()


def test_an_outbox_row_from_before_retry_records_decodes_without_one() -> None:
    legacy = json.dumps([{"uuid": "", "messages": [], "tokens": {}, "own": [], "multi": None}])
    [send] = decode(legacy.encode())
    assert send.retry is None and send.envelopes == []
    with pytest.raises(DecodeError):
        decode(b'[{"uuid": "zz"}]')


def test_status_updates_of_outgoing_messages_follow_the_table(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "p", "a long passcode", params=TEST_PARAMS)
    try:
        ids = [os.urandom(16) for _ in range(3)]
        peer = os.urandom(16)
        rows = [OutgoingRow(i, peer, "t", 1, 1, peer, None, None, None) for i in ids]
        with store.unit() as repos:
            repos.messages.add_outgoing(rows)
            repos.messages.mark_outgoing([ids[0]], MessageStatus.DELIVERED)  # receipt first
            repos.messages.mark_outgoing(ids[:2], MessageStatus.SENT)
            repos.messages.mark_outgoing([ids[2]], MessageStatus.FAILED)
            repos.messages.mark_outgoing([ids[2]], MessageStatus.SENT)  # failed stays failed
        status = {m.message_id: m.status for m in store.repos().messages.history(peer, 0, 10)}
        assert [status[i] for i in ids] == ["delivered", "sent", "failed"]
    finally:
        store.close()


def _rich_sends() -> list[Outboxed]:
    a, b, g = os.urandom(16), os.urandom(16), os.urandom(32)
    text = TextContent(os.urandom(16), 5, os.urandom(32), "alice", "héllo", None)
    group_text = TextContent(os.urandom(16), 6, os.urandom(32), "alice", "to all", g)
    return [
        Outboxed(
            text.message_id,
            [(a, 1, os.urandom(1700)), (a, 2, os.urandom(1700))],
            {a: os.urandom(32)},
            None,
            [(b, 3, os.urandom(900))],
            Retry("bob", None, False, True, True, text, 1, encode_unpadded(text)),
        ),
        Outboxed(
            group_text.message_id,
            [],
            {a: os.urandom(32), b: os.urandom(32)},
            (os.urandom(300), [(a, 1, b""), (b, 2, b"")]),
            [],
            Retry("", g, False, True, True, group_text, 0, encode_unpadded(group_text)),
        ),
        Outboxed(b"", [(b, 9, os.urandom(10))], {}, None, [], None),
    ]


def _json_row(sends: list[Outboxed]) -> bytes:
    """The payload as outbox rows were written before the binary form."""

    def envelopes(items: list[tuple[bytes, int, bytes]]) -> list[list[object]]:
        return [[account.hex(), device, b64(body)] for account, device, body in items]

    docs = []
    for s in sends:
        r = s.retry
        docs.append(
            {
                "uuid": s.uuid.hex(),
                "messages": envelopes(s.envelopes),
                "tokens": {account.hex(): b64(t) for account, t in s.tokens.items()},
                "own": envelopes(s.own),
                "multi": None
                if s.multi is None
                else {"shared": b64(s.multi[0]), "wraps": envelopes(s.multi[1])},
                "retry": None
                if r is None
                else {
                    "peer": r.peer,
                    "group": None if r.group is None else r.group.hex(),
                    "to_self": r.to_self,
                    "transcript": r.transcript,
                    "store": r.store,
                    "content": b64(encode_unpadded(r.content)),
                    "attempts": r.attempts,
                },
            }
        )
    return json.dumps(docs).encode()


def test_a_row_is_stored_binary_and_reads_back_as_it_was_written() -> None:
    sends = _rich_sends()
    payload = _encode(sends)
    assert payload[0] == 0x03  # with the send id seed (0x02 rows: tests/unit/test_send_id.py)
    assert decode(payload) == sends
    # a third smaller than the JSON rows of before (no base64, no field names)
    assert len(payload) < 0.8 * len(_json_row(sends))


def test_a_json_row_written_before_the_binary_form_still_reads() -> None:
    sends = _rich_sends()
    assert decode(_json_row(sends)) == sends


def test_a_corrupt_binary_row_is_a_decode_error_and_nothing_else() -> None:
    payload = _encode(_rich_sends())
    for cut in range(1, len(payload), 7):
        with pytest.raises(DecodeError):
            decode(payload[:cut])
    with pytest.raises(DecodeError):
        decode(payload + b"\x00")
    rng = random.Random(15)
    for _ in range(400):
        broken = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        with contextlib.suppress(DecodeError):  # or it decodes: anything but another error
            decode(bytes(broken))


def test_a_send_is_encoded_once_and_anew_when_its_content_is_replaced() -> None:
    """The plaintext, the transcript and the retry record share one encoding; a group send
    whose content is stamped again (a retry at a new group version) gets the new one."""
    item = _prepared((b"x", [])).item
    first = item.unpadded()
    assert first == encode_unpadded(item.content) and item.unpadded() is first
    retry = outboxed(Prepared(item, None, [], {}, [], (b"x", []))).retry
    assert retry is not None and retry.encoded is first  # stored as it is
    assert isinstance(item.content, TextContent)
    item.content = dataclasses.replace(item.content, group_version=7, group_hash=os.urandom(32))
    assert item.unpadded() == encode_unpadded(item.content) != first


def test_the_unsent_messages_of_a_binary_row_are_counted(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "p", "a long passcode", params=TEST_PARAMS)
    try:
        assert store.repos().outbox.unsent_messages() == 0
        with store.unit() as repos:
            repos.outbox.add(_rich_sends())  # two history messages and a control send
        assert store.repos().outbox.unsent_messages() == 2
    finally:
        store.close()
