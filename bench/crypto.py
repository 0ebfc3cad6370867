"""Protocol-core benchmark: PQXDH set-up, ratchet ping-pong and one-way bursts.

In one process and one run it measures, for each operation:

- ``ours``: sealpost's rate (operations or messages per second; a message counts once for
  its encryption and decryption together);
- ``floor``: the rate of *just the cryptographic primitive calls* that operation makes
  (X25519, Ed25519, ML-KEM-768, HKDF, AES-256-GCM from pyca/cryptography; HMAC-SHA256 from
  OpenSSL via ``hmac.digest``), called directly in a tight loop. ``ours / floor`` is how
  much of the time is the cryptography itself; the rest is our Python;
- ``olm``: vodozemac's (Rust) Olm doing the equivalent in the same run, when installed
  (classical X25519 3DH set-up; its ratchet), and ``ours / olm``.

Every figure is the best of several repetitions (noisy machines only ever make things
slower). Targets checked: ping-pong and burst >= 1.0x vodozemac, burst >= 50% of the floor,
PQXDH set-up >= 800/s.

    python bench/crypto.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cryptography
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from sealpost.protocol import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyKind,
    OneTimePreKeyPair,
    PreKeyBundle,
    Session,
    wire,
)

try:
    import vodozemac
except ImportError:  # pragma: no cover - optional
    vodozemac = None

NOW = int(time.time())
rng = os.urandom


def best_rate(fn: Callable[[int], None], n: int, repeats: int) -> float:
    """Run ``fn(n)`` ``repeats`` times; return the best rate in operations per second."""
    fn(max(1, n // 10))  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        best = max(best, n / (time.perf_counter() - start))
    return best


# ------------------------------------------------------------------ sealpost


def make_device() -> DeviceKeys:
    return DeviceKeys.generate(AccountIdentity.generate(rng), 1, now=NOW, rng=rng)


ALICE, BOB = make_device(), make_device()
SPK = BOB.new_signed_prekey(1, now=NOW, rng=rng)
KEM = BOB.new_kem_prekey(2, KemPreKeyKind.LAST_RESORT, now=NOW, rng=rng)
OPK = OneTimePreKeyPair.generate(3, rng=rng)
BUNDLE = PreKeyBundle(BOB.certificate, SPK.public, OPK.public, KEM.public)


def ours_setup(n: int) -> None:
    for _ in range(n):
        a = Session.initiate(ALICE, BUNDLE)
        first = wire.decode(a.encrypt(b"x" * 100))
        assert isinstance(first, wire.PreKeyMessage)
        Session.respond(BOB, first, signed_prekey=SPK, one_time_prekey=OPK, kem_prekey=KEM)


def ours_pair() -> tuple[Session, Session]:
    a = Session.initiate(ALICE, BUNDLE)
    first = wire.decode(a.encrypt(b"hi"))
    assert isinstance(first, wire.PreKeyMessage)
    b, _ = Session.respond(BOB, first, signed_prekey=SPK, one_time_prekey=OPK, kem_prekey=KEM)
    a.decrypt(b.encrypt(b"hi"))
    return a, b


def pingpong(pair: Callable[[], tuple[Any, Any]], size: int) -> Callable[[int], None]:
    """Alternate directions, so every reply carries a new ratchet key (a DH step)."""
    a, b = pair()
    msg = b"m" * size

    def run(n: int) -> None:
        for _ in range(n // 2):
            b.decrypt(a.encrypt(msg))
            a.decrypt(b.encrypt(msg))

    return run


def burst(pair: Callable[[], tuple[Any, Any]], size: int) -> Callable[[int], None]:
    """One direction only: symmetric-chain steps."""
    a, b = pair()
    msg = b"m" * size

    def run(n: int) -> None:
        for _ in range(n):
            b.decrypt(a.encrypt(msg))

    return run


# ------------------------------------------------------------------ primitive floor

_SHA256 = hashes.SHA256()
_K32 = os.urandom(32)
_AD = os.urandom(128 + 42)
_ED = Ed25519PrivateKey.generate()
_ED_PUB = _ED.public_key()
_SIG_MSG = os.urandom(200)
_SIG = _ED.sign(_SIG_MSG)
_KEM_PRIV = MLKEM768PrivateKey.generate()
_KEM_PUB_RAW = _KEM_PRIV.public_key().public_bytes_raw()
_X_PUB_RAW = X25519PrivateKey.generate().public_key().public_bytes_raw()
_X_PRIV = X25519PrivateKey.generate()


def _symmetric_step(msg: bytes) -> None:
    """One message through a chain, both sides: KDF_CK, message keys, AEAD."""
    mk = hmac.digest(_K32, b"\x01", "sha256")  # sender
    hmac.digest(_K32, b"\x02", "sha256")
    km = HKDFExpand(_SHA256, 44, b"sealpost/v1/message-keys").derive(mk)
    sealed = AESGCM(km[:32]).encrypt(km[32:], msg, _AD)
    mk = hmac.digest(_K32, b"\x01", "sha256")  # receiver
    hmac.digest(_K32, b"\x02", "sha256")
    km = HKDFExpand(_SHA256, 44, b"sealpost/v1/message-keys").derive(mk)
    AESGCM(km[:32]).decrypt(km[32:], sealed, _AD)


def _dh_step() -> None:
    """The asymmetric part of one message that carries a new ratchet key, both sides."""
    new = X25519PrivateKey.from_private_bytes(os.urandom(32))
    new.public_key().public_bytes_raw()
    new.exchange(X25519PublicKey.from_public_bytes(_X_PUB_RAW))  # sender
    HKDF(_SHA256, 64, _K32, b"r").derive(_K32)
    _X_PRIV.exchange(X25519PublicKey.from_public_bytes(_X_PUB_RAW))  # receiver
    HKDF(_SHA256, 64, _K32, b"r").derive(_K32)


def floor_setup(n: int) -> None:
    msg = b"x" * 100
    for _ in range(n):
        # initiator: 3 signature checks, key loads, EK and ratchet key, 4+1 DH, encaps
        for _ in range(3):
            _ED_PUB.verify(_SIG, _SIG_MSG)
        kem_pub = MLKEM768PublicKey.from_public_bytes(_KEM_PUB_RAW)
        ss, ct = kem_pub.encapsulate()
        for _ in range(2):
            X25519PrivateKey.from_private_bytes(os.urandom(32))
        peer = X25519PublicKey.from_public_bytes(_X_PUB_RAW)
        for _ in range(5):
            _X_PRIV.exchange(peer)
        HKDF(_SHA256, 32, bytes(32), b"i").derive(_K32 + ss)
        HKDF(_SHA256, 64, _K32, b"r").derive(_K32)
        # responder: 1 signature check, 4+1 DH, decaps, 2 HKDF
        _ED_PUB.verify(_SIG, _SIG_MSG)
        for _ in range(2):
            X25519PublicKey.from_public_bytes(_X_PUB_RAW)
        for _ in range(5):
            _X_PRIV.exchange(peer)
        _KEM_PRIV.decapsulate(ct)
        HKDF(_SHA256, 32, bytes(32), b"i").derive(_K32 + ss)
        HKDF(_SHA256, 64, _K32, b"r").derive(_K32)
        _symmetric_step(msg)


def floor_pingpong(size: int) -> Callable[[int], None]:
    msg = b"m" * size

    def run(n: int) -> None:
        for _ in range(n):
            _dh_step()
            _symmetric_step(msg)

    return run


def floor_burst(size: int) -> Callable[[int], None]:
    msg = b"m" * size

    def run(n: int) -> None:
        for _ in range(n):
            _symmetric_step(msg)

    return run


# ------------------------------------------------------------------ vodozemac (Olm)


def olm_setup(n: int) -> None:
    bob = vodozemac.Account()
    bob.generate_one_time_keys(1)
    otk = next(iter(bob.one_time_keys.values()))
    alice = vodozemac.Account()
    for _ in range(n):
        s = alice.create_outbound_session(bob.curve25519_key, otk)
        # Olm consumes the one-time key on use; Olm's fallback-key path costs the same.
        fresh = vodozemac.Account()
        fresh.generate_one_time_keys(1)
        key = next(iter(fresh.one_time_keys.values()))
        s = alice.create_outbound_session(fresh.curve25519_key, key)
        fresh.create_inbound_session(alice.curve25519_key, s.encrypt(b"x" * 100).to_pre_key())


def olm_pair() -> tuple[Any, Any]:
    bob = vodozemac.Account()
    bob.generate_one_time_keys(1)
    alice = vodozemac.Account()
    a = alice.create_outbound_session(bob.curve25519_key, next(iter(bob.one_time_keys.values())))
    b, _ = bob.create_inbound_session(alice.curve25519_key, a.encrypt(b"hi").to_pre_key())
    a.decrypt(b.encrypt(b"hi"))
    return a, b


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a run under 30 s")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    scale, repeats = (0.25, 3) if args.quick else (1.0, 5)

    def n(base: int) -> int:
        return max(10, int(base * scale))

    rows: list[dict[str, Any]] = []

    def measure(
        name: str,
        ours: Callable[[int], None],
        floor: Callable[[int], None],
        olm: Callable[[], Callable[[int], None]] | Callable[[int], None] | None,
        count: int,
        unit: str,
    ) -> None:
        row: dict[str, Any] = {"operation": name, "unit": unit}
        row["ours"] = best_rate(ours, count, repeats)
        row["floor"] = best_rate(floor, count, repeats)
        row["ours_over_floor"] = row["ours"] / row["floor"]
        if olm is not None:
            row["olm"] = best_rate(olm, count, repeats)  # type: ignore[arg-type]
            row["ours_over_olm"] = row["ours"] / row["olm"]
        rows.append(row)

    have_olm = vodozemac is not None
    measure(
        "PQXDH setup (both sides)",
        ours_setup,
        floor_setup,
        olm_setup if have_olm else None,
        n(400),
        "sessions/s",
    )
    for size in (100, 4096):
        label = "100 B" if size == 100 else "4 KiB"
        measure(
            f"ping-pong {label}",
            pingpong(ours_pair, size),
            floor_pingpong(size),
            pingpong(olm_pair, size) if have_olm else None,
            n(6000),
            "msgs/s",
        )
        measure(
            f"burst {label}",
            burst(ours_pair, size),
            floor_burst(size),
            burst(olm_pair, size) if have_olm else None,
            n(30000),
            "msgs/s",
        )

    targets = []
    by_name = {r["operation"]: r for r in rows}
    setup = by_name["PQXDH setup (both sides)"]
    targets.append(("PQXDH setup >= 800/s", setup["ours"] >= 800, f"{setup['ours']:.0f}/s"))
    for name in ("ping-pong 100 B", "burst 100 B", "ping-pong 4 KiB", "burst 4 KiB"):
        r = by_name[name]
        if "ours_over_olm" in r:
            targets.append(
                (
                    f"{name} >= 1.0x vodozemac",
                    r["ours_over_olm"] >= 1.0,
                    f"{r['ours_over_olm']:.2f}x",
                )
            )
    for name in ("burst 100 B", "burst 4 KiB"):
        r = by_name[name]
        targets.append(
            (
                f"{name} >= 50% of floor",
                r["ours_over_floor"] >= 0.5,
                f"{100 * r['ours_over_floor']:.0f}%",
            )
        )

    print(f"sealpost bench/crypto.py — best of {repeats}, {'quick' if args.quick else 'full'} run")
    print(
        f"python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"vodozemac {getattr(vodozemac, '__version__', 'installed') if have_olm else 'absent'}, "
        f"{os.cpu_count()} CPUs"
    )
    head = f"{'operation':28} {'ours':>10} {'floor':>10} {'ours/floor':>10}"
    head += f" {'olm':>10} {'ours/olm':>9}" if have_olm else "   (vodozemac not installed)"
    print(head)
    for r in rows:
        line = (
            f"{r['operation']:28} {r['ours']:10.0f} {r['floor']:10.0f} "
            f"{100 * r['ours_over_floor']:9.0f}%"
        )
        if "olm" in r:
            line += f" {r['olm']:10.0f} {r['ours_over_olm']:8.2f}x"
        print(line)
    print()
    for label, ok, value in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {value}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "crypto",
                    "quick": args.quick,
                    "repeats": repeats,
                    "statistic": "best rate of the repetitions",
                    "machine": {
                        "python": platform.python_version(),
                        "cryptography": cryptography.__version__,
                        "vodozemac": bool(have_olm),
                        "cpus": os.cpu_count(),
                        "platform": sys.platform,
                    },
                    "rows": rows,
                    "targets": [{"target": t, "pass": ok, "value": v} for t, ok, v in targets],
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
