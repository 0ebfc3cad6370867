"""Every error the protocol core raises.

The tree::

    ProtocolError
    ├── LocalProtocolError          the caller misused the API (our bug, not the peer's)
    │   └── SessionNotReady         a responder session cannot send before it has received
    └── RemoteProtocolError         the bytes we were given are wrong (peer, server or network)
        ├── DecodeError             not a well-formed sealpost structure
        │   └── UnsupportedVersion  a version byte we do not speak
        ├── InvalidKey              a public key that decodes but must not be used
        ├── BadSignature            a signature that does not verify
        ├── UntrustedIdentity       a valid identity that is not the one the caller expects
        ├── NotPostQuantum          a bundle without an ML-KEM prekey, classical not allowed
        ├── UnknownPreKey           a PreKeyMessage that names a prekey we do not hold
        ├── InvalidMessage          decryption or authentication failed (opaque on purpose)
        ├── DuplicateMessage        a message whose key was already used
        └── TooManySkipped          a message too far ahead in its chain

Decryption failures are deliberately one opaque :class:`InvalidMessage` whatever check
failed, so an attacker learns nothing from which one it was. Structured fields appear only
on conditions that carry no secret (a duplicate's counter, a gap's size).

No error message ever contains key material or plaintext.
"""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "DecodeError",
    "DuplicateMessage",
    "InvalidKey",
    "InvalidMessage",
    "LocalProtocolError",
    "NotPostQuantum",
    "ProtocolError",
    "RemoteProtocolError",
    "SessionNotReady",
    "TooManySkipped",
    "UnknownPreKey",
    "UnsupportedVersion",
    "UntrustedIdentity",
]


class ProtocolError(Exception):
    """Root of every error raised by :mod:`sealpost.protocol` and :mod:`sealpost.crypto`."""


class LocalProtocolError(ProtocolError):
    """The caller used the API wrongly: a bug on our side, never the peer's fault."""


class SessionNotReady(LocalProtocolError):
    """A session that has not yet received anything cannot send (responder before first
    message)."""


class RemoteProtocolError(ProtocolError):
    """Input from the outside world (peer, server, network) is wrong."""


class DecodeError(RemoteProtocolError):
    """The bytes are not a well-formed sealpost structure."""


class UnsupportedVersion(DecodeError):
    """The structure carries a version this implementation does not speak."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unsupported wire version {version}")
        self.version = version


class InvalidKey(RemoteProtocolError):
    """A public key is well-formed but unusable (e.g. low order, fails the ML-KEM check)."""


class BadSignature(RemoteProtocolError):
    """A signature does not verify."""


class UntrustedIdentity(RemoteProtocolError):
    """The identity is valid but differs from the one the caller trusts for this peer."""


class NotPostQuantum(RemoteProtocolError):
    """A prekey bundle has no ML-KEM prekey and the caller did not allow classical-only."""


class UnknownPreKey(RemoteProtocolError):
    """A PreKeyMessage names a prekey that the responder does not have (used or never issued)."""


class InvalidMessage(RemoteProtocolError):
    """The message could not be authenticated or decrypted. Deliberately says no more."""

    def __init__(self, message: str = "message could not be authenticated") -> None:
        super().__init__(message)


class DuplicateMessage(RemoteProtocolError):
    """This message's key was already used: a replay or a duplicate delivery."""

    def __init__(self, chain: bytes, counter: int) -> None:
        # The chain is a public ratchet key: fine to show, and useful when debugging.
        super().__init__(f"duplicate message {counter} on chain {chain[:4].hex()}…")
        self.chain = chain
        self.counter = counter


class TooManySkipped(RemoteProtocolError):
    """The message is further ahead in its chain than we are willing to skip."""

    def __init__(self, skip: int, limit: int) -> None:
        super().__init__(f"message would skip {skip} keys, more than the limit of {limit}")
        self.skip = skip
        self.limit = limit
