"""SessionRecord: a remote device's sessions, driven through new sessions (simultaneous
starts, re-installs), out-of-order delivery, drops, replays, tampering and storage
round trips (a hypothesis RuleBasedStateMachine, as tests/property/test_session_model.py).

Invariants checked at every step:
- a message of a session the record holds decrypts to its plaintext, exactly once, and that
  session becomes the current one;
- a message of a session the record does not hold (dropped past the limit) is refused with
  InvalidMessage and changes nothing; a PreKeyMessage no session holds starts a new one;
- a replay raises DuplicateMessage, a tampered message a ProtocolError; neither changes the
  record;
- the record holds at most 1 + MAX_ARCHIVED_SESSIONS sessions, newest promotion first, and
  its encoding is the stored one (so profiles written before SessionRecord still open).
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sealpost.protocol import (
    DecodeError,
    DuplicateMessage,
    InvalidMessage,
    ProtocolError,
    Session,
    SessionRecord,
    UntrustedIdentity,
    wire,
)
from sealpost.protocol.consts import MAX_ARCHIVED_SESSIONS
from support import SeededRng, make_party, respond

_KEPT = 1 + MAX_ARCHIVED_SESSIONS
_RNG = SeededRng("session record")
_ALICE, _BOB = make_party(_RNG), make_party(_RNG)


def _pair() -> tuple[Session, Session]:
    """Alice's and Bob's side of one new session (Bob answered Alice's first message)."""
    a = Session.initiate(_ALICE.device, _BOB.bundle(one_time=False), rng=_RNG)
    b, _ = respond(_BOB, a.encrypt(b"first", rng=_RNG))
    return a, b


_POOL = [_pair()[1] for _ in range(_KEPT + 3)]  # Bob's side of a few distinct sessions


def _stored_format(sessions: list[Session]) -> bytes:
    """The encoding client/sessions.py wrote before SessionRecord existed."""
    body = b"".join(struct.pack(">I", len(s.to_bytes())) + s.to_bytes() for s in sessions)
    return bytes((0x01, len(sessions))) + body


def test_encoding_is_the_stored_one() -> None:
    record = SessionRecord(_POOL[:3])
    assert record.to_bytes() == _stored_format(_POOL[:3])
    restored = SessionRecord.from_bytes(_stored_format(_POOL[:3]))
    assert [s.base_key for s in restored] == [s.base_key for s in _POOL[:3]]


def test_an_empty_record_is_not_stored() -> None:
    with pytest.raises(ValueError):
        SessionRecord().to_bytes()
    with pytest.raises(DecodeError):
        SessionRecord.from_bytes(bytes((0x01, 0)))


def test_more_sessions_than_kept_is_refused() -> None:
    with pytest.raises(DecodeError):
        SessionRecord.from_bytes(_stored_format(_POOL[: _KEPT + 1]))


def test_repr_names_no_key() -> None:
    record = SessionRecord(_POOL[:2])
    assert repr(record) == "SessionRecord(sessions=2)"


def test_check_skips_a_refused_session() -> None:
    alice, bob = _pair()
    record = SessionRecord([_POOL[0], bob])
    message = alice.encrypt(b"hello", rng=_RNG)

    def refuse(remote: wire.DeviceCertificate) -> None:
        raise UntrustedIdentity("not the sender")

    with pytest.raises(InvalidMessage):
        record.decrypt(message, check=refuse)
    assert [s.base_key for s in record] == [_POOL[0].base_key, bob.base_key]
    assert record.decrypt(message, check=lambda remote: None) == b"hello"
    assert record.current is bob


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(_POOL) - 1), max_size=30))
def test_promote_moves_to_front_and_keeps_the_newest(picks: list[int]) -> None:
    record, model = SessionRecord(), []
    for pick in picks:
        record.promote(_POOL[pick])
        model = [pick, *(p for p in model if p != pick)][:_KEPT]
        assert [id(s) for s in record] == [id(_POOL[p]) for p in model]
    if model:
        again = SessionRecord.from_bytes(record.to_bytes())
        assert [s.base_key for s in again] == [_POOL[p].base_key for p in model]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_into_from_bytes(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        SessionRecord.from_bytes(data)


_STORED = SessionRecord(_POOL[:2]).to_bytes()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_STORED) - 1), st.integers(1, 255), st.integers(0, len(_STORED)))
def test_mutated_records_into_from_bytes(position: int, flip: int, cut: int) -> None:
    data = bytearray(_STORED)
    data[position] ^= flip
    for candidate in (bytes(data), _STORED[:cut]):
        try:
            record = SessionRecord.from_bytes(candidate)
        except DecodeError:
            continue
        assert 1 <= len(record) <= _KEPT


class RecordModel(RuleBasedStateMachine):
    """Alice starts sessions with Bob's device; Bob keeps them in one SessionRecord."""

    def __init__(self) -> None:
        super().__init__()
        self.alice: list[Session] = []  # every session Alice started, oldest first
        self.replies: list[int] = []  # per Alice session: replies Bob sent in it
        self.record = SessionRecord()
        self.evicted: set[bytes] = set()  # base keys that once fell out of the record
        self.in_flight: list[tuple[bytes, bytes, bytes]] = []  # (base key, message, text)
        self.delivered: list[tuple[bytes, bytes]] = []
        self.counter = 0

    def _held(self) -> list[bytes]:
        return [s.base_key for s in self.record]

    def _refused(self, message: bytes) -> ProtocolError:
        before = self.record.to_bytes() if len(self.record) else b""
        with pytest.raises(ProtocolError) as info:
            self.record.decrypt(message)
        assert (self.record.to_bytes() if len(self.record) else b"") == before
        return info.value

    @precondition(lambda self: len(self.alice) < 12)
    @rule()
    def start_session(self) -> None:
        self.alice.append(Session.initiate(_ALICE.device, _BOB.bundle(one_time=False), rng=_RNG))
        self.replies.append(0)

    @precondition(lambda self: self.alice)
    @rule(data=st.data(), size=st.sampled_from([0, 1, 300]))
    def send(self, data: st.DataObject, size: int) -> None:
        session = data.draw(st.sampled_from(self.alice))
        self.counter += 1
        text = f"m{self.counter}:".encode() + b"x" * size
        self.in_flight.append((session.base_key, session.encrypt(text, rng=_RNG), text))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        base_key, message, text = self.in_flight.pop(
            data.draw(st.integers(0, len(self.in_flight) - 1))
        )
        held = self._held()
        decoded = wire.decode(message)
        if base_key in held and base_key in self.evicted:
            # built again from a later first message after it fell out: its ratchet is
            # not the one Alice continued, so it may or may not read this one
            before = self.record.to_bytes()
            try:
                assert self.record.decrypt(message) == text
            except ProtocolError:
                assert self.record.to_bytes() == before
                return
        elif base_key in held:
            size = len(self.record)
            assert self.record.decrypt(message) == text
            assert len(self.record) == size
        elif isinstance(decoded, wire.PreKeyMessage):
            assert self.record.decrypt_prekey(decoded) is None
            session, plaintext = respond(_BOB, message)
            assert plaintext == text
            self.record.promote(session)
            self.evicted |= set(held[_KEPT - 1 :])
        else:
            assert isinstance(self._refused(message), InvalidMessage)
            return
        assert self.record.current is not None
        assert self.record.current.base_key == base_key  # promoted
        self.delivered.append((base_key, message))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        base_key, message = data.draw(st.sampled_from(self.delivered))
        if base_key not in self._held():
            decoded = wire.decode(message)
            if isinstance(decoded, wire.PreKeyMessage):
                assert self.record.decrypt_prekey(decoded) is None
            else:
                assert isinstance(self._refused(message), InvalidMessage)
            return
        error = self._refused(message)
        if base_key not in self.evicted:
            assert isinstance(error, DuplicateMessage)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def tamper(self, data: st.DataObject) -> None:
        _, message, _ = data.draw(st.sampled_from(self.in_flight))
        # the ratchet message only: a PreKeyMessage's PQXDH fields are not re-read by a
        # session it already belongs to (Session.matches checks base key and initiator)
        inner = message if message[1] == wire.WireType.RATCHET_MESSAGE else None
        if inner is None:
            return
        forged = bytearray(message)
        forged[data.draw(st.integers(0, len(message) - 1))] ^= data.draw(st.integers(1, 255))
        self._refused(bytes(forged))

    @precondition(lambda self: len(self.record))
    @rule(data=st.data())
    def reply(self, data: st.DataObject) -> None:
        """Bob answers in the current session; Alice reads it (she then sends RatchetMessages
        and, on her next send, a new chain: capped so no chain falls out of memory)."""
        current = self.record.current
        assert current is not None
        if current.base_key in self.evicted:
            return
        index = next(i for i, s in enumerate(self.alice) if s.base_key == current.base_key)
        if self.replies[index] >= 3:
            return
        self.replies[index] += 1
        assert self.alice[index].decrypt(current.encrypt(b"reply", rng=_RNG)) == b"reply"

    @precondition(lambda self: len(self.record))
    @rule()
    def snapshot_restore(self) -> None:
        stored = self.record.to_bytes()
        self.record = SessionRecord.from_bytes(stored)
        assert self.record.to_bytes() == stored

    @invariant()
    def bounded_and_stored_as_before(self) -> None:
        assert len(self.record) <= _KEPT
        if len(self.record):
            assert self.record.to_bytes() == _stored_format(list(self.record))


RecordModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_record_model = RecordModel.TestCase
