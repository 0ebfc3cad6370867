"""Generation of sealpost's own known-answer vectors (tests/vectors/sealpost-v1.json).

Everything comes from a seeded RNG (SHAKE-256 stream) and a fixed clock, except one thing:
pyca's ML-KEM ``encapsulate()`` takes no randomness, so the single real encapsulation is
made once and recorded as an *input* (``inputs.kem_ciphertext``), then replayed through a
fixed :class:`~sealpost.crypto.kem.Kem`, the way Wycheproof records randomness an API
cannot take. The test proves the recorded ciphertext is a genuine encapsulation (its
shared secret differs from ML-KEM's implicit-rejection value).

The scenario: Alice starts a PQ session with Bob's full bundle; ten messages each way with
out-of-order delivery (Bob sets up from the third PreKeyMessage), then the final session
records of both sides.
"""

from __future__ import annotations

from typing import Any

from sealpost.crypto.kem import ML_KEM_768, KemPublicKey
from sealpost.protocol import Session, verify_bundle, wire
from sealpost.protocol.pqxdh import initiate
from support import NOW, SeededRng, make_party

SEED = b"sealpost-v1 known-answer vectors"
FORMAT = "sealpost-kat-v1"


class FixedKem:
    """Replays one recorded encapsulation (ciphertext and its shared secret)."""

    def __init__(self, shared: bytes, ciphertext: bytes) -> None:
        self._pair = (shared, ciphertext)

    def encapsulate(self, public_key: KemPublicKey) -> tuple[bytes, bytes]:
        return self._pair


def _hex(data: bytes) -> str:
    return data.hex()


def generate(kem_ciphertext: bytes | None) -> dict[str, Any]:
    rng = SeededRng(SEED)
    alice = make_party(rng, device_id=1)
    bob = make_party(rng, device_id=7)
    bundle = bob.bundle()
    if kem_ciphertext is None:  # first generation only: one real encapsulation
        shared, kem_ciphertext = ML_KEM_768.encapsulate(bob.kem_prekey.public_key())
        assert bob.kem_prekey.private_key.decapsulate(kem_ciphertext) == shared
    shared = bob.kem_prekey.private_key.decapsulate(kem_ciphertext)
    kem = FixedKem(shared, kem_ciphertext)

    # PQXDH on its own, to record the agreement (sessions do not expose the key).
    agreement, params = initiate(alice.device, verify_bundle(bundle), rng=SeededRng(b"x"), kem=kem)

    session_rng = SeededRng(SEED + b"/session")
    a = Session.initiate(alice.device, bundle, rng=session_rng, kem=kem)
    a_sent = [a.encrypt(f"alice {i}".encode(), rng=session_rng) for i in range(5)]
    bob_order = [2, 0, 1, 4, 3]
    first = wire.decode(a_sent[bob_order[0]])
    assert isinstance(first, wire.PreKeyMessage)
    b, _ = Session.respond(
        bob.device,
        first,
        signed_prekey=bob.signed_prekey,
        one_time_prekey=bob.one_time_prekey,
        kem_prekey=bob.kem_prekey,
    )
    for i in bob_order[1:]:
        b.decrypt(a_sent[i])
    b_sent = [b.encrypt(f"bob {i}".encode(), rng=session_rng) for i in range(5)]
    alice_order = [4, 0, 3, 1, 2]
    for i in alice_order:
        a.decrypt(b_sent[i])
    a_sent += [a.encrypt(f"alice {i}".encode(), rng=session_rng) for i in range(5, 10)]
    bob_order2 = [9, 5, 8, 6, 7]
    for i in bob_order2:
        b.decrypt(a_sent[i])
    b_sent += [b.encrypt(f"bob {i}".encode(), rng=session_rng) for i in range(5, 10)]
    alice_order2 = [9, 8, 7, 6, 5]
    for i in alice_order2:
        a.decrypt(b_sent[i])

    def party(p: Any) -> dict[str, str]:
        return {
            "account_identity_record": _hex(p.account.to_bytes()),
            "account_key": _hex(p.account_key),
            "device_keys_record": _hex(p.device.to_bytes()),
            "certificate": _hex(p.device.certificate.encode()),
            "signed_prekey_record": _hex(p.signed_prekey.to_bytes()),
            "one_time_prekey_record": _hex(p.one_time_prekey.to_bytes()),
            "kem_prekey_record": _hex(p.kem_prekey.to_bytes()),
        }

    return {
        "format": FORMAT,
        "description": (
            "sealpost wire v1 known-answer vectors. RNG: SHAKE-256(seed || u64 counter) per "
            "call; see tests/vectors/sealpost_kat.py. Regenerate with `make vectors` only "
            "when the wire format or a KDF changes on purpose."
        ),
        "inputs": {
            "seed": SEED.decode(),
            "now": NOW,
            "kem_ciphertext": _hex(kem_ciphertext),
        },
        "alice": party(alice),
        "bob": party(bob),
        "bundle": _hex(bundle.encode()),
        "pqxdh": {
            "base_key": _hex(params.base_key),
            "kem_shared_secret": _hex(shared),
            "shared_key": _hex(agreement.shared_key),
            "associated_data": _hex(agreement.associated_data),
        },
        "messages": {
            "alice_to_bob": [
                {"plaintext": f"alice {i}", "wire": _hex(m)} for i, m in enumerate(a_sent)
            ],
            "bob_to_alice": [
                {"plaintext": f"bob {i}", "wire": _hex(m)} for i, m in enumerate(b_sent)
            ],
            "bob_receives_in_order": bob_order + bob_order2,
            "alice_receives_in_order": alice_order + alice_order2,
        },
        "final_sessions": {"alice": _hex(a.to_bytes()), "bob": _hex(b.to_bytes())},
    }
