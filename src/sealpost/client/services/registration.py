"""Making a profile: this device's keys and prekeys, kept in a new store, registered.

Two ways in, both ending in :func:`register`: :func:`create_account` registers a new
account (``POST /v1/accounts``: username, account key, this first device's certificate
and a delivery token); a new device of an existing account registers itself
(``POST /v1/devices``) once another device provisioned it (:mod:`.linking`). Either way
the keys and prekeys are kept in the store first, then the server is asked; if it
refuses, or anything else fails, the profile's files are removed and no profile is left
behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealpost.client.errors import ServerError
from sealpost.client.relay import RelayTransport
from sealpost.client.services.monitoring import fetch_log_key
from sealpost.client.services.prekeys import InitialPrekeys
from sealpost.client.store import PROFILE_FILES, KdfParams, Store
from sealpost.client.store.unit import Repositories
from sealpost.client.transport import Identity, Transport, b64, unb64
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng
from sealpost.protocol import AccountIdentity, DeviceKeys

__all__ = [
    "Setup",
    "check_device_name",
    "create_account",
    "fetch_server_key",
    "register",
    "remove_profile",
]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Setup:
    """Who the new device will be, and of which server."""

    server_url: str
    server_key: bytes
    username: str
    account: AccountIdentity
    token: bytes  # the account's delivery token
    device_id: int
    device_name: str
    log_key: bytes
    log_head: bytes | None = None  # the newest head the provisioning device had checked

    def __repr__(self) -> str:
        return f"Setup(username={self.username!r}, device_id={self.device_id})"


def check_device_name(name: str) -> None:
    if not name.isascii() or not name.isprintable() or not 1 <= len(name) <= 32:
        raise ValueError("a device name is 1 to 32 printable ASCII characters")


async def fetch_server_key(anonymous: RelayTransport) -> bytes:
    doc = await anonymous.request("GET", "/v1/certificate/server", signed=False)
    server_key = unb64(doc.get("public_key") if isinstance(doc, dict) else None)
    VerifyKey.from_public_bytes(server_key)
    return server_key


def remove_profile(profile: Path) -> None:
    """Undo a profile whose registration failed: only the files the store made."""
    for name in PROFILE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (profile / name).unlink()
    with contextlib.suppress(OSError):
        profile.rmdir()


def _keep(
    repos: Repositories, setup: Setup, device: DeviceKeys, prekeys: InitialPrekeys, now: int
) -> None:
    repos.meta.set_many(
        {
            "server_url": setup.server_url.encode(),
            "username": setup.username.encode(),
            "account": setup.account.to_bytes(),
            "device": device.to_bytes(),
            "device_name": setup.device_name.encode(),
            "delivery_token": setup.token,
            "server_key": setup.server_key,
            "log_key": setup.log_key,
            "spk_id": b"1",
            "spk_created": str(now).encode(),
            "next_prekey_id": str(prekeys.next_id).encode(),
        }
    )
    repos.prekeys.add(prekeys.rows(), now)
    if setup.log_head is not None:
        repos.log.set_head(setup.log_head)


async def register(
    profile: Path,
    passcode: str,
    setup: Setup,
    path: str,
    body: Callable[[DeviceKeys], dict[str, Any]],
    seed: Callable[[Repositories], None] | None,
    *,
    params: KdfParams | None,
    wipe_after: int | None,
    rng: Rng,
    clock: Clock,
) -> Store:
    """Make this device's keys and prekeys, keep them in a new profile (with what
    ``seed`` writes, in the same unit), and register the device at ``path`` with
    ``body(device)`` and the prekeys; on any failure no profile is left behind."""
    check_device_name(setup.device_name)
    now = int(clock())
    device = DeviceKeys.generate(setup.account, setup.device_id, now=now, rng=rng)
    prekeys = InitialPrekeys.generate(device, now=now, rng=rng)
    kwargs: dict[str, Any] = {"rng": rng, "wipe_after": wipe_after}
    if params is not None:
        kwargs["params"] = params
    store = Store.create(profile, passcode, **kwargs)
    try:
        with store.unit() as repos:
            _keep(repos, setup, device, prekeys, now)
            if seed is not None:
                seed(repos)
        identity = Identity(device.signing_key, setup.account.account_id, setup.device_id)
        async with Transport(setup.server_url, identity, clock=clock, rng=rng) as transport:
            answer = await transport.request("POST", path, body=body(device) | prekeys.upload())
        if not isinstance(answer, dict):
            raise ServerError(0, "bad_response", "registration was not confirmed")
        with store.unit() as repos:
            repos.meta.set("registered", b"1")
    except BaseException:
        store.close()
        remove_profile(profile)
        raise
    return store


async def create_account(
    profile: Path,
    passcode: str,
    *,
    server_url: str,
    username: str,
    device_name: str,
    params: KdfParams | None,
    wipe_after: int | None,
    invite: str | None = None,
    rng: Rng,
    clock: Clock,
) -> Store:
    """Make an account's keys and register ``username`` with this first device (with the
    operator's ``invite`` code, if the server registers by invitation)."""
    async with Transport(server_url, clock=clock, rng=rng) as anonymous:
        server_key = await fetch_server_key(anonymous)
        log_key = await fetch_log_key(anonymous.request)
    account = AccountIdentity.generate(rng)
    token = rng(32)

    def body(device: DeviceKeys) -> dict[str, Any]:
        return {
            "username": username,
            "account_key": b64(account.public_key().public_bytes_raw()),
            "certificate": b64(device.certificate.encode()),
            "delivery_token": b64(token),
        } | ({} if invite is None else {"invite": invite})

    setup = Setup(server_url, server_key, username, account, token, 1, device_name, log_key)
    return await register(
        profile,
        passcode,
        setup,
        "/v1/accounts",
        body,
        None,
        params=params,
        wipe_after=wipe_after,
        rng=rng,
        clock=clock,
    )
