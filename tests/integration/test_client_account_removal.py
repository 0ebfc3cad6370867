"""An account removed by the operator (``sealpost admin accounts remove``), as clients see
it: a contact's lookup gets the signed deletion (no such user, no alarm), the removed
account's own device raises ``account_removed``, and the name registered again after
its quarantine is another identity key, which the former contact flags."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ServerProcess, unique_name

from sealpost.client import Client, UnknownContact, UntrustedContact
from sealpost.client.store import TEST_PARAMS


def _remove(data: Path, name: str, *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
    command = [sys.executable, "-m", "sealpost.cli", "admin", "--data", str(data)]
    result = subprocess.run(
        [*command, "accounts", "remove", name, "--yes", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_clients_see_a_removal_as_signed_and_a_new_owner_as_a_key_change(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server()
    alice_name, bob_name = unique_name("alice"), unique_name("bob")

    async def create(name: str, where: str) -> Client:
        return await Client.create(
            tmp_path / where,
            "passcode-" + name,
            server_url=server.url,
            username=name,
            params=TEST_PARAMS,
        )

    async def scenario() -> None:
        alice = await create(alice_name, "alice")
        bob = await create(bob_name, "bob")
        try:
            await alice.send(bob_name, "hi bob")
            alice.verify(bob_name)
            _remove(server.data, bob_name, "--quarantine", "0")
            with pytest.raises(UnknownContact):
                await alice.lookup(bob_name)
            assert alice.alarms() == []  # a signed deletion is no alarm
            # the removed account's own device learns it from the log
            await bob.monitor()
            assert [a.kind for a in bob.alarms()] == ["account_removed"]
        finally:
            await bob.close()
        # the name, free again, is someone else's: a key change of a verified contact
        new_bob = await create(bob_name, "new-bob")
        try:
            contact = await alice.lookup(bob_name)
            assert contact.key_changed and contact.verified
            with pytest.raises(UntrustedContact):
                await alice.send(bob_name, "are you still bob?")
            assert alice.alarms() == []
        finally:
            await new_bob.close()
            await alice.close()

    asyncio.run(scenario())
