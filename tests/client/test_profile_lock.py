"""One process at a time on a profile (issue 13 item 7): the profile lock, its typed
error naming the holder, and keyfile rewrites that never share a temp file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import sealpost.client.store.files as store_files
from sealpost.client.store import TEST_PARAMS, ProfileBusy, Store, WrongPasscode

PASSCODE = "correct horse"

# A second process: open the profile (waiting up to TIMEOUT), then, while holding it,
# prove nobody else does: create a marker exclusively, bump a counter, remove the marker.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from sealpost.client.store import ProfileBusy, Store

    profile, rounds, timeout = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    for _ in range(rounds):
        try:
            store = Store.open(profile, "correct horse", lock_timeout=timeout)
        except ProfileBusy as exc:
            print("busy", exc.pid, flush=True)
            sys.exit(3)
        try:
            fd = os.open(profile / "held", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            print("OVERLAP", flush=True)
            sys.exit(1)
        os.close(fd)
        n = int((store.get_meta("count") or b"0").decode())
        time.sleep(0.005)
        with store.transaction() as conn:
            store.set_meta(conn, "count", str(n + 1).encode())
        os.unlink(profile / "held")
        store.close()
    print("done", flush=True)
    """
)


def make(path: Path) -> Store:
    return Store.create(path, PASSCODE, params=TEST_PARAMS)


def worker(profile: Path, rounds: int, timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(profile), str(rounds), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_process_is_told_which_process_holds_the_profile(tmp_path: Path) -> None:
    store = make(tmp_path / "p")
    try:
        started = time.monotonic()
        proc = worker(tmp_path / "p", 1, 0.5)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, (out, err)
        assert out.split() == ["busy", str(os.getpid())]
        assert time.monotonic() - started >= 0.5  # it waited the bound before giving up
        assert (tmp_path / "p" / "lock").stat().st_mode & 0o777 == 0o600
    finally:
        store.close()
    # closed: the same second process now gets it
    proc = worker(tmp_path / "p", 1, 0.5)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "done", (out, err)


def test_two_processes_on_one_profile_never_both_hold_it(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    procs = [worker(tmp_path / "p", 15, 60.0) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "done", (out, err)
    with Store.open(tmp_path / "p", PASSCODE) as store:
        assert store.get_meta("count") == b"30"  # no update lost to an overlap


def test_the_lock_is_held_within_one_process_too_and_released_by_close(tmp_path: Path) -> None:
    store = make(tmp_path / "p")
    with pytest.raises(ProfileBusy) as busy:
        Store.open(tmp_path / "p", PASSCODE, lock_timeout=0.1)
    assert busy.value.pid == os.getpid()
    assert str(os.getpid()) in str(busy.value) and PASSCODE not in str(busy.value)
    store.close()
    store.close()  # idempotent
    Store.open(tmp_path / "p", PASSCODE, lock_timeout=0).close()


def test_twenty_concurrent_opens_never_fail_with_a_raw_oserror(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    errors: list[BaseException] = []

    def one() -> None:
        try:
            Store.open(tmp_path / "p", PASSCODE, lock_timeout=60).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "keyfile.json",
        "lock",
        "profile.db",
    ]  # no temp file left over


def test_concurrent_keyfile_writes_use_temp_files_of_their_own(tmp_path: Path) -> None:
    """Below the lock: 20 writers of one file at once (the fixed ``keyfile.json.tmp``
    made 8 of 20 fail with FileNotFoundError)."""
    target = tmp_path / "keyfile.json"
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            store_files.write_atomic(target, b'{"writer": %d}' % i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert target.read_bytes().startswith(b'{"writer": ')
    assert [p.name for p in tmp_path.iterdir()] == ["keyfile.json"]
    assert target.stat().st_mode & 0o777 == 0o600


def test_concurrent_wrong_passcodes_are_each_counted(tmp_path: Path) -> None:
    make(tmp_path / "p").close()
    failures: list[int] = []

    def guess() -> None:
        try:
            Store.open(tmp_path / "p", "wrong", lock_timeout=60)
        except WrongPasscode as exc:
            failures.append(exc.failures)

    threads = [threading.Thread(target=guess) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(failures) == [1, 2]  # not two guesses recorded as the same failure
