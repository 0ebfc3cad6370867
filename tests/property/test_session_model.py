"""Two parties driven through arbitrary interleavings of sends, out-of-order delivery,
drops, duplicates, tampering and snapshot/restore (libsignal's Event model, as a hypothesis
RuleBasedStateMachine).

Invariants checked at every step:
- every delivered message decrypts to its plaintext, exactly once;
- a replayed message raises DuplicateMessage (while its chain is still remembered) and
  changes nothing;
- any tampered byte raises a ProtocolError and changes nothing;
- serializing and restoring a session at any point changes nothing.

A message becomes undeliverable only through the documented bounds: its chain is more than
MAX_OLD_RECEIVING_CHAINS chains behind. The model tracks the chains each side has seen
(from the public ratchet keys in headers) to know which case applies.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sealpost.protocol import DuplicateMessage, ProtocolError, Session
from sealpost.protocol.consts import MAX_OLD_RECEIVING_CHAINS
from support import established_pair

_PEER = {"a": "b", "b": "a"}


def _chain(message: bytes) -> bytes:
    return message[2:34]


class TwoParties(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        a, b, self.rng = established_pair("model")
        self.sessions: dict[str, Session] = {"a": a, "b": b}
        self.in_flight: list[tuple[str, bytes, bytes]] = []  # (receiver, message, plaintext)
        self.delivered: list[tuple[str, bytes]] = []
        self.seen: dict[str, list[bytes]] = {"a": [], "b": []}  # chains, in arrival order
        self.counter = 0

    def _remembered(self, receiver: str, chain: bytes) -> bool:
        return chain in self.seen[receiver][-(MAX_OLD_RECEIVING_CHAINS + 1) :]

    def _deliverable(self, receiver: str, chain: bytes) -> bool:
        return chain not in self.seen[receiver] or self._remembered(receiver, chain)

    def _refused(self, receiver: str, message: bytes) -> ProtocolError:
        session = self.sessions[receiver]
        before = session.to_bytes()
        with pytest.raises(ProtocolError) as info:
            session.decrypt(message)
        assert session.to_bytes() == before, "a refused message changed the session"
        return info.value

    @rule(sender=st.sampled_from("ab"), size=st.sampled_from([0, 1, 100, 4096]))
    def send(self, sender: str, size: int) -> None:
        self.counter += 1
        plaintext = f"{sender}{self.counter}:".encode() + b"x" * size
        message = self.sessions[sender].encrypt(plaintext, rng=self.rng)
        self.in_flight.append((_PEER[sender], message, plaintext))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.in_flight) - 1))
        receiver, message, plaintext = self.in_flight.pop(index)
        chain = _chain(message)
        if not self._deliverable(receiver, chain):
            self._refused(receiver, message)  # dropped by the bounds, as documented
            return
        assert self.sessions[receiver].decrypt(message) == plaintext
        if chain not in self.seen[receiver]:
            self.seen[receiver].append(chain)
        self.delivered.append((receiver, message))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        receiver, message = data.draw(st.sampled_from(self.delivered))
        error = self._refused(receiver, message)
        if self._remembered(receiver, _chain(message)):
            assert isinstance(error, DuplicateMessage)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def tamper(self, data: st.DataObject) -> None:
        receiver, message, _ = data.draw(st.sampled_from(self.in_flight))
        position = data.draw(st.integers(0, len(message) - 1))
        flip = data.draw(st.integers(1, 255))
        forged = bytearray(message)
        forged[position] ^= flip
        self._refused(receiver, bytes(forged))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        receiver, message, _ = data.draw(st.sampled_from(self.in_flight))
        self._refused(receiver, message[: data.draw(st.integers(0, len(message) - 1))])

    @rule(who=st.sampled_from("ab"))
    def snapshot_restore(self, who: str) -> None:
        record = self.sessions[who].to_bytes()
        restored = Session.from_bytes(record)
        assert restored.to_bytes() == record
        self.sessions[who] = restored

    @invariant()
    def sessions_serialize(self) -> None:
        for session in self.sessions.values():
            assert Session.from_bytes(session.to_bytes()).to_bytes() == session.to_bytes()


TwoParties.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_parties = TwoParties.TestCase
