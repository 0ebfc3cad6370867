"""Linking: link code, confirmation code and the provisioning message."""

from __future__ import annotations

import os

import pytest

from sealpost._errors import DecodeError, InvalidMessage
from sealpost.protocol.linking import (
    CODE_PREFIX,
    LinkCode,
    LinkSecrets,
    confirmation_code,
    open_provisioning,
    seal_provisioning,
)

CHANNEL = b"\x07" * 16


def _link(name: str = "laptop") -> tuple[LinkSecrets, LinkCode]:
    secrets = LinkSecrets.generate(os.urandom)
    return secrets, secrets.code(CHANNEL, name)


def test_code_round_trips_as_text_and_bytes() -> None:
    _, code = _link()
    text = code.to_text()
    assert text.startswith(CODE_PREFIX)
    assert LinkCode.from_text(text) == code
    assert LinkCode.from_text("  " + text + "\n") == code
    assert LinkCode.from_bytes(code.to_bytes()) == code


@pytest.mark.parametrize(
    "text",
    ["", "sealpost-link:", "sealpost-link:!!!", "other:AAAA", "sealpost-link:" + "A" * 110],
)
def test_malformed_codes_are_decode_errors(text: str) -> None:
    with pytest.raises(DecodeError):
        LinkCode.from_text(text)


def test_every_truncation_of_a_code_is_refused() -> None:
    _, code = _link()
    raw = code.to_bytes()
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            LinkCode.from_bytes(raw[:cut])
    with pytest.raises(DecodeError):
        LinkCode.from_bytes(raw + b"x")
    with pytest.raises(DecodeError):
        LinkCode(CHANNEL, b"\x01" * 32, b"\x02" * 32, "bad\nname")


def test_provisioning_round_trip_and_both_sides_show_the_same_code() -> None:
    secrets, code = _link()
    kem_public = secrets.kem_public()
    scanned = LinkCode.from_text(code.to_text())
    message = seal_provisioning(b'{"hello": 1}', scanned, kem_public, rng=os.urandom)
    assert open_provisioning(message, secrets, code) == b'{"hello": 1}'
    shown = confirmation_code(code, kem_public)
    assert shown == confirmation_code(scanned, kem_public)
    assert len(shown) == 7 and shown[3] == " " and shown.replace(" ", "").isdigit()


def test_a_relay_that_swaps_the_kem_key_is_caught() -> None:
    _secrets, code = _link()
    other, _ = _link()
    with pytest.raises(DecodeError):
        seal_provisioning(b"x", code, other.kem_public(), rng=os.urandom)


def test_another_code_gives_another_confirmation() -> None:
    secrets, code = _link("laptop")
    attacker, attacker_code = _link("laptop")
    assert confirmation_code(code, secrets.kem_public()) != confirmation_code(
        attacker_code, attacker.kem_public()
    )


def test_tampered_or_misdirected_provisioning_fails() -> None:
    secrets, code = _link()
    message = seal_provisioning(b"payload", code, secrets.kem_public(), rng=os.urandom)
    for at in (0, 5, 40, len(message) - 1):
        bad = bytearray(message)
        bad[at] ^= 1
        with pytest.raises((InvalidMessage, DecodeError)):
            open_provisioning(bytes(bad), secrets, code)
    other, _other_code = _link()
    with pytest.raises(InvalidMessage):
        open_provisioning(message, other, code)
    with pytest.raises(DecodeError):
        open_provisioning(message[:100], secrets, code)


def test_secrets_stay_out_of_repr() -> None:
    secrets, _ = _link()
    assert "hidden" in repr(secrets)
    assert secrets.dh.private_bytes_raw().hex() not in repr(secrets)
