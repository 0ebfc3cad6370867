"""A remote device's sessions: the current one first, then a few previous ones.

Two devices that start a session with each other at the same moment end up with two, and a
message may still arrive in the older one. Like libsignal's ``SessionRecord`` a record keeps
the newest :data:`~sealpost.protocol.consts.MAX_ARCHIVED_SESSIONS` previous sessions behind
the current one; to decrypt, it tries the current session, then the previous ones newest
first, and **promotes** the one that decrypts to current (the peer evidently still uses it,
so the next message sent goes out in it).

Sans-I/O, like :class:`~sealpost.protocol.session.Session`: the caller loads a record
(:meth:`SessionRecord.from_bytes`), calls :meth:`SessionRecord.decrypt` or
:meth:`SessionRecord.promote`, and persists :meth:`SessionRecord.to_bytes` in the same
transaction as the message. A decrypt that raises leaves the record as it was (each
session's own decrypt changes nothing on failure, and nothing is promoted)::

    >>> record = SessionRecord.from_bytes(stored)                    # doctest: +SKIP
    >>> plaintext = record.decrypt(message)                          # doctest: +SKIP
    >>> store.save(address, record.to_bytes())                       # doctest: +SKIP

A PreKeyMessage belongs to at most one session (its base key and initiator certificate,
:meth:`Session.matches`). When none holds it, :meth:`decrypt_prekey` returns ``None``: it
starts a new session, which the caller builds (``Session.respond``, with prekeys only it
holds) and puts in front with :meth:`promote`.

Encoding (a local storage record, never on the wire)::

    version (1) = 0x01 | count (1) | (length (4, big endian) | Session.to_bytes()) x count

the current session first. A record holds at least one session; at most
``1 + MAX_ARCHIVED_SESSIONS`` are kept (the oldest dropped).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator

from sealpost.protocol.consts import MAX_ARCHIVED_SESSIONS
from sealpost.protocol.errors import (
    DecodeError,
    DuplicateMessage,
    InvalidMessage,
    ProtocolError,
)
from sealpost.protocol.session import Session
from sealpost.protocol.wire import DeviceCertificate, PreKeyMessage, RatchetMessage

__all__ = ["SessionRecord"]

_VERSION = 0x01
_LENGTH = struct.Struct(">I")

#: A check run on a session before a message is tried in it (sealed sender's
#: ``UnsealedMessage.check_session``): it raises a ProtocolError to skip the session.
SessionCheck = Callable[[DeviceCertificate], None]


class SessionRecord:
    """The sessions with one remote device, the current one first."""

    __slots__ = ("_sessions",)

    def __init__(self, sessions: Iterable[Session] = ()) -> None:
        self._sessions: list[Session] = list(sessions)[: 1 + MAX_ARCHIVED_SESSIONS]

    # ------------------------------------------------------------------ facts

    @property
    def current(self) -> Session | None:
        """The session messages are sent in (``None`` for an empty record)."""
        return self._sessions[0] if self._sessions else None

    @property
    def sessions(self) -> tuple[Session, ...]:
        """Every session held, the current one first."""
        return tuple(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(tuple(self._sessions))

    # ------------------------------------------------------------------ transforms

    def promote(self, session: Session) -> None:
        """Make ``session`` the current one: a new session goes in front, the oldest
        previous one falls out past the limit; one already held moves to the front."""
        self._sessions = [s for s in self._sessions if s is not session]
        self._sessions.insert(0, session)
        del self._sessions[1 + MAX_ARCHIVED_SESSIONS :]

    def decrypt_prekey(self, message: PreKeyMessage) -> bytes | None:
        """Decrypt a PreKeyMessage in the session it belongs to and promote that one;
        ``None`` if no session holds it (it starts a new one). A message that belongs to a
        session but does not decrypt in it raises (a replayed first message:
        :class:`DuplicateMessage`), changing nothing."""
        for session in self._sessions:
            if session.matches(message):
                plaintext = session.decrypt(message)
                self.promote(session)
                return plaintext
        return None

    def decrypt(
        self,
        message: bytes | RatchetMessage | PreKeyMessage,
        *,
        check: SessionCheck | None = None,
    ) -> bytes:
        """Decrypt in the current session, else in the previous ones (newest first), and
        promote the one that decrypts. ``check`` (if given) runs on each session's remote
        certificate first; a session it refuses is skipped.

        Raises :class:`DuplicateMessage` at once if a session recognises a replay, and
        :class:`InvalidMessage` if no session decrypts the message (a PreKeyMessage no
        session holds included); either way the record is unchanged."""
        if isinstance(message, PreKeyMessage):
            plaintext = self.decrypt_prekey(message)
            if plaintext is None:
                raise InvalidMessage("no session holds this prekey message")
            return plaintext
        for session in self._sessions:
            try:
                if check is not None:
                    check(session.remote_certificate)
                plaintext = session.decrypt(message)
            except DuplicateMessage:
                raise
            except ProtocolError:
                continue
            self.promote(session)
            return plaintext
        raise InvalidMessage("no session decrypts this message")

    def copy(self) -> SessionRecord:
        """An independent deep copy (decrypt into it; keep the original if that fails)."""
        return SessionRecord(Session.from_bytes(s.to_bytes()) for s in self._sessions)

    # ------------------------------------------------------------------ storage

    def to_bytes(self) -> bytes:
        """The storage encoding (module docstring); an empty record cannot be stored."""
        if not self._sessions:
            raise ValueError("an empty session record is not stored")
        parts = [bytes((_VERSION, len(self._sessions)))]
        for session in self._sessions:
            data = session.to_bytes()
            parts.append(_LENGTH.pack(len(data)) + data)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionRecord:
        """Decode :meth:`to_bytes`; anything else raises :class:`DecodeError`."""
        if len(data) < 2 or data[0] != _VERSION:
            raise DecodeError("not a session record")
        count, offset, sessions = data[1], 2, []
        if count == 0 or count > 1 + MAX_ARCHIVED_SESSIONS:
            raise DecodeError("bad session record")
        for _ in range(count):
            if offset + _LENGTH.size > len(data):
                raise DecodeError("truncated session record")
            (length,) = _LENGTH.unpack_from(data, offset)
            offset += _LENGTH.size
            if offset + length > len(data):
                raise DecodeError("truncated session record")
            sessions.append(Session.from_bytes(bytes(data[offset : offset + length])))
            offset += length
        if offset != len(data):
            raise DecodeError("bad session record")
        return cls(sessions)

    def __repr__(self) -> str:
        return f"SessionRecord(sessions={len(self._sessions)})"
