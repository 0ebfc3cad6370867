"""Safety numbers: what two people compare to know no one is in between.

Signal's numeric fingerprint (libsignal ``NumericFingerprintGenerator``), with sealpost's
own inputs and iteration count. For each party, with ``key`` its account key:

- ``h = header || key || id``, with ``header = DOMAIN || SAFETY_VERSION (2, big-endian)``;
- then :data:`ITERATIONS` times ``h = SHA-512(h || key)``;
- the party's 30 digits: the first 30 bytes of ``h`` as six 5-byte big-endian integers,
  each reduced mod 100000 and written as 5 digits;
- the safety number: both parties' 30 digits, the smaller first, so both sides see the same
  60 digits (shown as 12 groups of 5, or 3 lines of 4 groups).

What differs from Signal, and why:

- ``DOMAIN`` (``"sealpost safety number" 0x00``) before the version, and version 1 where
  Signal's header is the bare version 0: a sealpost number can never equal a fingerprint
  some other protocol computed over the same key.
- The key is the raw 32-byte Ed25519 account identity key (Signal: its 33-byte Curve25519
  identity key). It certifies every device, so one number covers all of a contact's devices
  and does not change when they add one.
- The identifier is the 16-byte account id (Signal: a phone number or ACI), which the server
  assigns once and which never changes.
- :data:`ITERATIONS` is 8192 (Signal: 5200). A man in the middle must find a key of their own
  whose 30 digits equal a victim's: about 10^30 = 2^99.7 tries of 8192 SHA-512 calls each,
  so about 2^112.7 work (Signal's count gives 2^112.0), at about 4 ms per party here.

The QR code shown beside the number encodes ``QR_VERSION (1) || local fingerprint (32) ||
remote fingerprint (32)``, a fingerprint being the first 32 bytes of the party's ``h`` (as
Signal's ``ScannableFingerprint``, without its protobuf). :func:`compare_scanned` checks a
code scanned from the contact's screen against our own view with the halves swapped, in
constant time. Our own code scanned back (a mirror) does not match.

Errors: wrong-sized ids or keys, a malformed number and a malformed code raise
:class:`~sealpost.protocol.errors.DecodeError` (an unknown code version its subclass
:class:`~sealpost.protocol.errors.UnsupportedVersion`); a well-formed code for other keys is
``False``, not an error.

>>> a_id, b_id = b"\\x01" * 16, b"\\x02" * 16
>>> a_key, b_key = b"\\x03" * 32, b"\\x04" * 32
>>> safety_number(a_id, a_key, b_id, b_key) == safety_number(b_id, b_key, a_id, a_key)
True
>>> code = safety_qr_payload(a_id, a_key, b_id, b_key)       # shown on A's screen
>>> compare_scanned(code, b_id, b_key, a_id, a_key)          # scanned by B
True
"""

from __future__ import annotations

import hashlib
import hmac

from sealpost._errors import DecodeError, UnsupportedVersion

__all__ = [
    "DOMAIN",
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
# 2^13 SHA-512 calls per party: ~0.7 bits above Signal's 5200, a few ms per party.
ITERATIONS = 8192

_ID_LEN = 16
_KEY_LEN = 32
_FP_LEN = 32
_HEADER = DOMAIN + SAFETY_VERSION.to_bytes(2, "big")
_QR_LEN = 1 + 2 * _FP_LEN


def _iterated_hash(header: bytes, key: bytes, identifier: bytes, iterations: int) -> bytes:
    """Signal's iterated hash, for any header, key, identifier and count (so that the tests
    can check it against Signal's published vectors)."""
    digest = header + key + identifier
    for _ in range(iterations):
        digest = hashlib.sha512(digest + key).digest()
    return digest


def _digits(digest: bytes) -> str:
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def _party(account_id: bytes, key: bytes) -> bytes:
    if not isinstance(account_id, bytes) or len(account_id) != _ID_LEN:
        raise DecodeError(f"account ids are {_ID_LEN} bytes")
    if not isinstance(key, bytes) or len(key) != _KEY_LEN:
        raise DecodeError(f"account keys are {_KEY_LEN} bytes")
    return _iterated_hash(_HEADER, key, account_id, ITERATIONS)


def safety_number(
    local_account_id: bytes, local_key: bytes, remote_account_id: bytes, remote_key: bytes
) -> str:
    """The 60-digit safety number of two accounts (the same from both sides)."""
    local = _digits(_party(local_account_id, local_key))
    remote = _digits(_party(remote_account_id, remote_key))
    return local + remote if local <= remote else remote + local


def format_safety_number(number: str) -> str:
    """12 groups of 5 digits separated by spaces."""
    if len(number) != 60 or not (number.isascii() and number.isdigit()):
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
        + _party(local_account_id, local_key)[:_FP_LEN]
        + _party(remote_account_id, remote_key)[:_FP_LEN]
    )


def compare_scanned(
    payload: bytes,
    local_account_id: bytes,
    local_key: bytes,
    remote_account_id: bytes,
    remote_key: bytes,
) -> bool:
    """Whether a QR code scanned from the contact's screen matches our view (its "local"
    is our "remote" and the other way round). Raises :class:`DecodeError` if malformed,
    :class:`UnsupportedVersion` for a code version we do not know."""
    if not isinstance(payload, bytes) or len(payload) != _QR_LEN:
        raise DecodeError("not a safety number code")
    if payload[0] != QR_VERSION:
        raise UnsupportedVersion(payload[0])
    expected = safety_qr_payload(remote_account_id, remote_key, local_account_id, local_key)
    return hmac.compare_digest(payload, expected)
