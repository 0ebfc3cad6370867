"""Every error the client library raises, under one root, :class:`ClientError`.

The tree::

    ClientError
    ├── TransportError              the server could not be used
    │   ├── ServerUnavailable       unreachable, connection lost, timed out
    │   ├── ServerError             the server answered with a JSON error (``code``)
    │   ├── AccountUnknown          the server does not know this account (lost its data?)
    │   └── DeviceRevoked           this device was removed from its account
    ├── UnknownContact              no such username on the server
    ├── UnknownGroup                this account is in no group of that name
    ├── UntrustedContact            a verified contact's account key changed: not sent
    ├── MessageTooLarge             a text over :data:`MAX_SEND_TEXT`: not sent
    ├── NotRegistered               the profile has no account on its server yet
    ├── LinkRefused                 a device link was not confirmed or did not check out
    ├── TransparencyFailure         the server's answer contradicts its key-transparency
    │   │                           log (an alarm was raised): refused
    │   └── LogKeyChanged           the server's log key is not the pinned one
    ├── GroupOutOfDate              a member sent under a group version this device has
    │                               not got yet: nothing is sent to the group until then
    ├── GroupChangeRefused          a group change that would change nothing or clash
    └── StoreError                  (from :mod:`sealpost.client.store`) the local store:
                                    wrong passcode, profile busy, damaged, ...

Protocol failures of a peer's message (:class:`sealpost.protocol.ProtocolError`) never
escape the receive loop: the message is dropped and counted, and the loop goes on (the
pipeline's own drop signal, :class:`sealpost.client.inbox.DropMessage`, is no error of this
tree). :class:`UnknownContact` is only ever a username the server has no account of (or
this device no conversation with); its text names that username and nothing else.
No message contains a passcode, key material or message text.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MAX_SEND_TEXT",
    "AccountUnknown",
    "ClientError",
    "DeviceRevoked",
    "GroupChangeRefused",
    "GroupOutOfDate",
    "LinkRefused",
    "LogKeyChanged",
    "MessageTooLarge",
    "NotRegistered",
    "ServerError",
    "ServerUnavailable",
    "TransparencyFailure",
    "TransportError",
    "UnknownContact",
    "UnknownGroup",
    "UntrustedContact",
]


class ClientError(Exception):
    """Root of the client library's errors."""


class TransportError(ClientError):
    pass


class ServerUnavailable(TransportError):
    pass


class ServerError(TransportError):
    def __init__(
        self, status: int, code: str, message: str, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"server refused ({code}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


class UnknownContact(ClientError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no user {name!r} on this server")
        self.name = name


class UnknownGroup(ClientError):
    """This account is in no group named ``name`` (``removed``: it was, and was removed).
    The server knows no groups: this is what this device knows."""

    def __init__(self, name: str, *, removed: bool = False) -> None:
        bare = name.removeprefix("#")
        if removed:
            super().__init__(f"you are no longer a member of #{bare}")
        else:
            super().__init__(f"you are in no group named #{bare}")
        self.name = bare
        self.removed = removed


class UntrustedContact(ClientError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name}'s safety number changed since you verified it; nothing was sent. "
            f"Compare it again (sealpost safety-number {name}) and run "
            f"'sealpost verify {name}'"
        )
        self.name = name


#: The longest text :meth:`Client.send` takes, in UTF-8 bytes: the content's own limit
#: (``MAX_TEXT_BYTES``, 64 KiB) less room for what travels with the text in the same
#: 64 KiB ratchet plaintext (header, a file's pointer, a gossiped tree head, the copy to
#: this account's other devices, padding), so that any text under it can be sent.
MAX_SEND_TEXT = 63 * 1024


class MessageTooLarge(ClientError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a text of {size} bytes is over the {limit}-byte limit")
        self.size = size
        self.limit = limit


class NotRegistered(ClientError):
    pass


class LinkRefused(ClientError):
    """A device link was not confirmed, or its provisioning did not check out."""


class TransparencyFailure(ClientError):
    """The server's keys, devices or log did not check out against its signed
    key-transparency log: nothing was sent or accepted, and an alarm was raised
    (``sealpost alarms``). ``kind`` names the alarm."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"key transparency check failed ({kind}): {detail}")
        self.kind = kind
        self.detail = detail


class AccountUnknown(TransportError):
    """The server has no account of this name, or one under another account key."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"the server does not know the account {name!r} any more (it may have lost its "
            "data, or been restored from an old backup); this profile cannot use it"
        )
        self.name = name


class DeviceRevoked(TransportError):
    """The account no longer lists this device: another of its devices removed it."""

    def __init__(self, device_id: int) -> None:
        super().__init__(
            f"this device (device {device_id}) was removed from its account by another of "
            "the account's devices; link it again with 'sealpost link new' in a new profile"
        )
        self.device_id = device_id


class LogKeyChanged(TransparencyFailure):
    """The server signs its log with another key than the one the profile pinned."""

    def __init__(self) -> None:
        super().__init__(
            "log_key_changed",
            "the server's log key changed: it lost its data, or another server answers at "
            "this address",
        )


class GroupOutOfDate(ClientError):
    """A member's message named a newer version of the group than this device has: it is
    not sent, so that a member removed in that version cannot read it. The device asked
    that member for the missing versions; sending works again once they arrive."""

    def __init__(self, group: str, version: int, seen: int, by: str) -> None:
        super().__init__(
            f"#{group} changed (version {seen}, from {by}) and this device has only version "
            f"{version}; nothing was sent. It asked {by} for the update: receive, then retry"
        )
        self.group = group
        self.version = version
        self.seen = seen
        self.by = by


class GroupChangeRefused(ClientError):
    """A group change that would change nothing (adding a member already in it) or that
    clashes (a second group of the same name): nothing was changed or sent."""
