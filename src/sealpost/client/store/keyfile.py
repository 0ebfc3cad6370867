"""``keyfile.json``: the database key wrapped by the passcode, and the wrong-passcode policy.

The database key (32 random bytes) is wrapped with AES-256-GCM under a key derived from
the passcode with Argon2id (RFC 9106's second recommended set by default: t=3, m=64 MiB,
p=4), with the parameters and salt beside it so they can be raised later, and the count of
wrong passcodes. The AEAD's associated data binds the format version, the KDF parameters
and the salt, so they cannot be swapped for weaker ones: a keyfile whose parameters were
edited fails like a wrong passcode. Parameters outside sane bounds are refused as
:class:`CorruptProfile` before Argon2id runs. The file is mode 0600 and always replaced
atomically (:func:`~sealpost.client.store.files.write_atomic`).

Wrong passcodes. Each try is counted in the keyfile *before* Argon2id runs (so killing the
process mid-try still counts it) and the counter is reset by a success. The first four
failures cost nothing; from the fifth on, the next try must wait (:func:`delay_after`:
30 s, 1 min, 5 min, 15 min, then 1 h each), like a phone. A try during the wait raises
:class:`TooManyAttempts` without running Argon2id and without being counted. If the clock
went backwards, the wait is never longer than the schedule says. With ``wipe_after=N``, the
Nth failure in a row destroys the wrapped key (crypto erasure: the database is then noise)
and overwrites and deletes the database, best effort (SSDs, copy-on-write file systems and
journals may keep old blocks; without the key they are noise). See docs/THREAT_MODEL.md for
what a software counter cannot stop: an attacker with a copy of the files guesses offline,
paying only Argon2id's price per guess, and anyone who can write the keyfile can reset
the counter (by editing it, not only by restoring an old copy).

Changing the passcode re-wraps the same database key under a new salt (and optionally
stronger parameters); the database is not re-encrypted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw

from sealpost._errors import ProtocolError
from sealpost.client.store.errors import (
    CorruptProfile,
    NoProfile,
    ProfileWiped,
    TooManyAttempts,
    WeakParameters,
    WrongPasscode,
)
from sealpost.client.store.files import DATABASE, fsync_dir, overwrite, write_atomic
from sealpost.crypto.aead import aead_decrypt, aead_encrypt
from sealpost.entropy import Rng

__all__ = [
    "DEFAULT_PARAMS",
    "KEY_LEN",
    "TEST_PARAMS",
    "KdfParams",
    "KeyFile",
    "check_params",
    "check_wipe_after",
    "delay_after",
    "derive_kek",
]

FORMAT_VERSION = 1
KEY_LEN = 32
SALT_LEN = 16
NONCE_LEN = 12
TAG_LEN = 16
WRAPPED_LEN = NONCE_LEN + KEY_LEN + TAG_LEN
FREE_TRIES = 4
DELAYS = (30.0, 60.0, 300.0, 900.0, 3600.0)  # after failure 5, 6, 7, 8, then 9 and on
# Upper bounds on Argon2id parameters read from a keyfile: generous (RFC 9106's first
# recommended set is t=1, 2 GiB, p=4), but an edited keyfile must not make open() run for
# days or allocate terabytes before failing.
MAX_T = 64
MAX_M_KIB = 4 * 1024 * 1024
MAX_P = 64


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost: ``t`` passes over ``m_kib`` KiB with ``p`` lanes."""

    t: int = 3
    m_kib: int = 65536
    p: int = 4

    def to_json(self) -> dict[str, Any]:
        return {"alg": "argon2id", "t": self.t, "m_kib": self.m_kib, "p": self.p}

    @classmethod
    def from_json(cls, doc: Any) -> KdfParams:
        if not isinstance(doc, dict) or doc.get("alg") != "argon2id":
            raise CorruptProfile("unknown key derivation")
        values = [doc.get(k) for k in ("t", "m_kib", "p")]
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if len(ints) != 3:
            raise CorruptProfile("bad key derivation parameters")
        params = cls(*ints)
        if not params.in_bounds():
            raise CorruptProfile("bad key derivation parameters")
        return params

    def in_bounds(self) -> bool:
        """Whether Argon2id accepts these and they are not absurdly large."""
        return (
            1 <= self.t <= MAX_T and 1 <= self.p <= MAX_P and 8 * self.p <= self.m_kib <= MAX_M_KIB
        )


DEFAULT_PARAMS = KdfParams()
#: Fast parameters for tests only; accepted only when passed explicitly.
TEST_PARAMS = KdfParams(t=1, m_kib=8, p=1)
_FLOOR = KdfParams(t=3, m_kib=65536, p=1)


def check_params(params: KdfParams) -> None:
    if params == TEST_PARAMS:
        return
    if params.t < _FLOOR.t or params.m_kib < _FLOOR.m_kib or params.p < _FLOOR.p:
        raise WeakParameters("Argon2id parameters under t=3, m=64 MiB, p=1 are refused")
    if not params.in_bounds():
        raise WeakParameters(
            f"Argon2id parameters above t={MAX_T}, m={MAX_M_KIB} KiB, p={MAX_P} are refused"
        )


def check_wipe_after(wipe_after: int | None) -> None:
    if wipe_after is not None and (
        not isinstance(wipe_after, int) or isinstance(wipe_after, bool) or wipe_after < 1
    ):
        raise WeakParameters("wipe_after must be None or at least 1")


def delay_after(failures: int) -> float:
    """Seconds the next try must wait after ``failures`` wrong passcodes in a row.

    0 for the first four, then 30 s, 1 min, 5 min, 15 min, and 1 h for every one after.
    """
    if failures <= FREE_TRIES:
        return 0.0
    return DELAYS[min(failures - FREE_TRIES, len(DELAYS)) - 1]


def derive_kek(passcode: str, salt: bytes, params: KdfParams) -> bytes:
    """Argon2id of the passcode: the key that wraps the database key."""
    try:
        return hash_secret_raw(
            passcode.encode("utf-8"),
            salt,
            time_cost=params.t,
            memory_cost=params.m_kib,
            parallelism=params.p,
            hash_len=KEY_LEN,
            type=Type.ID,
        )
    except (HashingError, OverflowError):
        # not reachable with bounded parameters, but never let argon2's error escape
        raise CorruptProfile("the key derivation failed") from None


def _aad(params: KdfParams, salt: bytes) -> bytes:
    doc = {"version": FORMAT_VERSION, "kdf": params.to_json(), "salt": salt.hex()}
    return b"sealpost/v1/keyfile\x00" + json.dumps(doc, sort_keys=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise CorruptProfile("keyfile field is not base64")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise CorruptProfile("keyfile field is not base64") from None


def _wrap(key: bytes, passcode: str, salt: bytes, params: KdfParams, rng: Rng) -> bytes:
    nonce = rng(NONCE_LEN)
    kek = derive_kek(passcode, salt, params)
    return nonce + aead_encrypt(kek, nonce, key, _aad(params, salt))


def _unwrap(wrapped: bytes, passcode: str, salt: bytes, params: KdfParams) -> bytes | None:
    if len(wrapped) != WRAPPED_LEN:
        raise CorruptProfile("bad wrapped key")
    kek = derive_kek(passcode, salt, params)
    try:
        return aead_decrypt(kek, wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], _aad(params, salt))
    except ProtocolError:
        return None


def _params_of(doc: dict[str, Any]) -> tuple[KdfParams, bytes]:
    kdf = doc.get("kdf")
    params = KdfParams.from_json(kdf)
    salt = _unb64(kdf.get("salt") if isinstance(kdf, dict) else None)
    if len(salt) != SALT_LEN:
        raise CorruptProfile("bad salt")
    return params, salt


def _counter_of(doc: dict[str, Any]) -> tuple[int, float, int | None]:
    failures = doc.get("failures")
    not_before = doc.get("not_before")
    wipe_after = doc.get("wipe_after")
    if (
        not isinstance(failures, int)
        or isinstance(failures, bool)
        or failures < 0
        or not isinstance(not_before, int | float)
        or isinstance(not_before, bool)
        or not math.isfinite(not_before)
    ):
        raise CorruptProfile("bad failure counter")
    try:
        check_wipe_after(wipe_after)
    except WeakParameters:
        raise CorruptProfile("bad wipe setting") from None
    return failures, float(not_before), wipe_after


class KeyFile:
    """The keyfile at ``path``: read, rewrite atomically, and the operations on the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            raise NoProfile("no profile") from None
        except (ValueError, OSError, RecursionError):
            raise CorruptProfile("the keyfile is damaged") from None
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise CorruptProfile("unknown keyfile format")
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(doc, indent=1).encode())

    def counter(self) -> tuple[int, float, int | None]:
        """``(failures in a row, not_before, wipe_after)``, read without the passcode and
        changing nothing (an unlock screen shows the wait and the tries left)."""
        return _counter_of(self.read())

    def create(
        self, key: bytes, passcode: str, params: KdfParams, wipe_after: int | None, rng: Rng
    ) -> None:
        """Write a new keyfile wrapping ``key`` under ``passcode``."""
        salt = rng(SALT_LEN)
        self.write(
            {
                "version": FORMAT_VERSION,
                "kdf": params.to_json() | {"salt": _b64(salt)},
                "wrapped": _b64(_wrap(key, passcode, salt, params, rng)),
                "failures": 0,
                "not_before": 0.0,
                "wipe_after": wipe_after,
            }
        )

    def unlock(
        self, passcode: str, clock: Callable[[], float], *, read_only: bool
    ) -> tuple[bytes, KdfParams]:
        """The database key and the KDF parameters, by the wrong-passcode policy of the
        module's docstring. ``read_only``: a keyfile that cannot be written still opens
        (the try is then not counted)."""

        def write(doc: dict[str, Any]) -> None:
            try:
                self.write(doc)
            except OSError:
                if not read_only:
                    raise

        doc = self.read()
        if doc.get("wiped"):
            raise ProfileWiped("this profile was wiped after too many wrong passcodes")
        params, salt = _params_of(doc)
        wrapped_text = doc.get("wrapped")
        wrapped = _unb64(wrapped_text)
        if len(wrapped) != WRAPPED_LEN:
            raise CorruptProfile("bad wrapped key")
        failures, not_before, wipe_after = _counter_of(doc)
        if not (self.path.parent / DATABASE).exists():
            raise CorruptProfile("the database is missing")
        now = clock()
        if not_before > now + delay_after(failures):
            # the clock went backwards: wait no longer than the schedule says, from now
            not_before = now + delay_after(failures)
            doc["not_before"] = not_before
            write(doc)
        if now < not_before:
            raise TooManyAttempts(not_before - now)
        # count the try before paying for it, so a killed process still counts it
        failures += 1
        doc["failures"] = failures
        doc["not_before"] = now + delay_after(failures)
        write(doc)
        key = _unwrap(wrapped, passcode, salt, params)
        if key is None:
            if wipe_after is not None and failures >= wipe_after:
                self._wipe(doc, str(wrapped_text))
                raise ProfileWiped("this profile was wiped after too many wrong passcodes")
            raise WrongPasscode(failures, delay_after(failures))
        doc["failures"] = 0
        doc["not_before"] = 0.0
        write(doc)
        return key, params

    def check(self, passcode: str) -> bool:
        """Whether ``passcode`` unwraps the key (not counted as a try)."""
        doc = self.read()
        params, salt = _params_of(doc)
        return _unwrap(_unb64(doc.get("wrapped")), passcode, salt, params) is not None

    def rewrap(self, old: str, new: str, params: KdfParams, rng: Rng) -> None:
        """Wrap the same key under ``new`` with a fresh salt and ``params``;
        :class:`WrongPasscode` (not counted) if ``old`` does not unwrap it."""
        doc = self.read()
        old_params, old_salt = _params_of(doc)
        key = _unwrap(_unb64(doc.get("wrapped")), old, old_salt, old_params)
        if key is None:
            raise WrongPasscode(0, 0.0)
        salt = rng(SALT_LEN)
        doc["kdf"] = params.to_json() | {"salt": _b64(salt)}
        doc["wrapped"] = _b64(_wrap(key, new, salt, params, rng))
        self.write(doc)

    def set_wipe_after(self, wipe_after: int | None) -> None:
        check_wipe_after(wipe_after)
        doc = self.read()
        doc["wipe_after"] = wipe_after
        self.write(doc)

    def _wipe(self, doc: dict[str, Any], wrapped: str) -> None:
        directory = self.path.parent
        # 1. the wrapped key's bytes, in place (crypto erasure; this is what counts)
        self.destroy_wrapped(wrapped)
        # 2. a keyfile that says so, for a clear error from now on
        doc.pop("wrapped", None)
        doc["wiped"] = True
        self.write(doc)
        # 3. the database, best effort: SSDs, copy-on-write file systems and journals may
        #    keep old blocks, which are noise without the key
        for name in (DATABASE, DATABASE + "-wal", DATABASE + "-shm"):
            path = directory / name
            with contextlib.suppress(OSError):
                overwrite(path)
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            fsync_dir(directory)

    def destroy_wrapped(self, wrapped: str) -> None:
        """Overwrite the wrapped key's bytes in the current file, in place.

        Replacing the file alone would only free the old blocks. Overwriting just the
        base64 text keeps the file valid JSON, so a kill right after this leaves a profile
        that no passcode opens rather than a damaged one.
        """
        with self.path.open("r+b") as f:
            data = f.read()
            at = data.find(wrapped.encode("ascii"))
            if at < 0:
                f.seek(0)
                f.write(os.urandom(len(data)))
            else:
                f.seek(at)
                f.write(_b64(os.urandom(WRAPPED_LEN)).encode("ascii")[: len(wrapped)])
            f.flush()
            os.fsync(f.fileno())
