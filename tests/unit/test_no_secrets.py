"""No secret appears in any repr or error message (vodozemac pins its Debug output the same
way). Each secret-holding object is rendered and searched for its secret bytes in hex."""

from __future__ import annotations

import pytest

from sealpost.crypto import DhPrivateKey, KemPrivateKey, SigningKey
from sealpost.protocol import DuplicateMessage, InvalidMessage, ProtocolError
from sealpost.protocol.pqxdh import Agreement
from support import SeededRng, established_pair, make_party


def _secret_fragments(secret: bytes) -> list[str]:
    # Any 6-byte window of the secret, in hex, in either case.
    h = secret.hex()
    return [h[i : i + 12] for i in range(0, len(h) - 11, 2)]


def _assert_absent(text: str, secret: bytes) -> None:
    low = text.lower()
    for fragment in _secret_fragments(secret):
        assert fragment not in low, "secret bytes leaked into a repr or message"
    assert repr(secret) not in text


def test_key_reprs_hide_private_bytes() -> None:
    rng = SeededRng("r")
    party = make_party(rng)
    cases = [
        (party.account, party.account.signing_key.private_bytes_raw()),
        (party.device, party.device.signing_key.private_bytes_raw()),
        (party.device, party.device.identity_key.private_bytes_raw()),
        (party.signed_prekey, party.signed_prekey.private_key.private_bytes_raw()),
        (party.one_time_prekey, party.one_time_prekey.private_key.private_bytes_raw()),
        (party.kem_prekey, party.kem_prekey.private_key.seed_bytes()),
    ]
    for obj, secret in cases:
        _assert_absent(repr(obj), secret)
        _assert_absent(str(obj), secret)
    for key in (DhPrivateKey.generate(rng), SigningKey.generate(rng)):
        _assert_absent(repr(key), key.private_bytes_raw())
    kem = KemPrivateKey.generate(rng)
    _assert_absent(repr(kem), kem.seed_bytes())


def test_session_and_ratchet_reprs_hide_chain_and_root_keys() -> None:
    a, _b, rng = established_pair()
    a.encrypt(b"x", rng=rng)
    state = a._ratchet
    secrets = [state.root_key, state.send_chain, state.recv_chain]
    assert state.send_key is not None
    secrets.append(state.send_key.private_bytes_raw())
    for secret in secrets:
        assert secret is not None
        _assert_absent(repr(a), secret)
        _assert_absent(repr(state), secret)


def test_agreement_repr_hides_the_shared_key() -> None:
    agreement = Agreement(b"\x42" * 32, b"\x00" * 128, True)
    _assert_absent(repr(agreement), agreement.shared_key)


def test_error_messages_carry_no_key_material() -> None:
    a, b, rng = established_pair()
    message = bytearray(a.encrypt(b"secret text", rng=rng))
    message[-1] ^= 1
    with pytest.raises(InvalidMessage) as info:
        b.decrypt(bytes(message))
    text = str(info.value)
    assert "secret text" not in text
    _assert_absent(text, b._ratchet.root_key)
    good = a.encrypt(b"y", rng=rng)
    b.decrypt(good)
    with pytest.raises(DuplicateMessage) as dup:
        b.decrypt(good)
    assert isinstance(dup.value, ProtocolError)
    assert b._ratchet.recv_chain is not None
    _assert_absent(str(dup.value), b._ratchet.recv_chain)
