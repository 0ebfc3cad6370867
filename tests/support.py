"""Shared test helpers: a seeded RNG and in-process parties (h11's ConnectionPair idea)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from sealpost.protocol import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyKind,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    Session,
    SignedPreKeyPair,
    wire,
)

NOW = 1_790_000_000  # a fixed "now" so certificates are reproducible


class SeededRng:
    """A deterministic byte stream: SHAKE-256(seed || counter). For tests only."""

    def __init__(self, seed: bytes | str) -> None:
        self._seed = seed.encode() if isinstance(seed, str) else seed
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._seed + struct.pack(">Q", self._counter)).digest(n)


@dataclass
class Party:
    """A device with its prekeys, as its client would hold them."""

    account: AccountIdentity
    device: DeviceKeys
    signed_prekey: SignedPreKeyPair
    kem_prekey: KemPreKeyPair
    one_time_prekey: OneTimePreKeyPair

    def bundle(self, *, one_time: bool = True, kem: bool = True) -> PreKeyBundle:
        return PreKeyBundle(
            self.device.certificate,
            self.signed_prekey.public,
            self.one_time_prekey.public if one_time else None,
            self.kem_prekey.public if kem else None,
        )

    @property
    def account_key(self) -> bytes:
        return self.account.public_key().public_bytes_raw()


def make_party(rng: SeededRng, device_id: int = 1, account: AccountIdentity | None = None) -> Party:
    account = account or AccountIdentity.generate(rng)
    device = DeviceKeys.generate(account, device_id, now=NOW, rng=rng)
    return Party(
        account,
        device,
        device.new_signed_prekey(11, now=NOW, rng=rng),
        device.new_kem_prekey(21, KemPreKeyKind.LAST_RESORT, now=NOW, rng=rng),
        OneTimePreKeyPair.generate(31, rng=rng),
    )


def respond(bob: Party, data: bytes, **kwargs: object) -> tuple[Session, bytes]:
    message = wire.decode(data)
    assert isinstance(message, wire.PreKeyMessage)
    return Session.respond(
        bob.device,
        message,
        signed_prekey=bob.signed_prekey,
        one_time_prekey=bob.one_time_prekey if message.one_time_prekey_id is not None else None,
        kem_prekey=bob.kem_prekey if message.kem_ciphertext is not None else None,
        **kwargs,  # type: ignore[arg-type]
    )


def established_pair(seed: str = "pair") -> tuple[Session, Session, SeededRng]:
    """Alice and Bob with a session in which Bob has already answered once."""
    rng = SeededRng(seed)
    alice, bob = make_party(rng), make_party(rng)
    a = Session.initiate(alice.device, bob.bundle(), rng=rng)
    b, first = respond(bob, a.encrypt(b"hello", rng=rng))
    assert first == b"hello"
    assert a.decrypt(b.encrypt(b"hi", rng=rng)) == b"hi"
    return a, b, rng
