"""Request signing (sealpost.protocol.signing): what the client signs is what the server's
parser and message builder check, and the three contexts never verify for one another."""

from __future__ import annotations

import pytest

from sealpost.crypto.sign import SigningKey
from sealpost.protocol.errors import BadSignature, DecodeError
from sealpost.protocol.signing import (
    NONCE_LEN,
    MalformedAuth,
    parse_auth_headers,
    request_message,
    sign_request,
    trailer_message,
    websocket_message,
)

ACCOUNT = bytes(range(16))
NONCE = bytes(range(100, 100 + NONCE_LEN))


def _key() -> SigningKey:
    return SigningKey.from_private_bytes(bytes(32))


def test_signed_headers_parse_and_verify() -> None:
    key = _key()
    headers = sign_request(key, ACCOUNT, 7, "put", "/v1/keys?x=%20", b"{}", 1_700_000_000, NONCE)
    parsed = parse_auth_headers(headers)
    assert parsed is not None
    assert (parsed.account_id, parsed.device_id, parsed.nonce) == (ACCOUNT, 7, NONCE)
    stamp, nonce = parsed.timestamp_text, parsed.nonce_text
    key.public_key().verify(
        parsed.signature, request_message("PUT", "/v1/keys?x=%20", stamp, nonce, b"{}")
    )
    with pytest.raises(BadSignature):  # another body is another message
        key.public_key().verify(
            parsed.signature, request_message("PUT", "/v1/keys?x=%20", stamp, nonce, b"")
        )


def test_contexts_are_apart() -> None:
    """A header signature is never a trailer or a WebSocket answer, nor the reverse."""
    digest = bytes(32)
    header = request_message("POST", "/v1/attachments", "1", "ab", b"")
    trailer = trailer_message("POST", "/v1/attachments", "1", "ab", digest)
    assert len({header, trailer, websocket_message(header)}) == 3
    assert not trailer.startswith(header[:20])


def test_malformed_headers_are_a_decode_error() -> None:
    headers = sign_request(_key(), ACCOUNT, 1, "GET", "/", b"", 1, NONCE)
    assert parse_auth_headers({}) is None
    for broken in (
        {k: v for k, v in headers.items() if k != "X-Sealpost-Nonce"},
        headers | {"X-Sealpost-Device": "-1"},
        headers | {"X-Sealpost-Account": "zz"},
        headers | {"X-Sealpost-Signature": "not base64!"},
    ):
        with pytest.raises(MalformedAuth) as info:
            parse_auth_headers(broken)
        assert isinstance(info.value, DecodeError)


def test_sign_request_refuses_bad_lengths() -> None:
    with pytest.raises(ValueError):
        sign_request(_key(), ACCOUNT[:15], 1, "GET", "/", b"", 1, NONCE)
    with pytest.raises(ValueError):
        sign_request(_key(), ACCOUNT, 1, "GET", "/", b"", 1, NONCE[:8])
