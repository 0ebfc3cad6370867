"""Profiles written by an older sealpost open with today's: the store migrates them forward,
their history reads back, and they keep chatting.

The fixture (tests/fixtures/profile-5a35988, made by scripts/make_profile_fixture.py with
the code of commit 5a35988, before the client's redesign) is a server's data directory and
two profiles, alice and bob, that exchanged texts, a group and a timer. The server runs on
a copy of that data directory; the profiles' copies are told its new address (the port
changed), which is the only thing written into them before the client opens them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from helpers import ServerProcess

from sealpost.client import Client, MessageReceived
from sealpost.client.store import SCHEMA_VERSION, Store

FIXTURE = Path(__file__).parents[1] / "fixtures" / "profile-5a35988"
TEXTS = [
    ("alice", "hello bob, from an old sealpost"),
    ("bob", "hi alice"),
    ("alice", "a third message"),
]


def copy_fixture(tmp_path: Path) -> dict[str, object]:
    for name in ("server", "alice", "bob"):
        shutil.copytree(FIXTURE / name, tmp_path / name)
    for key in ("server_key", "log_key"):  # a git checkout leaves them 0644; the server refuses
        (tmp_path / "server" / key).chmod(0o600)
    doc: dict[str, object] = json.loads((FIXTURE / "fixture.json").read_text())
    return doc


def test_a_profile_made_before_the_redesign_reads_its_history_and_keeps_chatting(
    tmp_path: Path,
) -> None:
    doc = copy_fixture(tmp_path)
    passcode = str(doc["passcode"])
    assert doc["schema_version"] == 7 and SCHEMA_VERSION > 7
    server = ServerProcess(tmp_path / "server", tmp_path / "logs").start()
    try:
        for name in ("alice", "bob"):
            with Store.open(tmp_path / name, passcode) as store:
                conn = store.read()
                assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                assert "events" not in tables  # the dead schema went
                columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
                assert "sender_device" not in columns
                assert store.repos().meta.get("server_url") == str(doc["server_url"]).encode()
                with store.unit() as repos:
                    repos.meta.set("server_url", server.url.encode())
        asyncio.run(chat(tmp_path, passcode))
    finally:
        server.stop()


async def chat(root: Path, passcode: str) -> None:
    alice = await Client.open(root / "alice", passcode)
    bob = await Client.open(root / "bob", passcode)
    try:
        for me, peer in ((alice, "bob"), (bob, "alice")):
            history = me.history(peer)
            assert [(m.author, m.text) for m in history] == TEXTS
            assert [m.outgoing for m in history] == [m.author == me.username for m in history]
            assert me.timer(peer) == 86400
            assert [c.username for c in me.contacts()] == [peer]
            assert [m.text for m in me.history("#oldgroup")] == ["hello group"]
            assert [g.name for g in me.groups()] == ["oldgroup"]
        # the old sessions go on: both ways, pairwise and in the group
        await alice.send("bob", "after the upgrade")
        got = await bob.receive(wait=5)
        assert [e.message.text for e in got if isinstance(e, MessageReceived)] == [
            "after the upgrade"
        ]
        await bob.send("alice", "still here")
        got = await alice.receive(wait=5)
        assert [e.message.text for e in got if isinstance(e, MessageReceived)] == ["still here"]
        await bob.send("#oldgroup", "the group too")
        got = await alice.receive(wait=5)
        assert [e.message.text for e in got if isinstance(e, MessageReceived)] == ["the group too"]
        assert [m.text for m in alice.history("bob")][-2:] == ["after the upgrade", "still here"]
        assert bob.history("alice")[-1].expires_at is not None  # the old timer still applies
    finally:
        await alice.close()
        await bob.close()
