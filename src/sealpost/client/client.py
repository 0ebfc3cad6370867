"""The client: one profile (a device of an account) talking to one relay.

A bot in ten lines::

    import asyncio
    from sealpost.client import Client

    async def main() -> None:
        async with await Client.open("./bot-profile", "passcode") as bot:
            async for event in bot.events():
                if isinstance(event, MessageReceived):
                    await bot.send(event.message.peer, "you said: " + event.message.text)

    asyncio.run(main())

How it keeps its promises:

- **Transactions.** Every ratchet step is committed to the local store in the same
  transaction as what it produced or consumed: an outgoing message is stored, with its
  envelopes in the outbox, before anything goes to the server; an incoming one is stored,
  with its session and the server's queue id, before it is acknowledged. So a crash never
  reuses a message key (a step is either committed or was never sent) and never loses an
  acknowledged message. The outbox is sent again after a crash; receivers drop duplicates
  by message id.
- **Batching.** Concurrent :meth:`Client.send` calls and queued pushes are processed in
  batches with one commit (one fsync) each, the client's own group commit.
- **Whom it encrypts to.** Only devices whose certificates are signed by the contact's
  account key and that a lookup checked against the key-transparency log holds, whatever
  the server lists, and whichever path they arrive by: a device or account key first seen
  in an incoming message is accepted only once the sender's logged entry holds it (else
  the message is dropped with a ``directory_mismatch`` alarm). A contact's account key is
  pinned at first contact; a change is an event and a warning, and for a verified contact
  a refusal to send (:class:`UntrustedContact`) until the user verifies again.
- **One message never jams the inbox** (:mod:`sealpost.client.inbox`): a message that
  fails for a reason of its own is dropped and acknowledged alone.
- **One process per profile** (:mod:`sealpost.client.profilelock`).
- **Sealed sender.** Messages go out on the anonymous ``/v1/sealed`` socket with the
  recipient's delivery token (learned from its messages) or, for a first message, without
  one (the recipient's server must accept sealed messages from anyone). A new sender's
  claimed username is checked against the server's directory with an unauthenticated
  lookup before it is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from sealpost._errors import ProtocolError
from sealpost.client import saved_files
from sealpost.client.context import ClientContext
from sealpost.client.errors import (
    MAX_SEND_TEXT,
    ClientError,
    LinkRefused,
    MessageTooLarge,
    NotRegistered,
    ServerError,
    ServerUnavailable,
    TransparencyFailure,
    UnknownContact,
)
from sealpost.client.futures import future as _future
from sealpost.client.groupkeys import (
    GROUP_SEALED_PREFIX,
    MULTI_SEALED_PREFIX,
    group_info,
)
from sealpost.client.inbox import BatchMark, must_retry
from sealpost.client.paths import api_path
from sealpost.client.provisioning import ContactRecord, Provisioning
from sealpost.client.records import (
    Contact,
    DeviceLinked,
    DeviceRemoved,
    Event,
    GroupView,
    Message,
    MessageDeleted,
    MessageReceived,
    ReceiptReceived,
    TimerChanged,
)
from sealpost.client.relay import RelayStream, RelayTransport
from sealpost.client.rows import (
    AttachmentRow,
    BatchState,
    ContactRow,
    Envelopes,
    GroupRow,
    Incoming,
    Outgoing,
    Prepared,
)
from sealpost.client.services.attachments import Attachments
from sealpost.client.services.conversations import Conversations
from sealpost.client.services.conversations import attachment_info as _attachment_info
from sealpost.client.services.delivery import DeliveryPeers
from sealpost.client.services.devices import MAX_DEVICES, OwnDevices
from sealpost.client.services.directory import Directory, Lookup, contact_view
from sealpost.client.services.directory import (
    verified_revocations as _verified_revocations,
)
from sealpost.client.services.group_encryptor import GroupEncryptor
from sealpost.client.services.group_receive import GroupReceiver
from sealpost.client.services.groups import GroupService
from sealpost.client.services.monitoring import Monitoring, fetch_log_key
from sealpost.client.services.pairwise import PairwiseEncryptor, SessionCache
from sealpost.client.services.prekeys import PREKEY_BATCH, Prekeys, Upkeep
from sealpost.client.services.search import Search, SearchHit
from sealpost.client.services.sending import Sending, SendPeers
from sealpost.client.services.transparency import KeyTransparency
from sealpost.client.store import LOCK_TIMEOUT, PROFILE_FILES, KdfParams, Store
from sealpost.client.store.alarms import Alarm
from sealpost.client.transport import (
    Identity,
    Push,
    Transport,
    b64,
    unb64,
)
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng, system_rng
from sealpost.protocol import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyKind,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyMessage,
    Session,
    SessionRecord,
    SignedPreKeyPair,
    unseal,
)
from sealpost.protocol.content import (
    DEVICE_LINKED,
    GROUP_ID_LEN,
    MAX_RECEIPT_IDS,
    MAX_TIMER,
    Content,
    DeleteContent,
    DeviceNotice,
    GroupStateRequest,
    GroupUpdateContent,
    ReceiptContent,
    RevocationNotice,
    SenderKeyContent,
    SentTranscript,
    TextContent,
    TimerContent,
    decode_content,
    decode_content_with_gossip,
    decode_unpadded,
)
from sealpost.protocol.errors import InvalidMessage, UnknownPreKey
from sealpost.protocol.linking import (
    LinkCode,
    LinkSecrets,
    confirmation_code,
    open_provisioning,
    seal_provisioning,
)
from sealpost.protocol.wire import DeviceCertificate, SenderCertificate

__all__ = ["Client"]

log = logging.getLogger("sealpost.client")

BATCH = 256  # sends or pushes handled in one transaction
RECEIPT_DELAY = 0.2  # seconds receipts wait to be sent together
BACKLOG_TIMEOUT = 30.0  # how long the server may take to push what was queued


def _now_ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


def _int(value: bytes | None, default: int = 0) -> int:
    return default if value is None else int(value.decode())


class Client:
    """A profile, unlocked. Create with :meth:`create` or :meth:`open`; close when done."""

    def __init__(
        self,
        store: Store,
        *,
        rng: Rng = system_rng,
        clock: Callable[[], float] = time.time,
        transport: RelayTransport | None = None,
    ) -> None:
        """``transport``: the relay to use (by default a :class:`Transport` to the
        profile's server, acting as this device); see :mod:`sealpost.client.relay`."""
        self._store = store
        self._rng = rng
        self._clock = clock
        url = store.get_meta("server_url")
        account = store.get_meta("account")
        device = store.get_meta("device")
        if url is None or account is None or device is None:
            raise NotRegistered("this profile has no account")
        self.server_url = url.decode()
        self.username = (store.get_meta("username") or b"").decode()
        self._account = AccountIdentity.from_bytes(account)
        self._device = DeviceKeys.from_bytes(device)
        self._token = store.get_meta("delivery_token") or b""
        server_key = store.get_meta("server_key") or b""
        self._server_key = VerifyKey.from_public_bytes(server_key)
        self._transport: RelayTransport = transport or Transport(
            self.server_url,
            Identity(self._device.signing_key, self._account.account_id, self._device.device_id),
            clock=clock,
            rng=rng,
        )
        self._ctx = ClientContext(
            store=store,
            transport=self._transport,
            account=self._account,
            device=self._device,
            username=self.username,
            server_url=self.server_url,
            server_key=self._server_key,
            delivery_token=self._token,
            clock=clock,
            rng=rng,
        )
        self._sessions: SessionCache = {}
        self._trust = Directory(
            self._ctx, transparency=self._transparency, forget_sessions=self._drop_sessions
        )
        self._conversations = Conversations(
            self._ctx, self._trust, group_by_name=self._group_by_name
        )
        self._stream: RelayStream | None = None
        self._encryptor = PairwiseEncryptor(self._ctx, self._sessions)
        self._sending = Sending(
            self._ctx,
            self._encryptor,
            SendPeers(
                resolve=self._resolve,
                own_row=self._own_row,
                gossip=self._gossip,
                prepare_group=self._prepare_group,
                forget_group_chains=self._own_chains_clear,
                emit=self._ctx.events.emit,
            ),
            DeliveryPeers(
                resolve=lambda name, refresh: self._resolve(name, refresh=refresh),
                contact_by_id=self._contact_by_id,
                refresh_own_devices=self.refresh_devices,
                name_of=self._name_of,
                group_name=self._group_name,
            ),
        )
        self._queue = self._sending.queue  # for callers in other sections
        self._lock = self._ctx.lock
        self._receipts_due: dict[bytes, list[bytes]] = {}
        self._prekeys_used = 0
        self._delivering = self._sending.delivery.delivering  # for callers in other sections
        self._verified_senders: set[bytes] = set()
        self._receipt_task: asyncio.Task[None] | None = None
        self._monitoring = Monitoring(
            self._ctx,
            contacts=lambda: self._contact_cache().values(),
            lookup=partial(self._resolve, refresh=True),
        )
        self._devices = OwnDevices(
            self._ctx,
            self._monitoring,
            enqueue=self._enqueue,
            contacts=lambda: self._contact_cache().values(),
            forget_session=self._drop_sessions,
        )
        self._prekeys = Prekeys(self._ctx)
        self._upkeeper = Upkeep(self._ctx, self._prekeys, self._monitoring)
        self._attachments = Attachments(self._ctx)
        self._groups = GroupService(
            self._ctx,
            self._attachments,
            resolve=self._trust.resolve,
            name_of=self._conversations.name_of,
            timer=self._conversations.timer_of,
            own_row=self._own_row,
            enqueue=self._sending.requeue,
            spawn=self._spawn,
        )
        self._group_encryptor = GroupEncryptor(
            self._ctx,
            self._groups,
            resolve=self._trust.resolve,
            contact_by_id=self._trust.by_id,
            pairwise=self._encryptor.encrypt,
            transcript=self._sending.transcript,
            gossip=self._gossip,
        )
        self._group_receiver = GroupReceiver(
            self._ctx,
            self._groups,
            self._attachments,
            verified_senders=self._verified_senders,
            new_contact=self._new_contact,
            absorb_conversation=self._absorb_conversation,
            transparency=self._monitoring.transparency,
        )
        self._own_chains = self._groups.chains.held  # delegate: this device's sender keys

    def __repr__(self) -> str:
        return f"Client(username={self.username!r}, device={self._device.device_id})"

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def create(
        cls,
        profile: Path | str,
        passcode: str,
        *,
        server_url: str,
        username: str,
        device_name: str = "primary",
        params: KdfParams | None = None,
        wipe_after: int | None = None,
        invite: str | None = None,
        rng: Rng = system_rng,
        clock: Callable[[], float] = time.time,
    ) -> Client:
        """Make keys, register ``username`` on the server (with the operator's ``invite``
        code, if the server registers by invitation), and keep it all in a new profile.
        If the server refuses, no profile is left behind."""
        server_url = server_url.rstrip("/")
        async with Transport(server_url, clock=clock, rng=rng) as anonymous:
            server_key = await _fetch_server_key(anonymous)
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

        return await cls._setup(
            Path(profile),
            passcode,
            _Setup(server_url, server_key, username, account, token, 1, device_name, log_key),
            "/v1/accounts",
            body,
            None,
            params=params,
            wipe_after=wipe_after,
            rng=rng,
            clock=clock,
        )

    @classmethod
    async def link_new(
        cls,
        profile: Path | str,
        passcode: str,
        *,
        server_url: str,
        device_name: str,
        show: Callable[[str, str], None],
        timeout: float = 600.0,
        params: KdfParams | None = None,
        wipe_after: int | None = None,
        rng: Rng = system_rng,
        clock: Callable[[], float] = time.time,
    ) -> Client:
        """Become a new device of an existing account: ``show(link code, confirmation
        code)`` displays the code to scan (or paste into ``sealpost link accept``) on a
        device of the account; once that device's user confirms, this one receives the
        account key, contacts and groups, registers, and tells the other devices."""
        profile = Path(profile)
        if Store.exists(profile):
            raise ClientError(f"a profile already exists in {profile}")
        server_url = server_url.rstrip("/")
        secrets = LinkSecrets.generate(rng)
        async with Transport(server_url, clock=clock, rng=rng) as anonymous:
            server_key = await _fetch_server_key(anonymous)
            channel = await anonymous.open_link(secrets.kem_public())
            try:
                code = secrets.code(channel.channel, device_name)
                show(code.to_text(), confirmation_code(code, secrets.kem_public()))
                message = await channel.provisioning(timeout)
            finally:
                await channel.close()
            try:
                payload = Provisioning.from_bytes(open_provisioning(message, secrets, code))
            except ProtocolError:
                raise LinkRefused("the provisioning message does not open") from None
            if payload.server_key != server_key:
                raise LinkRefused("the provisioning names another server key")
            log_key = payload.log_key or await fetch_log_key(anonymous.request)
            # the account key must be the one the directory has for the account
            doc = await anonymous.request(
                "GET", api_path("accounts", payload.username), signed=False
            )
        account = payload.account
        try:
            listed_id = bytes.fromhex(doc["account_id"])
            listed_key = unb64(doc["account_key"])
        except (KeyError, TypeError, ValueError):
            raise ServerError(0, "bad_response", "malformed account lookup") from None
        if listed_id != account.account_id or listed_key != account.public_key().public_bytes_raw():
            raise LinkRefused("the provisioned account is not the directory's")

        def body(device: DeviceKeys) -> dict[str, Any]:
            return {"certificate": b64(device.certificate.encode())}

        def seed(conn: Any) -> None:
            now = int(clock())
            for c in payload.contacts:
                conn.execute(
                    "INSERT OR IGNORE INTO contacts (account_id, username, account_key, "
                    "verified, delivery_token, added) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        c.account_id,
                        c.username,
                        c.account_key,
                        int(c.verified),
                        c.delivery_token,
                        now,
                    ),
                )
            for state in payload.groups:
                _store_group_state(conn, state, now)
            for peer, seconds in payload.timers.items():
                _set_timer(conn, peer, seconds)
            for device_id, name in payload.devices.items():
                if device_id != payload.device_id:
                    conn.execute(
                        "INSERT OR IGNORE INTO own_devices (device_id, certificate, name, "
                        "added) VALUES (?, NULL, ?, ?)",
                        (device_id, name, now),
                    )

        client = await cls._setup(
            profile,
            passcode,
            _Setup(
                server_url,
                server_key,
                payload.username,
                account,
                payload.delivery_token,
                payload.device_id,
                device_name,
                log_key,
                payload.log_head,
            ),
            "/v1/devices",
            body,
            seed,
            params=params,
            wipe_after=wipe_after,
            rng=rng,
            clock=clock,
        )
        try:
            await client.refresh_devices()
            await client._notify_own(
                DeviceNotice(_now_ms(clock), DEVICE_LINKED, payload.device_id, device_name)
            )
        except ClientError as exc:
            log.warning("could not tell the other devices about this one: %s", type(exc).__name__)
        return client

    @classmethod
    async def _setup(
        cls,
        profile: Path,
        passcode: str,
        setup: _Setup,
        path: str,
        body: Callable[[DeviceKeys], dict[str, Any]],
        seed: Callable[[Any], None] | None,
        *,
        params: KdfParams | None,
        wipe_after: int | None,
        rng: Rng,
        clock: Callable[[], float],
    ) -> Client:
        """Make this device's keys and prekeys, keep them in a new profile, and register
        the device at ``path``; on any failure no profile is left behind."""
        _check_device_name(setup.device_name)
        now = int(clock())
        device = DeviceKeys.generate(setup.account, setup.device_id, now=now, rng=rng)
        spk = device.new_signed_prekey(1, now=now, rng=rng)
        kem_lr = device.new_kem_prekey(1, KemPreKeyKind.LAST_RESORT, now=now, rng=rng)
        one_time = [OneTimePreKeyPair.generate(i, rng=rng) for i in range(1, PREKEY_BATCH + 1)]
        kem_one_time = [
            device.new_kem_prekey(i, KemPreKeyKind.ONE_TIME, now=now, rng=rng)
            for i in range(2, PREKEY_BATCH + 2)
        ]
        kwargs: dict[str, Any] = {"rng": rng, "wipe_after": wipe_after}
        if params is not None:
            kwargs["params"] = params
        store = Store.create(profile, passcode, **kwargs)
        try:
            with store.transaction() as conn:
                for key, value in {
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
                    "next_prekey_id": str(PREKEY_BATCH + 2).encode(),
                }.items():
                    store.set_meta(conn, key, value)
                _insert_prekey(conn, "spk", spk.key_id, spk.to_bytes(), now)
                _insert_prekey(conn, "kem_lr", kem_lr.key_id, kem_lr.to_bytes(), now)
                for otpk in one_time:
                    _insert_prekey(conn, "otpk", otpk.key_id, otpk.to_bytes(), now)
                for kem in kem_one_time:
                    _insert_prekey(conn, "kem", kem.key_id, kem.to_bytes(), now)
                if setup.log_head is not None:
                    store.set_meta(conn, "log_head", setup.log_head)
                if seed is not None:
                    seed(conn)
            request = body(device) | {
                "signed_prekey": b64(spk.public.encode()),
                "kem_last_resort": b64(kem_lr.public.encode()),
                "one_time_prekeys": [b64(k.public.encode()) for k in one_time],
                "kem_one_time_prekeys": [b64(k.public.encode()) for k in kem_one_time],
            }
            identity = Identity(device.signing_key, setup.account.account_id, setup.device_id)
            async with Transport(setup.server_url, identity, clock=clock, rng=rng) as transport:
                answer = await transport.request("POST", path, body=request)
            if not isinstance(answer, dict):
                raise ServerError(0, "bad_response", "registration was not confirmed")
            with store.transaction() as conn:
                store.set_meta(conn, "registered", b"1")
        except BaseException:
            store.close()
            _remove_profile(profile)
            raise
        return cls(store, rng=rng, clock=clock)

    @classmethod
    async def open(
        cls,
        profile: Path | str,
        passcode: str,
        *,
        rng: Rng = system_rng,
        clock: Callable[[], float] = time.time,
        lock_timeout: float = LOCK_TIMEOUT,
        read_only: bool = False,
        transport: RelayTransport | None = None,
    ) -> Client:
        """Unlock a profile. One process at a time holds it, from here to :meth:`close`:
        another process's open waits up to ``lock_timeout`` seconds for it, then raises
        :class:`~sealpost.client.store.ProfileBusy` naming this process. ``read_only``
        (for commands that only show what is stored) writes nothing that can be skipped
        and so also opens a profile on a read-only file system; anything that would
        write raises ``ReadOnlyProfile``. ``transport``: see :meth:`__init__`."""
        store = await asyncio.to_thread(
            Store.open, Path(profile), passcode, lock_timeout=lock_timeout, read_only=read_only
        )
        try:
            return cls(store, rng=rng, clock=clock, transport=transport)
        except BaseException:
            store.close()
            raise

    async def close(self) -> None:
        if self._receipt_task is not None and not self._receipt_task.done():
            self._receipt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receipt_task
            with contextlib.suppress(ClientError):
                await self._flush_receipts_and_prekeys()
        await self._sending.close()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.close()
        self._stream = None
        await self._transport.close()
        self._store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ facts

    @property
    def account_id(self) -> bytes:
        return self._account.account_id

    @property
    def device_id(self) -> int:
        return self._device.device_id

    @property
    def account_key(self) -> bytes:
        return self._account.public_key().public_bytes_raw()

    @property
    def store(self) -> Store:
        return self._store

    def whoami(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "server": self.server_url,
            "account_id": self.account_id.hex(),
            "device_id": self.device_id,
        }

    # ------------------------------------------------------------------ contacts
    # (services/directory.py; the private delegates serve the other sections)

    def _contact_cache(self) -> dict[bytes, ContactRow]:
        return self._trust.cache()  # delegate

    def _contacts_changed(self) -> None:
        self._trust.changed()  # delegate

    def _contact_by_name(self, name: str) -> ContactRow | None:
        return self._trust.by_name(name)  # delegate

    def _contact_by_id(self, account_id: bytes) -> ContactRow | None:
        return self._trust.by_id(account_id)  # delegate

    async def _directory(self, name: str) -> Lookup:
        return await self._trust.lookup(name)  # delegate

    async def _resolve(self, name: str, *, refresh: bool = False) -> ContactRow:
        return await self._trust.resolve(name, refresh=refresh)  # delegate

    def _note_key_change(
        self, conn: Any, contact: ContactRow, new_key: bytes, *, old_account: bytes | None = None
    ) -> None:
        # delegate; ``conn`` is the open transaction's, which the repositories share
        self._trust.note_key_change(self._store.repos(), contact, new_key, old_account=old_account)

    def _drop_sessions(self, account_id: bytes, device_id: int | None) -> None:
        """Drop the cached sessions with ``account_id``'s device (None: all of them)."""
        if device_id is not None:
            self._sessions.pop((account_id, device_id), None)
            return
        for address in [a for a in self._sessions if a[0] == account_id]:
            del self._sessions[address]

    def contacts(self) -> list[Contact]:
        return self._trust.contacts()

    def safety_number(self, name: str) -> str:
        return self._trust.safety_number(name)

    def safety_qr_payload(self, name: str) -> bytes:
        """What the QR code beside the safety number encodes (scanned to compare)."""
        return self._trust.safety_qr_payload(name)

    async def lookup(self, name: str) -> Contact:
        """Fetch ``name`` from the server's directory (pinning its key on first use)."""
        return contact_view(await self._trust.resolve(name, refresh=True))

    def verify(self, name: str) -> None:
        """Mark ``name``'s current safety number as checked by the user."""
        self._trust.verify(name)

    def acknowledge_key_change(self, name: str) -> None:
        """Dismiss the warning for an unverified contact's new key (shown once)."""
        self._trust.acknowledge_key_change(name)

    # ------------------------------------------------------------------ conversations
    # (services/conversations.py)

    def _conversation(self, name: str) -> tuple[bytes, str, bytes | None]:
        return self._conversations.resolve(name)  # delegate

    def is_group(self, name: str) -> bool:
        """Whether ``name`` addresses a group (``#name``, or a name no contact has)."""
        return self._conversations.is_group(name)

    def _timer(self, peer: bytes) -> int:
        return self._conversations.timer_of(peer)  # delegate

    def _local_changed(self) -> None:
        """Timers or this account's device list may have changed: read them again."""
        self._conversations.timers_changed()
        self._devices.changed()

    def timer(self, name: str) -> int:
        """The disappearing-message timer of a conversation, in seconds (0: off)."""
        return self._conversations.timer(name)

    def _name_of(self, account_id: bytes) -> str:
        return self._conversations.name_of(account_id)  # delegate

    # ------------------------------------------------------------------ history

    def history(self, name: str, limit: int = 1000) -> list[Message]:
        """The last ``limit`` messages of a conversation (a contact or a group), oldest
        first; expired disappearing messages are gone."""
        return self._conversations.history(name, limit)

    def expire(self) -> int:
        """Delete the disappearing messages whose time is up (and the files saved from
        their attachments). Returns how many went."""
        return self._conversations.expire()

    def search(
        self, text: str, *, conversation: str | None = None, limit: int = 50
    ) -> list[SearchHit]:
        """Local full-text search (:mod:`sealpost.client.services.search`)."""
        contacts = {c.account_id: c.username for c in self.contacts()}
        return Search(
            self._ctx, self._conversations, groups=self.groups, contacts=lambda: contacts
        ).search(text, conversation=conversation, limit=limit)

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        name: str,
        text: str = "",
        *,
        file: Path | str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Message:
        """Encrypt ``text`` (and ``file``, uploaded first as an encrypted attachment) to
        every device of ``name`` (a contact, or a group: see :meth:`history`) and to this
        account's other devices; return once the server has stored it. Raises
        :class:`UnknownContact`, :class:`UntrustedContact` or a :class:`TransportError`;
        on any error the message is not marked sent."""
        size = len(text.encode("utf-8"))
        if size > MAX_SEND_TEXT:
            raise MessageTooLarge(size, MAX_SEND_TEXT)
        peer: bytes | None = None
        group: bytes | None = None
        try:
            peer, _, group = self._conversation(name)
        except UnknownContact:
            if name.startswith("#"):
                raise
            # a new contact: resolved by the sender loop, so that sends stay in call order
        attachment = None
        if file is not None:
            attachment = await self._upload(Path(file), progress)
        content = TextContent(
            self._rng(16),
            _now_ms(self._clock),
            self._token,
            self.username,
            text,
            group,
            None if attachment is None else attachment.pointer,
            0 if peer is None else self._timer(peer),
        )
        message = await self._enqueue(
            Outgoing(
                "" if group else name.lower(),
                content,
                _future(),
                store=True,
                group=group,
                transcript=True,
                attachment=attachment,
            )
        )
        assert message is not None
        return message

    async def set_timer(self, name: str, seconds: int) -> None:
        """Set the disappearing-message timer of a conversation (0 turns it off). Applied
        on every device of every member: messages sent after it disappear ``seconds``
        after they were sent (sender) or received (recipients)."""
        if not 0 <= seconds <= MAX_TIMER:
            raise ValueError(f"a timer is 0 to {MAX_TIMER} seconds")
        try:
            peer, _, group = self._conversation(name)
        except UnknownContact:
            if name.startswith("#"):
                raise
            peer, group = (await self._resolve(name)).account_id, None
        content = TimerContent(
            self._rng(16), _now_ms(self._clock), self._token, self.username, seconds, group
        )
        await self._enqueue(
            Outgoing(
                "" if group else name.lower(),
                content,
                _future(),
                store=False,
                group=group,
                transcript=True,
            )
        )
        with self._store.transaction() as conn:
            _set_timer(conn, peer, seconds)
        self._local_changed()

    async def delete_for_everyone(self, name: str, message_id: bytes) -> None:
        """Delete a message this account sent, here and on every recipient's devices."""
        peer, _, group = self._conversation(name)
        row = (
            self._store.read()
            .execute(
                "SELECT outgoing FROM messages WHERE message_uuid = ? AND peer = ?",
                (message_id, peer),
            )
            .fetchone()
        )
        if row is None or not row[0]:
            raise ClientError("only a message this account sent can be deleted for everyone")
        content = DeleteContent(
            self._rng(16), _now_ms(self._clock), self._token, self.username, message_id, group
        )
        await self._enqueue(
            Outgoing(
                "" if group else name.lower(),
                content,
                _future(),
                store=False,
                group=group,
                transcript=True,
            )
        )
        self._delete_messages([message_id], peer)

    def _delete_messages(self, message_ids: Sequence[bytes], peer: bytes) -> None:
        conn = self._store.read()
        paths = [
            row[0]
            for mid in message_ids
            for row in conn.execute(
                "SELECT attachment_path FROM messages WHERE message_uuid = ? AND peer = ?",
                (mid, peer),
            )
            if row[0]
        ]
        with self._store.transaction() as conn:
            conn.executemany(
                "DELETE FROM messages WHERE message_uuid = ? AND peer = ?",
                [(mid, peer) for mid in message_ids],
            )
        for path in paths:
            saved_files.remove(path)

    def _own_chains_clear(self) -> None:
        self._own_chains.clear()  # after a failed send commit: reloaded from the store

    def _group_name(self, group_id: bytes) -> str | None:
        found = self._group(group_id)
        return None if found is None else found.info.name

    # one-line delegates to the send pipeline (services/sending.py, services/delivery.py,
    # services/pairwise.py) for callers in other sections

    async def _enqueue(self, item: Outgoing) -> Message | None:
        return await self._sending.enqueue(item)  # delegate

    def _start_sender(self) -> None:
        self._sending.start()  # delegate

    def _load_sessions(self, address: tuple[bytes, int]) -> SessionRecord:
        return self._encryptor.load(address)  # delegate

    async def _pairwise(
        self, contact: ContactRow, plaintext: bytes, sender_cert: SenderCertificate
    ) -> Envelopes:
        return await self._encryptor.encrypt(contact, plaintext, sender_cert)  # delegate

    async def _transcript(
        self, item: Outgoing, contact: ContactRow | None, sender_cert: SenderCertificate
    ) -> Envelopes:
        return await self._sending.transcript(item, contact, sender_cert)  # delegate

    async def flush_outbox(self) -> int:
        """Send again what a crash left in the outbox (the same bytes: no key is reused;
        receivers drop what they already have). Returns how many sends were completed."""
        return await self._sending.delivery.flush_outbox()

    # ------------------------------------------------------------------ receiving

    async def _open_stream(self) -> RelayStream:
        if self._stream is None or self._stream.close_code is not None:
            self._stream = await self._transport.open_stream()
            self._stream.on_prekeys_low = self._prekeys_low
        return self._stream

    def _prekeys_low(self) -> None:
        """The server says the one-time prekeys run low (someone fetched bundles): refill
        a moment from now, with the receipts, not only at the next hourly upkeep."""
        self._prekeys_used += 1
        self._schedule_receipts()

    async def receive(self, wait: float = 0.0) -> list[Event]:
        """Fetch everything queued for this device (waiting up to ``wait`` seconds for at
        least one message), store it, acknowledge it; returns the events in order."""
        await self.flush_outbox()
        reused = self._stream is not None and self._stream.close_code is None
        stream = await self._open_stream()
        await self._upkeep()
        events: list[Event] = self.take_events()
        deadline = time.monotonic() + wait
        got_message = False
        # a stream already open whose backlog was all read: no new end marker will come
        drained_once = reused and stream.idle and not stream.pending_pushes()
        while True:
            if drained_once and not got_message:
                timeout = max(0.0, deadline - time.monotonic())
            else:
                timeout = BACKLOG_TIMEOUT  # the server marks the backlog's end
            first = await stream.next_push(timeout)
            if first is None:
                if stream.close_code is not None:
                    raise ServerUnavailable("the server closed the stream")
                if drained_once:
                    break
                raise ServerUnavailable("the server did not finish sending the backlog")
            if first.server_id == b"":
                drained_once = True
                if got_message or time.monotonic() >= deadline:
                    break
                continue
            batch, drained = await self._drain(stream, first)
            new = await self._process(stream, batch)
            events += new + self.take_events()
            got_message = got_message or any(not isinstance(e, ReceiptReceived) for e in new)
            if drained:
                drained_once = True
                if got_message or time.monotonic() >= deadline:
                    break
        await self._flush_receipts_and_prekeys()
        return events + self.take_events()

    @staticmethod
    async def _drain(stream: RelayStream, first: Push) -> tuple[list[Push], bool]:
        """``first`` and the pushes already arrived behind it, up to a batch or the
        backlog's end marker (``True`` if that was seen)."""
        batch = [first]
        while len(batch) < BATCH and stream.pending_pushes():
            nxt = await stream.next_push(0)
            if nxt is None:
                break
            if nxt.server_id == b"":
                return batch, True
            batch.append(nxt)
        return batch, False

    def take_events(self) -> list[Event]:
        """Events noticed outside :meth:`receive` and :meth:`events` (a key change seen
        while sending), each returned once."""
        return self._ctx.events.take()

    async def events(self) -> AsyncIterator[Event]:
        """Every event as it happens, staying connected (reconnecting with backoff)."""
        backoff = 1.0
        while True:
            try:
                await self.flush_outbox()
                stream = await self._open_stream()
                await self._upkeep()
                backoff = 1.0
                for event in self.take_events():
                    yield event
                while True:
                    wait = max(1.0, self._next_monitor - self._clock())
                    started = time.monotonic()
                    push = await stream.next_push(wait)
                    timed_out = time.monotonic() - started >= wait * 0.9
                    if push is None and timed_out and stream.close_code is None:
                        await self._upkeep()  # quiet for a while: self-monitoring is due
                        for event in self.take_events():
                            yield event
                        continue
                    if push is None:
                        raise ServerUnavailable("the server closed the stream")
                    if push.server_id == b"":
                        self._schedule_receipts()
                        continue
                    pushes, drained = await self._drain(stream, push)
                    for event in await self._process(stream, pushes):
                        yield event
                    for event in self.take_events():
                        yield event
                    if drained:
                        self._schedule_receipts()
            except ServerUnavailable:
                self._stream = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _process(self, stream: RelayStream, pushes: list[Push]) -> list[Event]:
        """Decrypt a batch, commit it in one transaction, then ack it."""
        async with self._lock:
            state = BatchState()
            processed = self._already_processed([p.server_id for p in pushes])
            try:
                for push in pushes:
                    if push.server_id in processed:  # stored before a crash, not yet acked
                        continue
                    mark = BatchMark.of(state)
                    try:
                        await self._open(push, state)
                    except Exception as exc:
                        if must_retry(exc):
                            raise  # not this message's fault: the batch waits, unacked
                        # a forged, corrupted, replayed or undecryptable message, one whose
                        # sender the log does not confirm (an alarm is up), one naming what
                        # does not exist: it alone is dropped (acked with the batch), and
                        # what it changed in the batch is undone
                        mark.restore(state)
                        log.warning("dropped an undecryptable message: %s", type(exc).__name__)
                with self._store.transaction() as conn:
                    changed = self._commit_batch(conn, state, pushes)
            except BaseException:
                # nothing was committed or acked: forget what this batch did in memory
                for address in state.sessions:
                    self._sessions.pop(address, None)
                self._contacts_changed()
                raise
            if changed:
                self._contacts_changed()
            self._local_changed()
            for address, sessions in state.sessions.items():
                self._sessions[address] = sessions
            for push in pushes:
                await stream.ack(push.server_id)
            self._receipts_due.update(
                {k: self._receipts_due.get(k, []) + v for k, v in state.reply_to.items()}
            )
            self._prekeys_used += state.prekey_messages
            self._queue_group_sends(state)
        if state.gossip:
            kt = await self._transparency()
            for head, sender in state.gossip.items():
                await kt.check_gossip(head, sender)
        return state.events

    def _already_processed(self, ids: list[bytes]) -> set[bytes]:
        conn = self._store.read()
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT server_id FROM processed WHERE server_id IN ({marks})", ids)  # noqa: S608 (placeholders only)
        return {row[0] for row in rows}

    def _batch_sessions(self, state: BatchState, address: tuple[bytes, int]) -> SessionRecord:
        if address in state.sessions:
            return state.sessions[address]
        # decrypt into a copy so a failed commit leaves the cache as stored
        copy = self._load_sessions(address).copy()
        state.sessions[address] = copy
        return copy

    async def _open(self, push: Push, state: BatchState) -> None:
        if push.body[:2] == GROUP_SEALED_PREFIX:
            await self._open_group_sealed(push, state)
            return
        if push.body[:2] == MULTI_SEALED_PREFIX:
            await self._open_group_message(push, state)
            return
        opened = unseal(
            push.body,
            self._device.identity_key,
            server_key=self._server_key,
            now=int(self._clock()),
            verified=self._verified_senders,
        )
        sender = opened.sender
        address = (sender.account_id, sender.device_id)
        own = sender.account_id == self.account_id
        if own and sender.device_id == self.device_id:
            raise UnknownContact("a message claiming to come from this very device")
        contact = (
            self._own_row(state)
            if own
            else state.new_contacts.get(sender.account_id) or self._contact_by_id(sender.account_id)
        )
        message = opened.message
        sessions = self._batch_sessions(state, address)
        plaintext: bytes | None = None
        if isinstance(message, PreKeyMessage):
            plaintext = sessions.decrypt_prekey(message)
            if plaintext is None:
                account_key = message.certificate.account_key
                if self._is_revoked(sender.account_id, sender.device_id):
                    raise UnknownContact("a message from a revoked device")
                if own and account_key != self.account_key:
                    raise UnknownContact("a device of this account not certified by its key")
                session, plaintext = self._respond(message, state)
                state.prekey_messages += 1
                if own:
                    state.own_devices[message.certificate.device_id] = message.certificate
                    assert contact is not None
                    contact.devices[message.certificate.device_id] = message.certificate
                else:
                    contact = await self._contact_for_new_session(
                        contact,
                        sender.account_id,
                        account_key,
                        message.certificate,
                        plaintext,
                        state,
                    )
                # only now: a session with a device the log did not confirm is not kept
                sessions.promote(session)
        else:
            plaintext = sessions.decrypt(message, check=opened.check_session)
        if contact is None:
            raise UnknownContact("a message from an unknown sender without a first message")
        content, gossip = decode_content_with_gossip(plaintext)
        if gossip is not None:
            state.gossip.setdefault(gossip, contact.username)
        if own:
            await self._absorb_own(content, sender.device_id, state)
        else:
            await self._absorb(content, contact, sender.device_id, state)

    def _is_revoked(self, account_id: bytes, device_id: int) -> bool:
        row = self._store.read().execute(
            "SELECT 1 FROM revoked_devices WHERE account_id = ? AND device_id = ?",
            (account_id, device_id),
        )
        return row.fetchone() is not None

    def _respond(self, message: PreKeyMessage, state: BatchState) -> tuple[Session, bytes]:
        conn = self._store.read()

        def load(kind: str, key_id: int | None) -> bytes | None:
            if key_id is None or (kind, key_id) in state.used_prekeys:
                return None
            row = conn.execute(
                "SELECT record FROM prekeys WHERE kind = ? AND key_id = ?", (kind, key_id)
            ).fetchone()
            return None if row is None else bytes(row[0])

        spk_raw = load("spk", message.signed_prekey_id)
        if spk_raw is None:
            raise UnknownPreKey("signed prekey")
        otpk = None
        if message.one_time_prekey_id is not None:
            raw = load("otpk", message.one_time_prekey_id)
            if raw is None:
                raise UnknownPreKey("one-time prekey")
            otpk = OneTimePreKeyPair.from_bytes(raw)
        kem = None
        if message.kem_prekey_id is not None:
            kind = "kem" if message.kem_prekey_kind == KemPreKeyKind.ONE_TIME else "kem_lr"
            raw = load(kind, message.kem_prekey_id)
            if raw is None:
                raise UnknownPreKey("ML-KEM prekey")
            kem = KemPreKeyPair.from_bytes(raw)
            if kem.public.kind != message.kem_prekey_kind:
                raise UnknownPreKey("ML-KEM prekey of another kind")
        session, plaintext = Session.respond(
            self._device,
            message,
            signed_prekey=SignedPreKeyPair.from_bytes(spk_raw),
            one_time_prekey=otpk,
            kem_prekey=kem,
        )
        if otpk is not None:
            state.used_prekeys.add(("otpk", otpk.key_id))
        if kem is not None and kem.public.kind == KemPreKeyKind.ONE_TIME:
            state.used_prekeys.add(("kem", kem.key_id))
        return session, plaintext

    async def _contact_for_new_session(
        self,
        contact: ContactRow | None,
        account_id: bytes,
        account_key: bytes,
        certificate: DeviceCertificate,
        plaintext: bytes,
        state: BatchState,
    ) -> ContactRow:
        """The contact a new session (a PreKeyMessage) is with. Its certificate verified
        under the account key it names (:meth:`Session.respond` checked that), which proves
        nothing by itself: the server signs sender certificates for anything. So a device
        or account key of a known contact that is not the pinned one is accepted only if
        the contact's directory entry, checked against the log, holds exactly it (see
        :meth:`_confirm_in_log`); the contact's devices become the logged set."""
        if contact is not None:
            pinned_key = state.key_changes.get(account_id, contact.account_key)
            pinned = state.device_certs.get(account_id, contact.devices)
            held = pinned.get(certificate.device_id)
            if pinned_key == account_key and held is not None and _same(held, certificate):
                return contact
            devices = await self._confirm_in_log(contact.username, account_id, certificate)
            if contact.account_key != account_key:
                state.key_changes[account_id] = account_key
            state.device_certs[account_id] = devices
            return contact
        # A sender we do not know: its claimed name must be its name in the directory.
        # A fellow group member (a receipt for a group message, say) is named by the group.
        content = decode_content(plaintext)
        claimed = getattr(content, "sender_name", None)
        if not isinstance(claimed, str):
            claimed = self._member_name(account_id, state)
        if claimed is None:
            raise UnknownContact("a first message that does not say who sends it")
        return await self._new_contact(claimed, account_id, account_key, state, certificate)

    async def _confirm_in_log(
        self, username: str, account_id: bytes, certificate: DeviceCertificate
    ) -> dict[int, DeviceCertificate]:
        """The devices the log holds for ``username``, if they include ``certificate``
        under the account key it names; else a ``directory_mismatch`` alarm and
        :class:`TransparencyFailure` (the message is dropped). A lookup that could not be
        made (the server unreachable) raises :class:`ServerUnavailable`: the batch waits."""
        try:
            real_id, _, real_key, devices = await self._directory(username)
        except UnknownContact:
            await self._log_refuses(username, "a message")
        if (
            real_id != account_id
            or real_key != certificate.account_key
            or not _same(devices.get(certificate.device_id), certificate)
        ):
            await self._log_refuses(username, "a message")
        return devices

    async def _log_refuses(self, username: str, what: str) -> NoReturn:
        detail = (
            f"{what} from {username} came from a device or identity key that the log does "
            f"not hold for {username}; it was dropped"
        )
        (await self._transparency()).alarm("directory_mismatch", username, detail)
        raise TransparencyFailure("directory_mismatch", detail)

    async def _new_contact(
        self,
        name: str,
        account_id: bytes,
        account_key: bytes | None,
        state: BatchState,
        certificate: DeviceCertificate | None = None,
    ) -> ContactRow:
        """A contact first seen in a message: ``name`` must be that account's name in the
        directory (and its key ``account_key``, when the message showed one)."""
        known = state.new_contacts.get(account_id) or self._contact_by_id(account_id)
        if known is not None:
            return known
        real_id, username, real_key, devices = await self._directory(name)
        if real_id != account_id or (account_key is not None and real_key != account_key):
            raise UnknownContact("a sender whose claimed name is another account's")
        if certificate is not None and not _same(devices.get(certificate.device_id), certificate):
            await self._log_refuses(username, "a first message")
        if self._contact_by_name(username) is not None:
            # a contact we know by this name, now another account: a key change
            return await self._resolve(username, refresh=True)
        row = ContactRow(account_id, username, real_key, False, False, None, devices)
        state.new_contacts[account_id] = row
        return row

    async def _absorb(
        self,
        content: Content,
        contact: ContactRow,
        device_id: int,
        state: BatchState,
    ) -> None:
        """A pairwise message from another account."""
        token = getattr(content, "delivery_token", None)
        if isinstance(token, bytes):
            state.tokens[contact.account_id] = token
        if isinstance(content, TextContent | TimerContent | DeleteContent):
            if content.group_id is not None:
                raise InvalidMessage()  # group messages come sender-key encrypted only
            self._absorb_conversation(content, contact.account_id, contact.account_id, False, state)
            if isinstance(content, TextContent) and content.message_id in state.seen_ids:
                state.reply_to.setdefault(contact.account_id, []).append(content.message_id)
        elif isinstance(content, ReceiptContent):
            state.receipts.append((contact.account_id, content))
            state.events.append(ReceiptReceived(contact.username, content.message_ids))
        elif isinstance(content, GroupUpdateContent):
            await self._absorb_group_update(content, contact, device_id, state)
        elif isinstance(content, GroupStateRequest):
            self._answer_group_request(content, contact, state)
        elif isinstance(content, SenderKeyContent):
            self._absorb_sender_key(content.distribution, contact.account_id, device_id, state)
        elif isinstance(content, RevocationNotice):
            self._absorb_revocation(content, contact, state)
        else:  # transcripts and device notices come only from this account's devices
            raise InvalidMessage()

    def _absorb_revocation(
        self, notice: RevocationNotice, contact: ContactRow, state: BatchState
    ) -> None:
        """A contact's own signed revocation of one of its devices: checked against the
        account key pinned for it, the device is dropped at once and never encrypted to
        again, whatever the server lists (or replays) for the contact."""
        revoked = _verified_revocations(
            contact.account_id, contact.account_key, [b64(notice.revocation)]
        )
        account_id = contact.account_id
        for device_id, raw in revoked.items():
            devices = state.device_certs.setdefault(account_id, dict(contact.devices))
            devices.pop(device_id, None)
            contact.devices.pop(device_id, None)
            state.writes.append(
                partial(
                    self._record_revocation,
                    account_id=account_id,
                    device_id=device_id,
                    revocation=raw,
                )
            )
            log.info("a contact revoked one of its devices")

    async def _absorb_own(self, content: Content, device_id: int, state: BatchState) -> None:
        """A message from another device of this account."""
        if isinstance(content, SentTranscript):
            inner = decode_unpadded(content.content)
            if not isinstance(inner, TextContent | TimerContent | DeleteContent):
                raise InvalidMessage()
            if content.group_id is not None:
                if inner.group_id != content.group_id or self._group(content.group_id) is None:
                    raise UnknownContact("a transcript for an unknown group")
                peer = content.group_id
            else:
                assert content.account_id is not None and content.name is not None
                if inner.group_id is not None:
                    raise InvalidMessage()
                contact = await self._new_contact(content.name, content.account_id, None, state)
                peer = contact.account_id
            self._absorb_conversation(inner, peer, self.account_id, True, state)
        elif isinstance(content, DeviceNotice):
            name = content.device_name
            if content.event == DEVICE_LINKED:
                state.events.append(DeviceLinked(content.device_id, name))
                state.writes.append(
                    lambda conn: conn.execute(
                        "INSERT INTO own_devices (device_id, certificate, name, added) "
                        "VALUES (?, NULL, ?, ?) ON CONFLICT (device_id) DO UPDATE SET name = ?",
                        (content.device_id, name, int(self._clock()), name),
                    )
                )
            else:
                state.events.append(DeviceRemoved(content.device_id, name))
                state.writes.append(lambda conn: self._forget_own_device(conn, content.device_id))
        elif isinstance(content, GroupUpdateContent):
            await self._absorb_group_update(content, self._own_row(state), device_id, state)
        elif isinstance(content, SenderKeyContent):
            self._absorb_sender_key(content.distribution, self.account_id, device_id, state)
        else:
            raise InvalidMessage()

    def _absorb_conversation(
        self,
        content: TextContent | TimerContent | DeleteContent,
        peer: bytes,
        author: bytes,
        outgoing: bool,
        state: BatchState,
    ) -> None:
        """A text, timer or deletion in the conversation ``peer`` (account or group id),
        written by ``author``."""
        if content.message_id in state.seen_ids:
            return
        state.seen_ids.add(content.message_id)
        display = self._conversation_name(peer, state)
        author_name = self._conversation_name(author, state) if author != peer else display
        group = peer if len(peer) == GROUP_ID_LEN else None
        if isinstance(content, TextContent):
            event = None
            if not outgoing:
                event = MessageReceived(
                    Message(
                        content.message_id,
                        display,
                        False,
                        content.text,
                        content.sent_at,
                        _now_ms(self._clock),
                        "received",
                        group,
                        author_name,
                        _attachment_info(content.attachment, None),
                        _now_ms(self._clock) + content.expire_timer * 1000
                        if content.expire_timer
                        else None,
                    )
                )
            state.messages.append(
                Incoming(
                    content.message_id,
                    peer,
                    author,
                    outgoing,
                    content.text,
                    content.sent_at,
                    content.expire_timer,
                    content.attachment,
                    event,
                )
            )
            if event is not None:
                state.events.append(event)
            # the text's own timer says when this message disappears; the conversation's
            # timer changes only by an explicit TimerContent, with its notice (issue 13.6)
        elif isinstance(content, TimerContent):
            seconds = content.expire_timer
            state.writes.append(lambda conn: _set_timer(conn, peer, seconds))
            state.events.append(TimerChanged(display, group, seconds, author_name))
        else:
            target = content.target
            state.writes.append(lambda conn: _delete_authored(conn, target, peer, author))
            state.events.append(MessageDeleted(display, target, author_name))

    def _conversation_name(self, peer: bytes, state: BatchState) -> str:
        if len(peer) == GROUP_ID_LEN:
            group = state.groups.get(peer) or self._group(peer)  # new in this batch, too
            return group.info.name if group is not None else peer.hex()[:12]
        row = state.new_contacts.get(peer)
        return row.username if row is not None else self._name_of(peer)

    def _commit_batch(self, conn: Any, state: BatchState, pushes: list[Push]) -> bool:
        """Write a receive batch; returns whether contacts changed."""
        now = int(self._clock())
        now_ms = _now_ms(self._clock)
        for row in state.new_contacts.values():
            conn.execute(
                "INSERT OR IGNORE INTO contacts (account_id, username, account_key, added) "
                "VALUES (?, ?, ?, ?)",
                (row.account_id, row.username, row.account_key, now),
            )
            _replace_devices(conn, row.account_id, row.devices)
        for account_id, new_key in state.key_changes.items():
            contact = self._contact_by_id(account_id)
            if contact is not None:
                self._note_key_change(conn, contact, new_key)
        for account_id, certs in state.device_certs.items():
            _replace_devices(conn, account_id, certs)
        for device_id, cert in state.own_devices.items():
            conn.execute(
                "INSERT INTO own_devices (device_id, certificate, name, added) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET certificate = ?",
                (device_id, cert.encode(), f"device {device_id}", now, cert.encode()),
            )
        for (account_id, device_id), sessions in state.sessions.items():
            if len(sessions):
                conn.execute(
                    "INSERT OR REPLACE INTO sessions (account_id, device_id, state, updated) "
                    "VALUES (?, ?, ?, ?)",
                    (account_id, device_id, sessions.to_bytes(), now),
                )
        for kind, key_id in state.used_prekeys:
            conn.execute("DELETE FROM prekeys WHERE kind = ? AND key_id = ?", (kind, key_id))
        changed = bool(state.new_contacts or state.key_changes or state.device_certs)
        for account_id, token in state.tokens.items():
            known = self._contact_by_id(account_id)
            if known is None or known.delivery_token != token:
                conn.execute(
                    "UPDATE contacts SET delivery_token = ? WHERE account_id = ?",
                    (token, account_id),
                )
                changed = True
        kept = []
        tombstones: set[tuple[bytes, bytes]] = set()
        if state.messages:
            marks = ",".join("?" * len(state.messages))
            tombstones = {
                (bytes(i), bytes(a))
                for i, a in conn.execute(
                    f"SELECT message_uuid, author FROM tombstones WHERE message_uuid IN ({marks})",  # noqa: S608 (placeholders only)
                    [m.message_id for m in state.messages],
                )
            }
        for m in state.messages:
            if (m.message_id, m.author) in tombstones:
                continue  # deleted for everyone before it arrived
            expires = (m.sent_at if m.outgoing else now_ms) + m.expires_in * 1000
            cursor = conn.execute(
                "INSERT OR IGNORE INTO messages (message_uuid, peer, outgoing, body, sent_at, "
                "received_at, status, author, expires_at, attachment) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    m.message_id,
                    m.peer,
                    int(m.outgoing),
                    m.text,
                    m.sent_at,
                    now_ms,
                    "sent" if m.outgoing else "received",
                    m.author,
                    expires if m.expires_in else None,
                    m.attachment,
                ),
            )
            if cursor.rowcount:
                kept.append(m.message_id)
        for write in state.writes:
            write(conn)
        for (group_id, account_id, device_id, chain_id), chain in state.sender_keys.items():
            conn.execute(
                "INSERT OR REPLACE INTO sender_keys (group_id, account_id, device_id, chain_id, "
                "state, updated, envelope_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    group_id,
                    account_id,
                    device_id,
                    chain_id,
                    chain.to_bytes(),
                    now,
                    chain.envelope_id,
                ),
            )
            # the newest two chains of a device (late messages of the one before)
            conn.execute(
                "DELETE FROM sender_keys WHERE group_id = ? AND account_id = ? AND device_id = ? "
                "AND chain_id NOT IN (SELECT chain_id FROM sender_keys WHERE group_id = ? "
                "AND account_id = ? AND device_id = ? ORDER BY updated DESC, rowid DESC LIMIT 2)",
                (group_id, account_id, device_id) * 2,
            )
        state.events = [
            e for e in state.events if not isinstance(e, MessageReceived) or e.message.id in kept
        ]
        for account_id, receipt in state.receipts:
            for message_id in receipt.message_ids:
                cursor = conn.execute(
                    "UPDATE messages SET status = 'delivered' WHERE message_uuid = ? "
                    "AND peer = ? AND outgoing = 1",
                    (message_id, account_id),
                )
                if not cursor.rowcount:
                    self._group_receipt(conn, message_id, account_id, state)
        conn.executemany(
            "INSERT OR IGNORE INTO processed (server_id, at) VALUES (?, ?)",
            [(p.server_id, now) for p in pushes],
        )
        return changed

    def _group_receipt(
        self, conn: Any, message_id: bytes, account_id: bytes, state: BatchState
    ) -> None:
        """A member's delivery receipt for a group message this account sent: the message
        is delivered once every current member but this account has confirmed it."""
        row = conn.execute(
            "SELECT id, peer, receipts FROM messages WHERE message_uuid = ? AND outgoing = 1 "
            "AND length(peer) = ?",
            (message_id, GROUP_ID_LEN),
        ).fetchone()
        if row is None:
            return
        row_id, peer, raw = row[0], bytes(row[1]), bytes(row[2] or b"")
        group = state.groups.get(peer) or self._group(peer)
        if group is None:
            return
        members = {m.account_id for m in group.info.members} - {self.account_id}
        if account_id not in members:
            return  # only members confirm
        confirmed = {raw[i : i + 16] for i in range(0, len(raw), 16)} | {account_id}
        conn.execute(
            "UPDATE messages SET receipts = ?, status = CASE WHEN ? THEN 'delivered' "
            "ELSE status END WHERE id = ?",
            (b"".join(sorted(confirmed)), members <= confirmed, row_id),
        )

    def _schedule_receipts(self) -> None:
        """Send the due receipts a moment from now, so a stream of messages is answered
        with a few receipts naming many messages rather than one per batch."""
        if self._receipt_task is None or self._receipt_task.done():
            self._receipt_task = asyncio.create_task(self._delayed_receipts())

    async def _delayed_receipts(self) -> None:
        await asyncio.sleep(RECEIPT_DELAY)
        try:
            await self._flush_receipts_and_prekeys()
        except ClientError as exc:
            log.warning("receipts or prekey upkeep failed: %s", type(exc).__name__)

    async def _flush_receipts_and_prekeys(self) -> None:
        due, self._receipts_due = self._receipts_due, {}
        futures = []
        for account_id, ids in due.items():
            contact = self._contact_by_id(account_id)
            if contact is None:
                continue
            for start in range(0, len(ids), MAX_RECEIPT_IDS):
                receipt = ReceiptContent(
                    _now_ms(self._clock), self._token, tuple(ids[start : start + MAX_RECEIPT_IDS])
                )
                future: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
                self._start_sender()
                await self._queue.put(Outgoing(contact.username, receipt, future, store=False))
                futures.append(future)
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                log.warning("a delivery receipt was not sent: %s", type(result).__name__)
        if self._prekeys_used:
            self._prekeys_used = 0
            await self.maintain_prekeys()

    # ------------------------------------------------------------------ prekeys

    async def _upkeep(self) -> None:  # delegate
        await self._upkeeper.run()

    async def maintain_prekeys(self) -> None:
        """Refill one-time prekeys when the server says the stock is low, and rotate the
        signed and last-resort prekeys weekly (:mod:`.services.prekeys`)."""
        await self._prekeys.maintain()

    # ------------------------------------------------------------------ groups
    # (services/groups.py, services/group_encryptor.py, services/group_receive.py)

    def groups(self) -> list[GroupView]:
        """Every group this account is or was in."""
        return self._groups.views()

    async def create_group(self, name: str, members: Sequence[str]) -> GroupView:
        """A new group of this account (its admin) and ``members`` (usernames); every
        member's devices are told, pairwise. The server learns nothing of it."""
        return await self._groups.create(name, members)

    async def group_add(self, group: str, members: Sequence[str]) -> GroupView:
        return await self._groups.add(group, members)

    async def group_remove(self, group: str, members: Sequence[str]) -> GroupView:
        """Remove members: every remaining member's devices rotate their sender keys
        before their next message, so the removed cannot read what follows."""
        return await self._groups.remove(group, members)

    async def group_rename(self, group: str, name: str) -> GroupView:
        return await self._groups.rename(group, name)

    async def group_leave(self, group: str) -> GroupView:
        return await self._groups.leave(group)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task that :meth:`close` waits for."""
        task = asyncio.create_task(work)
        self._delivering.add(task)
        task.add_done_callback(self._delivering.discard)

    def _group(self, group_id: bytes) -> GroupRow | None:  # delegate
        return self._groups.get(group_id)

    def _group_by_name(self, name: str) -> GroupRow | None:  # delegate
        return self._groups.by_name(name)

    def _member_name(self, account_id: bytes, state: BatchState) -> str | None:  # delegate
        return self._groups.member_name(account_id, state)

    def _queue_group_sends(self, state: BatchState) -> None:  # delegate
        self._groups.send_replies(state)

    async def _prepare_group(self, item: Outgoing, cert: SenderCertificate) -> list[Prepared]:
        return await self._group_encryptor.prepare(item, cert)  # delegate

    async def _open_group_sealed(self, push: Push, state: BatchState) -> None:  # delegate
        await self._group_receiver.open_sealed(push, state)

    async def _open_group_message(self, push: Push, state: BatchState) -> None:  # delegate
        await self._group_receiver.open_multi(push, state)

    def _absorb_sender_key(  # delegate
        self, distribution: bytes, account_id: bytes, device_id: int, state: BatchState
    ) -> None:
        self._group_receiver.absorb_sender_key(distribution, account_id, device_id, state)

    def _answer_group_request(  # delegate
        self, content: GroupStateRequest, sender: ContactRow, state: BatchState
    ) -> None:
        self._group_receiver.answer_request(content, sender, state)

    async def _absorb_group_update(  # delegate
        self, content: GroupUpdateContent, sender: ContactRow, device_id: int, state: BatchState
    ) -> None:
        await self._group_receiver.absorb_update(content, sender, device_id, state)

    # ------------------------------------------------------------------ attachments
    # (services/attachments.py)

    async def save_attachment(
        self,
        message_id: bytes,
        directory: Path | str,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Download, check and decrypt a message's attachment into ``directory`` (a file
        that fails any check is not left there); again if the file saved before is gone.
        A save that fails changes nothing, so it can be tried again. The file is deleted
        with the message (timer or delete for everyone) while it is still the file saved
        (:mod:`sealpost.client.saved_files`)."""
        return await self._attachments.save(message_id, directory, progress=progress)

    async def _upload(  # delegate
        self, path: Path, progress: Callable[[int, int], None] | None
    ) -> AttachmentRow:
        return await self._attachments.upload(path, progress)

    async def _upload_bytes(self, data: bytes, filename: str) -> AttachmentRow:  # delegate
        return await self._attachments.upload_bytes(data, filename)

    # ------------------------------------------------------------------ key transparency

    @property
    def monitor_grace(self) -> float:
        """Seconds a log entry naming a device this account does not know may wait for the
        sibling's announcement of it before it is an alarm."""
        return self._monitoring.grace

    @monitor_grace.setter
    def monitor_grace(self, seconds: float) -> None:
        self._monitoring.grace = seconds

    @property
    def monitor_interval(self) -> float:
        """Seconds between checks of this account's log entries while connected."""
        return self._monitoring.interval

    @monitor_interval.setter
    def monitor_interval(self, seconds: float) -> None:
        self._monitoring.interval = seconds

    @property
    def _next_monitor(self) -> float:  # delegate
        return self._monitoring.next_due

    async def diagnose_refusal(self) -> ClientError | None:
        """After the server refused this device's signature (``unauthorized``): the error
        that says why, if the server's public answers tell (:mod:`.diagnose`)."""
        return await self._monitoring.diagnose_refusal()

    async def _transparency(self) -> KeyTransparency:  # delegate
        return await self._monitoring.transparency()

    def _gossip(self) -> bytes | None:  # delegate
        return self._monitoring.gossip()

    def log_head(self) -> dict[str, Any] | None:
        """The newest signed tree head this device has checked (what it gossips)."""
        return self._monitoring.log_head()

    def alarms(self, *, include_dismissed: bool = False) -> list[Alarm]:
        """Key-transparency alarms, oldest first (they stay until dismissed)."""
        return self._monitoring.alarms(include_dismissed=include_dismissed)

    async def dismiss_alarms(self, alarm_ids: Sequence[int] | None = None) -> int:
        """Dismiss these alarms (all with ``None``); returns how many were dismissed."""
        return self._monitoring.dismiss_alarms(alarm_ids)

    async def monitor(self) -> int:
        """Check this account's key-transparency entries since the last check, retry the
        gossiped heads not yet proven, look a few contacts up again; returns how many
        entries were checked (:mod:`.services.monitoring`)."""
        return await self._monitoring.monitor()

    # ------------------------------------------------------------------ devices

    def _own_row(self, state: BatchState | None = None) -> ContactRow:  # delegate
        return self._devices.own_row(None if state is None else state.own_devices)

    async def _own_directory(  # delegate
        self,
    ) -> tuple[dict[int, DeviceCertificate], dict[int, bytes]]:
        return await self._devices.directory()

    async def refresh_devices(self) -> None:
        """Fetch this account's device list again (after a change or a refused send)."""
        await self._devices.refresh()

    def _record_revocation(  # delegate (a raw connection's transaction is open)
        self, conn: Any, account_id: bytes, device_id: int, revocation: bytes | None
    ) -> None:
        self._devices.record_revocation(self._store.repos(), account_id, device_id, revocation)

    def _forget_own_device(self, conn: Any, device_id: int) -> None:  # delegate
        self._devices.forget_own(self._store.repos(), device_id)

    async def devices(self) -> list[dict[str, Any]]:
        """This account's devices (certified by its key), this one marked ``current``."""
        return await self._devices.list()

    async def remove_device(self, device_id: int) -> None:
        """Revoke another device of this account: the account key signs a revocation,
        the server deletes the device, contacts stop encrypting to it, and this
        account's other devices are told."""
        await self._devices.remove(device_id)

    async def _notify_own(self, notice: DeviceNotice) -> None:  # delegate
        await self._devices.notify_own(notice)

    async def link_accept(
        self,
        code_text: str,
        confirm: Callable[[str, str], bool | Awaitable[bool]],
    ) -> int:
        """Provision the new device that shows ``code_text``: ``confirm(device name,
        confirmation code)`` must return true (the user compared the code with the one on
        the new device). Sends it the account key, contacts, groups and timers, sealed to
        its keys; returns the device id it will take."""
        code = LinkCode.from_text(code_text)
        doc = await self._transport.request("GET", api_path("link", code.channel.hex()))
        kem_public = unb64(doc.get("kem") if isinstance(doc, dict) else None)
        code.check_kem(kem_public)
        answer = confirm(code.device_name, confirmation_code(code, kem_public))
        if not isinstance(answer, bool):
            answer = await answer
        if not answer:
            raise LinkRefused("the link was not confirmed")
        devices, revoked = await self._own_directory()
        if len(devices) >= MAX_DEVICES:
            raise ClientError(f"this account has {len(devices)} devices, the most it may have")
        device_id = max([self.device_id, *devices, *revoked]) + 1
        names = {
            int(d): str(n)
            for d, n in self._store.read().execute("SELECT device_id, name FROM own_devices")
        }
        names[self.device_id] = (self._store.get_meta("device_name") or b"device").decode()
        names[device_id] = code.device_name
        payload = Provisioning(
            server_url=self.server_url,
            server_key=self._server_key.public_bytes_raw(),
            username=self.username,
            account=self._account,
            delivery_token=self._token,
            device_id=device_id,
            devices=names,
            contacts=[
                ContactRecord(c.account_id, c.username, c.account_key, c.verified, c.delivery_token)
                for c in self._contact_cache().values()
            ],
            groups=[
                bytes(r[0])
                for r in self._store.read().execute("SELECT state FROM groups WHERE member = 1")
            ],
            timers={
                bytes(p): int(t)
                for p, t in self._store.read().execute("SELECT peer, seconds FROM timers")
            },
            log_key=(await self._transparency()).log_key,
            log_head=(await self._transparency()).gossip(),
        )
        message = seal_provisioning(payload.to_bytes(), code, kem_public, rng=self._rng)
        await self._transport.request(
            "PUT", api_path("link", code.channel.hex()), body={"body": b64(message)}
        )
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO own_devices (device_id, certificate, name, added) "
                "VALUES (?, NULL, ?, ?) ON CONFLICT (device_id) DO UPDATE SET name = ?",
                (device_id, code.device_name, int(self._clock()), code.device_name),
            )
        self._local_changed()
        self._ctx.events.emit(DeviceLinked(device_id, code.device_name))
        return device_id

    # ------------------------------------------------------------------ passcode

    def change_passcode(self, old: str, new: str) -> None:
        self._store.change_passcode(old, new)


# ---------------------------------------------------------------------- rows


def _remove_profile(profile: Path) -> None:
    """Undo a profile whose registration failed: only the files the store made."""
    for name in PROFILE_FILES:
        with contextlib.suppress(FileNotFoundError):
            (profile / name).unlink()
    with contextlib.suppress(OSError):
        profile.rmdir()


def _insert_prekey(conn: Any, kind: str, key_id: int, record: bytes, now: int) -> None:
    conn.execute(
        "INSERT INTO prekeys (kind, key_id, record, created) VALUES (?, ?, ?, ?)",
        (kind, key_id, record, now),
    )


def _same(held: DeviceCertificate | None, cert: DeviceCertificate) -> bool:
    return held is not None and hmac.compare_digest(held.encode(), cert.encode())


def _replace_devices(conn: Any, account_id: bytes, devices: dict[int, DeviceCertificate]) -> None:
    conn.execute("DELETE FROM contact_devices WHERE account_id = ?", (account_id,))
    conn.executemany(
        "INSERT INTO contact_devices (account_id, device_id, certificate) VALUES (?, ?, ?)",
        [(account_id, d, cert.encode()) for d, cert in devices.items()],
    )


@dataclass(frozen=True, slots=True)
class _Setup:
    server_url: str
    server_key: bytes
    username: str
    account: AccountIdentity
    token: bytes
    device_id: int
    device_name: str
    log_key: bytes
    log_head: bytes | None = None


async def _fetch_server_key(anonymous: Transport) -> bytes:
    doc = await anonymous.request("GET", "/v1/certificate/server", signed=False)
    server_key = unb64(doc.get("public_key") if isinstance(doc, dict) else None)
    VerifyKey.from_public_bytes(server_key)
    return server_key


def _check_device_name(name: str) -> None:
    if not name.isascii() or not name.isprintable() or not 1 <= len(name) <= 32:
        raise ValueError("a device name is 1 to 32 printable ASCII characters")


def _delete_authored(conn: Any, target: bytes, peer: bytes, author: bytes) -> None:
    """Delete for everyone: ``author`` deletes its message ``target`` in ``peer``'s
    conversation; if it has not arrived yet, a tombstone keeps it from being stored."""
    rows = conn.execute(
        "SELECT id, attachment_path FROM messages WHERE message_uuid = ? AND peer = ? "
        "AND (author = ? OR (author IS NULL AND outgoing = 0 AND peer = ?))",
        (target, peer, author, author),
    ).fetchall()
    if not rows:
        conn.execute(
            "INSERT OR IGNORE INTO tombstones (message_uuid, author, at) VALUES (?, ?, ?)",
            (target, author, int(time.time())),
        )
        return
    for row_id, path in rows:
        conn.execute("DELETE FROM messages WHERE id = ?", (row_id,))
        saved_files.remove(path)


def _store_group_state(conn: Any, raw: bytes, now: int) -> None:
    """A group state provisioned by another device of this account (it verified it)."""
    info = group_info(raw)
    conn.execute(
        "INSERT OR IGNORE INTO groups (group_id, state, name, member, rotate, updated) "
        "VALUES (?, ?, ?, 1, 0, ?)",
        (info.group_id, raw, info.name, now),
    )


def _set_timer(conn: Any, peer: bytes, seconds: int) -> None:
    if seconds:
        conn.execute("INSERT OR REPLACE INTO timers (peer, seconds) VALUES (?, ?)", (peer, seconds))
    else:
        conn.execute("DELETE FROM timers WHERE peer = ?", (peer,))
