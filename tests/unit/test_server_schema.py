"""The request declarations (sealpost.server.schema, .frames): strict, unknown fields
refused, errors that name the field and never echo a value, and the hand-formatted hot
frames equal to their declarations."""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpost.server import frames, schema, stream
from sealpost.server.errors import ApiError
from sealpost.server.stream import message_text, sent_text

MARKER = "SeCrEt"  # a value that must never come back in an error message
REQUESTS = [
    schema.RegisterRequest,
    schema.AddDeviceRequest,
    schema.RemoveDeviceRequest,
    schema.UploadPreKeys,
    schema.ProvisionRequest,
    schema.SendRequest,
    schema.MultiSendRequest,
]
CLIENT_FRAMES = [
    frames.AuthFrame,
    frames.SendFrame,
    frames.SendMultiFrame,
    frames.AckFrame,
    frames.LinkOpenFrame,
]


def _decode(data: bytes, kind: type[object]) -> ApiError | None:
    try:
        value = schema.decode(data, kind)
        if isinstance(value, schema.MultiSendRequest):
            value.group_recipients()
    except ApiError as exc:
        return exc
    return None


@pytest.mark.parametrize("kind", REQUESTS + CLIENT_FRAMES)
def test_every_client_body_refuses_unknown_fields(kind: type[msgspec.Struct]) -> None:
    assert kind.__struct_config__.forbid_unknown_fields
    error = _decode(json.dumps({"sealed_from_anyon": False}).encode(), kind)
    assert error is not None and error.status == 400 and error.code == "invalid_request"
    assert "sealed_from_anyon" in error.message


def _field_names(kind: type[msgspec.Struct]) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(kind)]


_values = st.recursive(
    st.sampled_from([MARKER, MARKER * 40, f"{MARKER}==", f" {MARKER} "])
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.none(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.just("extra"), inner),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(REQUESTS + CLIENT_FRAMES), data=st.data())
def test_errors_name_the_field_never_its_value(
    kind: type[msgspec.Struct], data: st.DataObject
) -> None:
    names = _field_names(kind)
    doc = data.draw(st.dictionaries(st.sampled_from(names), _values, min_size=1))
    if kind.__struct_config__.tag is not None:
        doc["type"] = data.draw(st.sampled_from([kind.__struct_config__.tag, MARKER]))
    error = _decode(json.dumps(doc).encode(), kind)
    if error is not None:
        assert MARKER.lower() not in error.message.lower(), error.message
        assert error.code in {"invalid_request", "malformed_json"}


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"messages": [{"account_id": "00", "device_id": ' + b"1" * 5000 + b"}]}",
        b"\xff",
        b'{"messages": []} trailing',
    ],
)
def test_hostile_json_is_a_400(body: bytes) -> None:
    error = _decode(body, schema.SendRequest)
    assert error is not None and error.status == 400


def test_fixed_length_fields_are_exact_and_hex_ids_strict() -> None:
    envelope = {"account_id": "00" * 16, "device_id": 1, "body": "AA=="}
    assert _decode(json.dumps({"messages": [envelope]}).encode(), schema.SendRequest) is None
    for account_id in ["00" * 15 + "0\n", " " + "00" * 15 + " ", "00" * 15, "zz" * 16]:
        bad = {"messages": [{**envelope, "account_id": account_id}]}
        error = _decode(json.dumps(bad).encode(), schema.SendRequest)
        assert error is not None and "messages[0].account_id" in error.message
    revocation = base64.b64encode(os.urandom(125)).decode()
    error = _decode(json.dumps({"revocation": revocation}).encode(), schema.RemoveDeviceRequest)
    assert error is not None and error.message.startswith("revocation")


def test_hand_formatted_frames_are_their_declarations() -> None:
    message_id, body = os.urandom(16), os.urandom(300)
    pushed = msgspec.json.decode(message_text(message_id, body, 1234), type=frames.MessageFrame)
    assert pushed == frames.MessageFrame(id=message_id.hex(), body=body, received_at=1234)
    assert msgspec.json.decode(sent_text(7, 3), type=frames.SentFrame) == frames.SentFrame(
        req=7, stored=3
    )


def test_every_struct_is_exported() -> None:
    for module in (schema, frames):
        declared = {
            name
            for name, value in vars(module).items()
            if inspect.isclass(value)
            and issubclass(value, msgspec.Struct)
            and value.__module__ == module.__name__
            and not name.startswith("_")
        }
        assert declared <= set(module.__all__), declared - set(module.__all__)


def test_every_frame_type_the_server_sends_is_declared() -> None:
    """A ``"type"`` written in the server's source (by hand or in a docstring) names a
    declared frame, so a new frame cannot go undocumented in /openapi.json."""
    source = Path(stream.__file__).parent
    written = set()
    for path in source.rglob("*.py"):
        written |= set(re.findall(r'"type": ?"([a-z_]+)"', path.read_text()))
    written -= {"integer", "string", "object", "array"}  # JSON Schema, in openapi.py
    declared = {
        kind.__struct_config__.tag
        for socket in frames.WEBSOCKETS.values()
        for kind in socket["client"] + socket["server"]
    }
    assert written <= declared, written - declared
