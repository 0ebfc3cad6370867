"""Safety numbers: what two people compare to know no one is in between.

Computed as Signal's numeric fingerprint (libsignal ``NumericFingerprintGenerator``),
with sealpost's own inputs and iteration count:

- for each party, ``h = SHA-512(DOMAIN || version (2) || account key (32) || account id
  (16))``, then :data:`ITERATIONS` times ``h = SHA-512(h || account key)``;
- the party's 30 digits: the first 30 bytes of ``h`` as six 5-byte big-endian integers, each
  reduced mod 100000 and written as 5 digits;
- the safety number: both parties' 30 digits, the smaller first, so both sides see the same
  60 digits (shown as 12 groups of 5).

The key is the Ed25519 account identity key (it certifies every device, so one number
covers all of a contact's devices) and the identifier the 16-byte account id (not a phone
number). The iteration count is ours: 8192 (Signal uses 5200), which makes finding a second
key with the same 30 digits cost about 2^13 more hash calls per try, and still takes a few
milliseconds here.

The QR code encodes ``version (1) || local fingerprint (32) || remote fingerprint (32)``
(the first 32 bytes of each ``h``); :func:`compare_scanned` checks a scanned code against
our own view, the other way round.

>>> a_id, b_id = b"\\x01" * 16, b"\\x02" * 16
>>> a_key, b_key = b"\\x03" * 32, b"\\x04" * 32
>>> safety_number(a_id, a_key, b_id, b_key) == safety_number(b_id, b_key, a_id, a_key)
True
"""

from __future__ import annotations

import hashlib
import hmac

from sealpost._errors import DecodeError

__all__ = [
    "ITERATIONS",
    "QR_VERSION",
    "SAFETY_VERSION",
    "compare_scanned",
    "format_safety_number",
    "safety_number",
    "safety_number_lines",
    "safety_qr_payload",
]

DOMAIN = b"sealpost safety number\x00"
SAFETY_VERSION = 1
QR_VERSION = 1
ITERATIONS = 8192
_ID_LEN = 16
_KEY_LEN = 32
_FP_LEN = 32


def _check(account_id: bytes, key: bytes) -> None:
    if not isinstance(account_id, bytes) or len(account_id) != _ID_LEN:
        raise DecodeError(f"account ids are {_ID_LEN} bytes")
    if not isinstance(key, bytes) or len(key) != _KEY_LEN:
        raise DecodeError(f"account keys are {_KEY_LEN} bytes")


def _iterated(account_id: bytes, key: bytes) -> bytes:
    _check(account_id, key)
    digest = hashlib.sha512(DOMAIN + SAFETY_VERSION.to_bytes(2, "big") + key + account_id).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + key).digest()
    return digest


def _digits(digest: bytes) -> str:
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def safety_number(
    local_account_id: bytes, local_key: bytes, remote_account_id: bytes, remote_key: bytes
) -> str:
    """The 60-digit safety number of two accounts (the same from both sides)."""
    local = _digits(_iterated(local_account_id, local_key))
    remote = _digits(_iterated(remote_account_id, remote_key))
    return local + remote if local <= remote else remote + local


def format_safety_number(number: str) -> str:
    """12 groups of 5 digits separated by spaces."""
    if len(number) != 60 or not number.isdigit():
        raise DecodeError("a safety number is 60 digits")
    return " ".join(number[i : i + 5] for i in range(0, 60, 5))


def safety_number_lines(number: str) -> list[str]:
    """Three lines of four groups, the layout people read aloud."""
    groups = format_safety_number(number).split(" ")
    return [" ".join(groups[i : i + 4]) for i in range(0, 12, 4)]


def safety_qr_payload(
    local_account_id: bytes, local_key: bytes, remote_account_id: bytes, remote_key: bytes
) -> bytes:
    """What our QR code shows: our fingerprint, then the one we hold for the contact."""
    return (
        bytes((QR_VERSION,))
        + _iterated(local_account_id, local_key)[:_FP_LEN]
        + _iterated(remote_account_id, remote_key)[:_FP_LEN]
    )


def compare_scanned(
    payload: bytes,
    local_account_id: bytes,
    local_key: bytes,
    remote_account_id: bytes,
    remote_key: bytes,
) -> bool:
    """Whether a QR code scanned from the contact's screen matches our view (its "local"
    is our "remote" and the other way round). Raises :class:`DecodeError` if malformed."""
    if not isinstance(payload, bytes) or len(payload) != 1 + 2 * _FP_LEN:
        raise DecodeError("not a safety number code")
    if payload[0] != QR_VERSION:
        raise DecodeError(f"unknown safety number code version {payload[0]}")
    expected = safety_qr_payload(remote_account_id, remote_key, local_account_id, local_key)
    return hmac.compare_digest(payload, expected)
