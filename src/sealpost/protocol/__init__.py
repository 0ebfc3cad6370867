"""The sans-I/O protocol core: keys, PQXDH, the Double Ratchet, sessions and the wire format.

Nothing here touches sockets, files, the clock or the OS RNG: randomness (``rng``) and time
(``now``) are parameters, so every run can be reproduced. Errors all derive from
:class:`~sealpost.protocol.errors.ProtocolError` (tree in :mod:`sealpost._errors`).

A complete exchange::

    from sealpost.protocol import AccountIdentity, DeviceKeys, KemPreKeyKind, Session, wire
    from sealpost.protocol.keys import OneTimePreKeyPair

    bob_account = AccountIdentity.generate(rng)
    bob = DeviceKeys.generate(bob_account, device_id=1, now=now, rng=rng)
    spk = bob.new_signed_prekey(1, now=now, rng=rng)
    kem = bob.new_kem_prekey(1, KemPreKeyKind.LAST_RESORT, now=now, rng=rng)
    opk = OneTimePreKeyPair.generate(1, rng=rng)
    bundle = wire.PreKeyBundle(bob.certificate, spk.public, opk.public, kem.public)

    alice_session = Session.initiate(alice, bundle)
    first = wire.decode(alice_session.encrypt(b"hello Bob"))
    bob_session, text = Session.respond(bob, first, signed_prekey=spk,
                                        one_time_prekey=opk, kem_prekey=kem)
"""

from sealpost.protocol import wire
from sealpost.protocol.bundle import VerifiedBundle, verify_bundle
from sealpost.protocol.errors import (
    BadSignature,
    DecodeError,
    DuplicateMessage,
    InvalidKey,
    InvalidMessage,
    LocalProtocolError,
    NotPostQuantum,
    ProtocolError,
    RemoteProtocolError,
    SessionNotReady,
    TooManySkipped,
    UnknownPreKey,
    UnsupportedVersion,
    UntrustedIdentity,
)
from sealpost.protocol.keys import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyPair,
    OneTimePreKeyPair,
    SignedPreKeyPair,
    VerifiedDevice,
    verify_certificate,
)
from sealpost.protocol.sealed import UnsealedMessage, seal, unseal
from sealpost.protocol.session import Session
from sealpost.protocol.session_record import SessionRecord
from sealpost.protocol.wire import (
    DeviceCertificate,
    KemPreKey,
    KemPreKeyKind,
    OneTimePreKey,
    PreKeyBundle,
    PreKeyMessage,
    RatchetMessage,
    SealedEnvelope,
    SenderCertificate,
    SignedPreKey,
)

__all__ = [
    "AccountIdentity",
    "BadSignature",
    "DecodeError",
    "DeviceCertificate",
    "DeviceKeys",
    "DuplicateMessage",
    "InvalidKey",
    "InvalidMessage",
    "KemPreKey",
    "KemPreKeyKind",
    "KemPreKeyPair",
    "LocalProtocolError",
    "NotPostQuantum",
    "OneTimePreKey",
    "OneTimePreKeyPair",
    "PreKeyBundle",
    "PreKeyMessage",
    "ProtocolError",
    "RatchetMessage",
    "RemoteProtocolError",
    "SealedEnvelope",
    "SenderCertificate",
    "Session",
    "SessionNotReady",
    "SessionRecord",
    "SignedPreKey",
    "SignedPreKeyPair",
    "TooManySkipped",
    "UnknownPreKey",
    "UnsealedMessage",
    "UnsupportedVersion",
    "UntrustedIdentity",
    "VerifiedBundle",
    "VerifiedDevice",
    "seal",
    "unseal",
    "verify_bundle",
    "verify_certificate",
    "wire",
]
