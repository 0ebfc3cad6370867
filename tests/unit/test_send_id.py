"""Send ids (sealpost.protocol.send_id): frozen known answers for the three derivations
(docs/PROTOCOL.md, "Send ids"), what each depends on, and how the client carries them: the
outbox keeps the seed (a row from before it decodes without one) and the wire form derives
each envelope's id from it (none without a seed, as old clients sent)."""

from __future__ import annotations

import base64
import dataclasses
import json

from sealpost.client.sockets import _multi_frame, _send_frame, envelopes_json
from sealpost.client.store.outbox import Outboxed, _encode, decode
from sealpost.protocol.send_id import (
    SEND_ID_LEN,
    envelope_send_id,
    multi_send_id,
    queued_message_id,
)

SEED = bytes(range(16))
ACCOUNT = bytes(range(16, 32))


def test_known_answers() -> None:
    assert envelope_send_id(SEED, ACCOUNT, 1).hex() == "7949e48dc4f503025336987e31eec22f"
    assert envelope_send_id(SEED, ACCOUNT, 2).hex() == "a8265eb56841bbd90e1d061118d6bb66"
    assert multi_send_id(SEED).hex() == "34127cac6e8f3fbcd96ba008c274921a"
    assert queued_message_id(SEED, ACCOUNT, 1).hex() == "78734acf8c54e19e5fa356d99ee0ca31"


def test_each_input_changes_the_id() -> None:
    other_seed, other_account = bytes(16), bytes(reversed(ACCOUNT))
    envelope = {
        envelope_send_id(SEED, ACCOUNT, 1),
        envelope_send_id(SEED, ACCOUNT, 2),
        envelope_send_id(SEED, other_account, 1),
        envelope_send_id(other_seed, ACCOUNT, 1),
        multi_send_id(SEED),
        multi_send_id(other_seed),
    }
    assert len(envelope) == 6 and all(len(i) == SEND_ID_LEN for i in envelope)
    queued = {
        queued_message_id(SEED, ACCOUNT, 1),
        queued_message_id(SEED, ACCOUNT, 2),
        queued_message_id(SEED, other_account, 1),
        queued_message_id(other_seed, ACCOUNT, 1),
    }
    assert len(queued) == 4


def test_the_outbox_keeps_the_seed_and_old_rows_have_none() -> None:
    sent = Outboxed(b"", [(ACCOUNT, 1, b"body")], {}, None, [], None, SEED)
    row = _encode([sent])
    assert row[0] == 0x03
    [back] = decode(row)
    assert back == sent
    # a binary row of before send ids (0x02): the same without the seed's 1 + 16 bytes
    v2 = b"\x02" + row[1:5] + row[5 + 1 + len(SEED) :]
    [before] = decode(v2)
    assert before == dataclasses.replace(sent, send_id=b"")
    old_json = json.dumps([{"uuid": "", "messages": [[ACCOUNT.hex(), 1, "Ym9keQ=="]],
                            "tokens": {}, "multi": None}])  # fmt: skip
    [oldest] = decode(old_json.encode())
    assert oldest.send_id == b"" and oldest.envelopes == sent.envelopes


def test_the_wire_form_carries_the_derived_ids_only_with_a_seed() -> None:
    messages = [(ACCOUNT, 1, b"a"), (ACCOUNT, 2, b"b")]
    expected = [envelope_send_id(SEED, ACCOUNT, 1), envelope_send_id(SEED, ACCOUNT, 2)]
    with_ids = envelopes_json(messages, SEED)
    assert [base64.b64decode(m["send_id"]) for m in with_ids] == expected
    assert all("send_id" not in m for m in envelopes_json(messages))
    frame = json.loads(_send_frame(7, messages, {}, SEED))
    assert frame == {"type": "send", "req": 7, "messages": with_ids}
    assert json.loads(_send_frame(7, messages, {}))["messages"] == envelopes_json(messages)
    multi = json.loads(_multi_frame(8, b"\x01\x23" + bytes(60), messages, {}, SEED))
    assert base64.b64decode(multi["send_id"]) == multi_send_id(SEED)
