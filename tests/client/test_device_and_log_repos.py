"""The own-devices, prekeys, alarms and log repositories: whole operations that either
happen or (raising) change nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealpost.client.store import TEST_PARAMS, Store
from sealpost.client.store.alarms import LogPin, MonitorMark
from sealpost.client.store.prekeys import KEM_LAST_RESORT, ONE_TIME, SIGNED
from sealpost.protocol import AccountIdentity, DeviceKeys
from sealpost.protocol.wire import DeviceCertificate

NOW = 1_800_000_000
ME = bytes(range(16))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.create(tmp_path / "p", "repositories", params=TEST_PARAMS) as store:
        yield store


def _certs(*ids: int) -> dict[int, DeviceCertificate]:
    account = AccountIdentity.generate(os.urandom)
    return {d: DeviceKeys.generate(account, d, now=NOW, rng=os.urandom).certificate for d in ids}


def test_replace_own_keeps_names_and_drops_the_unlisted(store: Store) -> None:
    with store.unit() as repos:
        repos.devices.add_named_own({2: "laptop", 3: "old phone"}, NOW)
        repos.devices.name_own(4, "tablet", NOW)
    certs = _certs(2, 5)
    with store.unit() as repos:
        repos.devices.replace_own(certs, NOW)
    own = {d.device_id: d for d in store.repos().devices.own()}
    assert set(own) == {2, 5}
    assert own[2].name == "laptop" and own[5].name == "device 5"
    assert own[2].certificate is not None
    assert own[2].certificate.encode() == certs[2].encode()
    assert set(store.repos().devices.own_certified()) == {2, 5}


def test_remove_own_says_the_name_it_had(store: Store) -> None:
    with store.unit() as repos:
        repos.devices.name_own(2, "laptop", NOW)
        assert repos.devices.remove_own(2) == "laptop"
        assert repos.devices.remove_own(2) is None
    assert store.repos().devices.own_names() == {}


def test_a_failed_prekey_add_adds_none(store: Store) -> None:
    with store.unit() as repos:
        repos.prekeys.add([(SIGNED, 1, b"a")], NOW)
    with pytest.raises(Exception), store.unit() as repos:  # noqa: B017 (sqlite's)
        repos.prekeys.add([(ONE_TIME, 7, b"x"), (SIGNED, 1, b"again")], NOW)
    assert store.repos().prekeys.get(ONE_TIME, 7) is None
    assert store.repos().prekeys.get(SIGNED, 1) == b"a"


def test_drop_rotated_keeps_one_time_keys(store: Store) -> None:
    with store.unit() as repos:
        repos.prekeys.add([(SIGNED, 1, b"s"), (KEM_LAST_RESORT, 2, b"k"), (ONE_TIME, 3, b"o")], NOW)
        assert repos.prekeys.drop_rotated(NOW + 1) == 2
    assert store.repos().prekeys.get(ONE_TIME, 3) == b"o"


def test_an_alarm_is_raised_once_and_dismissed(store: Store) -> None:
    with store.unit() as repos:
        first = repos.alarms.raise_alarm("stale_lookup", "bob", "old", [b"head"], NOW)
        again = repos.alarms.raise_alarm("stale_lookup", "bob", "old", [b"head"], NOW + 5)
    assert first is not None and again is None
    assert [a.alarm_id for a in store.repos().alarms.list()] == [first.alarm_id]
    with store.unit() as repos:
        assert repos.alarms.dismiss([first.alarm_id, 999]) == 1
    assert store.repos().alarms.list() == []
    assert store.repos().alarms.list(include_dismissed=True)[0].dismissed


def test_log_pins_unproven_heads_and_the_monitor_mark(store: Store) -> None:
    repos = store.repos()
    assert repos.log.monitored() == MonitorMark()
    with store.unit() as repos:
        repos.log.set_pin(ME, "alice", LogPin(3, 40))
        repos.log.add_unproven(b"head", "bob", NOW)
        repos.log.add_unproven(b"head", "carol", NOW + 9)  # the first failure stays
        repos.log.set_monitored(MonitorMark(40, 3, frozenset({2, 7})))
    assert repos.log.pin(ME) == LogPin(3, 40)
    assert repos.log.is_pinned("alice") and not repos.log.is_pinned("bob")
    [unproven] = repos.log.unproven()
    assert (unproven.source, unproven.first_failed) == ("bob", NOW)
    assert repos.log.monitored() == MonitorMark(40, 3, frozenset({2, 7}))
    with store.unit() as repos:
        repos.log.proven(b"head")
    assert repos.log.unproven() == []
