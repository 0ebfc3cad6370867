"""Group send benchmark: one message to groups of 10, 100 and 1000 members (one device
each), sender keys + a multi-recipient sealed envelope against the pairwise baseline;
and attachment upload against raw AES-GCM.

What is timed, per group size, for the *sender* (client CPU, ``time.process_time``, and
wall time; best of several repetitions):

``group``
    What :meth:`sealpost.client.Client.send` does for a group once every member has the
    sender's chain: encode and pad the content, one sender-key encryption (AES-256-GCM +
    Ed25519 signature), :func:`seal_group` of ``SenderCertificate || message`` under the
    chain's envelope key (once, whatever the size of the group), and the JSON
    ``send_multi`` frame the client writes to the relay (the body once, then each
    recipient device's address).
``wrapped`` (for comparison, same run)
    The same with the legacy per-device key wrap (:func:`seal_multi`, the shape of
    Signal's sealed sender v2: one X25519 exchange, one HKDF and one 48-byte AES-GCM key
    wrap per device).
``pairwise`` (baseline, same run)
    What a client without sender keys would do: for every member, a Double Ratchet
    encryption in an established session and a sealed-sender HPKE seal
    (:func:`sealpost.protocol.sealed.seal`), and the JSON ``send`` frame with every
    envelope.

Bytes on the wire are the frames' lengths. Targets: at 1000 members the group send is at
least 10x faster than pairwise and takes at most 100 ms of client CPU.

Attachments (:mod:`attachment_bench`, same run): encrypt + upload of a file to a real
relay on loopback against raw AES-256-GCM over the same chunks; target 300 MB/s with flat
memory.

    python bench/groups.py [--quick] [--json PATH] [--no-attachments]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sealpost.crypto.dh import DhPublicKey
from sealpost.crypto.sign import SigningKey
from sealpost.protocol import wire
from sealpost.protocol.content import TextContent, encode_content
from sealpost.protocol.group_sealed import seal_group
from sealpost.protocol.keys import AccountIdentity, DeviceKeys, OneTimePreKeyPair
from sealpost.protocol.sealed import seal
from sealpost.protocol.sealed_multi import seal_multi
from sealpost.protocol.senderkeys import OwnSenderChain
from sealpost.protocol.session import Session
from sealpost.protocol.wire import KemPreKeyKind, PreKeyBundle, PreKeyMessage, SenderCertificate

NOW = int(time.time())
TEXT = "a typical chat message, about a hundred bytes long, with a little more to say."


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _member() -> tuple[DeviceKeys, Session]:
    """A member device and the sender's established session with it."""
    device = DeviceKeys.generate(AccountIdentity.generate(os.urandom), 1, now=NOW, rng=os.urandom)
    spk = device.new_signed_prekey(1, now=NOW, rng=os.urandom)
    kem = device.new_kem_prekey(2, KemPreKeyKind.LAST_RESORT, now=NOW, rng=os.urandom)
    otpk = OneTimePreKeyPair.generate(3, rng=os.urandom)
    bundle = PreKeyBundle(device.certificate, spk.public, otpk.public, kem.public)
    session = Session.initiate(SENDER, bundle)
    first = wire.decode(session.encrypt(b"hi"))
    assert isinstance(first, PreKeyMessage)
    theirs, _ = Session.respond(
        device, first, signed_prekey=spk, one_time_prekey=otpk, kem_prekey=kem
    )
    session.decrypt(theirs.encrypt(b"hi"))  # established: no more PreKeyMessages
    return device, session


SENDER_ACCOUNT = AccountIdentity.generate(os.urandom)
SENDER = DeviceKeys.generate(SENDER_ACCOUNT, 1, now=NOW, rng=os.urandom)
CERT = SenderCertificate.issue(
    SigningKey.generate(os.urandom),
    account_id=SENDER_ACCOUNT.account_id,
    device_id=1,
    signing_key=SENDER.certificate.signing_key,
    identity_key=SENDER.certificate.identity_key,
    expires=NOW + 86400,
)


def _content() -> bytes:
    return encode_content(
        TextContent(os.urandom(16), NOW * 1000, os.urandom(32), "alice", TEXT, os.urandom(32))
    )


def group_send(members: list[tuple[DeviceKeys, Session]], chain: OwnSenderChain) -> str:
    message = chain.encrypt(_content())
    body = seal_group(CERT.encode() + message, chain.envelope_key, os.urandom)
    doc = {
        "type": "send_multi",
        "req": 1,
        "body": _b64(body),
        "recipients": [[d.certificate.account_id.hex(), 1] for d, _ in members],
        "tokens": {d.certificate.account_id.hex(): _b64(TOKEN) for d, _ in members},
    }
    return json.dumps(doc)


def wrapped_send(members: list[tuple[DeviceKeys, Session]], chain: OwnSenderChain) -> str:
    message = chain.encrypt(_content())
    keys = [DhPublicKey.from_public_bytes(d.certificate.identity_key) for d, _ in members]
    shared, wraps = seal_multi(CERT.encode() + message, keys, os.urandom)
    doc = {
        "type": "send_multi",
        "req": 1,
        "shared": _b64(shared),
        "recipients": [
            [d.certificate.account_id.hex(), 1, _b64(w)]
            for (d, _), w in zip(members, wraps, strict=True)
        ],
        "tokens": {d.certificate.account_id.hex(): _b64(TOKEN) for d, _ in members},
    }
    return json.dumps(doc)


def pairwise_send(members: list[tuple[DeviceKeys, Session]]) -> str:
    plaintext = _content()
    messages = []
    for device, session in members:
        sealed = seal(
            session.encrypt(plaintext),
            CERT,
            DhPublicKey.from_public_bytes(device.certificate.identity_key),
        )
        messages.append(
            {
                "account_id": device.certificate.account_id.hex(),
                "device_id": 1,
                "body": _b64(sealed),
            }
        )
    doc = {
        "type": "send",
        "req": 1,
        "messages": messages,
        "tokens": {d.certificate.account_id.hex(): _b64(TOKEN) for d, _ in members},
    }
    return json.dumps(doc)


TOKEN = os.urandom(32)


def _time(fn: Callable[[], str], repeats: int) -> tuple[float, float, int]:
    """Best client CPU and wall seconds of ``repeats`` calls, and the frame's bytes."""
    cpu, wall, size = [], [], 0
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        size = len(fn())
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu), min(wall), size


def measure_groups(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    pool = [_member() for _ in range(max(sizes))]
    for n in sizes:
        members = pool[:n]
        chain = OwnSenderChain.create(os.urandom(32), rng=os.urandom)
        g_cpu, g_wall, g_bytes = _time(
            lambda members=members, chain=chain: group_send(members, chain), repeats
        )
        w_cpu, _, w_bytes = _time(
            lambda members=members, chain=chain: wrapped_send(members, chain), repeats
        )
        p_cpu, p_wall, p_bytes = _time(lambda members=members: pairwise_send(members), repeats)
        rows.append(
            {
                "members": n,
                "group_cpu_ms": g_cpu * 1000,
                "group_wall_ms": g_wall * 1000,
                "group_bytes": g_bytes,
                "wrapped_cpu_ms": w_cpu * 1000,
                "wrapped_bytes": w_bytes,
                "pairwise_cpu_ms": p_cpu * 1000,
                "pairwise_wall_ms": p_wall * 1000,
                "pairwise_bytes": p_bytes,
                "speedup": p_cpu / g_cpu if g_cpu else float("inf"),
                "bytes_ratio": p_bytes / g_bytes,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--no-attachments", action="store_true")
    args = parser.parse_args()
    sizes = [10, 100, 1000]
    repeats = 3 if args.quick else 9
    rows = measure_groups(sizes, repeats)
    print("sealpost bench/groups.py: one group message, sender side (best of", repeats, "runs)")
    print()
    head = (
        f"{'members':>7}  {'group CPU ms':>12}  {'wrapped CPU ms':>14}  "
        f"{'pairwise CPU ms':>15}  {'speedup':>8}  "
        f"{'group bytes':>11}  {'pairwise bytes':>14}  {'bytes':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['members']:>7}  {r['group_cpu_ms']:>12.2f}  {r['wrapped_cpu_ms']:>14.2f}  "
            f"{r['pairwise_cpu_ms']:>15.2f}  "
            f"{r['speedup']:>7.1f}x  {r['group_bytes']:>11,}  {r['pairwise_bytes']:>14,}  "
            f"{r['bytes_ratio']:>5.1f}x"
        )
    big = rows[-1]
    targets = {
        "group_10x_faster_than_pairwise_at_1000": big["speedup"] >= 10,
        "group_cpu_at_1000_le_100ms": big["group_cpu_ms"] <= 100,
    }
    print()
    print(
        f"1000 members: {big['speedup']:.1f}x faster than pairwise "
        f"({'PASS' if targets['group_10x_faster_than_pairwise_at_1000'] else 'MISS'} >= 10x); "
        f"{big['group_cpu_ms']:.1f} ms client CPU "
        f"({'PASS' if targets['group_cpu_at_1000_le_100ms'] else 'MISS'} <= 100 ms)"
    )
    result: dict[str, Any] = {"groups": rows, "targets": targets}
    if not args.no_attachments:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import attachment_bench

        att = attachment_bench.measure(args.quick)
        result["attachments"] = att
        ok = att["upload_mb_s"] >= 300
        targets["attachment_upload_ge_300_mb_s"] = ok
        print(
            f"attachment ({att['size_mib']} MiB): encrypt + upload {att['upload_mb_s']:,.0f} MB/s "
            f"({'PASS' if ok else 'MISS'} >= 300) vs raw AES-GCM {att['raw_aesgcm_mb_s']:,.0f} "
            f"MB/s ({att['ratio']:.3f}x); client peak RSS {att['peak_rss_mib']:.1f} MiB"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
