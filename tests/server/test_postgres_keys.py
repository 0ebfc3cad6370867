"""Every process on one PostgreSQL database serves the same keys (:mod:`.pg_keys`): the
first process to open it records its public keys, one with another server key or log key is
refused at open (saying which differs, before it takes any lock: it never leads), several
first processes at once record one set, and a database from before migration 7 that has
signed tree heads is recorded only by a process whose log key signed them; ``sealpost
admin``'s check of the log key it signs with records nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import asyncpg
import pytest

from sealpost.crypto.sign import SigningKey
from sealpost.server.storage import pg_cluster
from sealpost.server.storage.pg_keys import DeploymentKeys, KeyMismatch
from sealpost.server.storage.pg_schema import MIGRATIONS
from sealpost.server.storage.postgres import PostgresStorage
from sealpost.transparency.log import SignedTreeHead
from services import fresh_database

#: Racing first processes: rounds, each on a fresh database.
ROUNDS = 4
RACERS = 4


@pytest.fixture
def dsn() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _keys(server: SigningKey | None = None, log: SigningKey | None = None) -> DeploymentKeys:
    return DeploymentKeys(
        server_key=(server or SigningKey.generate(os.urandom)).public_key().public_bytes_raw(),
        log_key=(log or SigningKey.generate(os.urandom)).public_key().public_bytes_raw(),
    )


async def _recorded(dsn: str) -> list[tuple[bytes, bytes]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT server_key, log_key FROM server_keys")
    finally:
        await conn.close()
    return [(bytes(r["server_key"]), bytes(r["log_key"])) for r in rows]


def test_a_process_with_another_server_key_or_log_key_is_refused(dsn: str) -> None:
    async def main() -> None:
        ours = _keys()
        first = PostgresStorage(dsn, solo=False, keys=ours)
        await first.open()
        try:
            assert await _recorded(dsn) == [(ours.server_key, ours.log_key)]
            same = PostgresStorage(dsn, solo=False, keys=ours)
            await same.open()
            await same.close()
            other_server = DeploymentKeys(_keys().server_key, ours.log_key)
            with pytest.raises(KeyMismatch, match="server key in DATA/server_key") as refused:
                await PostgresStorage(dsn, solo=False, keys=other_server).open()
            assert "log key" not in str(refused.value)
            assert "mount the shared data directory" in str(refused.value)
            other_log = DeploymentKeys(ours.server_key, _keys().log_key)
            with pytest.raises(KeyMismatch, match="log key in DATA/log_key") as refused:
                await PostgresStorage(dsn, solo=False, keys=other_log).open()
            assert "server key" not in str(refused.value)
            # refused before any lock: a solo one is told about its keys, not about --redis
            with pytest.raises(KeyMismatch):
                await PostgresStorage(dsn, solo=True, keys=_keys()).open()
            assert await _recorded(dsn) == [(ours.server_key, ours.log_key)]  # unchanged
            await first.check_log_key(ours.log_key)  # sealpost admin's check, before it signs
            with pytest.raises(KeyMismatch, match="log key in DATA/log_key"):
                await first.check_log_key(other_log.log_key)
        finally:
            await first.close()
        # the record outlives the processes: a later one with other keys is refused too
        with pytest.raises(KeyMismatch):
            await PostgresStorage(dsn, solo=True, keys=_keys()).open()

    asyncio.run(main())


def test_first_processes_starting_at_once_record_one_set_of_keys() -> None:
    async def race(dsn: str) -> None:
        keys = [_keys() for _ in range(RACERS)]
        stores = [PostgresStorage(dsn, solo=False, pool_size=2, keys=k) for k in keys]
        opened = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        try:
            won = [k for k, result in zip(keys, opened, strict=True) if result is None]
            refused = [r for r in opened if r is not None]
            assert len(won) == 1, opened  # one recorded its keys; every other was refused
            assert all(isinstance(r, KeyMismatch) for r in refused), refused
            assert await _recorded(dsn) == [(won[0].server_key, won[0].log_key)]
        finally:
            for storage, result in zip(stores, opened, strict=True):
                if result is None:
                    await storage.close()

    for _ in range(ROUNDS):
        with fresh_database() as dsn:
            asyncio.run(race(dsn))


def test_an_upgraded_database_is_recorded_only_with_the_log_key_of_its_heads(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_key = SigningKey.generate(os.urandom)

    async def main() -> None:
        with monkeypatch.context() as patch:  # a database of version 6, a head signed
            patch.setattr(pg_cluster, "MIGRATIONS", MIGRATIONS[:6])
            old = PostgresStorage(dsn, solo=True)
            await old.open()
            head = SignedTreeHead.sign(
                log_key, tree_size=0, timestamp=1, root=bytes(32), map_root=bytes(32)
            )
            await old.add_log_head(0, 1, head.encode())
            await old.close()
        foreign = PostgresStorage(dsn, solo=True, keys=_keys())
        with pytest.raises(KeyMismatch, match="did not sign the database's latest tree head"):
            await foreign.open()
        assert await _recorded(dsn) == []  # the foreign key was not recorded
        ours = _keys(log=log_key)
        storage = PostgresStorage(dsn, solo=True, keys=ours)
        await storage.open()
        await storage.close()
        assert await _recorded(dsn) == [(ours.server_key, ours.log_key)]

    asyncio.run(main())
