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
  account key, whatever the server lists. A contact's account key is pinned at first
  contact; a change is an event and a warning, and for a verified contact a refusal to send
  (:class:`UntrustedContact`) until the user verifies again.
- **Sealed sender.** Messages go out on the anonymous ``/v1/sealed`` socket with the
  recipient's delivery token (learned from its messages) or, for a first message, without
  one (the recipient's server must accept sealed messages from anyone). A new sender's
  claimed username is checked against the server's directory with an unauthenticated
  lookup before it is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealpost._errors import DecodeError, ProtocolError
from sealpost.client.errors import (
    ClientError,
    NotRegistered,
    ServerError,
    ServerUnavailable,
    UnknownContact,
    UntrustedContact,
)
from sealpost.client.sessions import decode_sessions, encode_sessions
from sealpost.client.store import KdfParams, Store
from sealpost.client.transport import (
    Identity,
    Push,
    SealedSocket,
    Stream,
    Transport,
    b64,
    unb64,
)
from sealpost.crypto.dh import DhPublicKey
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng, system_rng
from sealpost.protocol import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyKind,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    PreKeyMessage,
    Session,
    SignedPreKeyPair,
    seal,
    unseal,
    verify_certificate,
)
from sealpost.protocol.content import (
    MAX_RECEIPT_IDS,
    Content,
    ReceiptContent,
    TextContent,
    decode_content,
    encode_content,
)
from sealpost.protocol.errors import DuplicateMessage, UnknownPreKey
from sealpost.protocol.safety import safety_number, safety_qr_payload
from sealpost.protocol.wire import DeviceCertificate, SenderCertificate

__all__ = [
    "Client",
    "Contact",
    "Event",
    "KeyChanged",
    "Message",
    "MessageReceived",
    "ReceiptReceived",
]

log = logging.getLogger("sealpost.client")

PREKEY_BATCH = 100  # one-time prekeys of each kind uploaded at a time
SPK_ROTATION = 7 * 24 * 3600  # signed and last-resort prekeys are replaced weekly
SPK_RETENTION = 30 * 24 * 3600  # old ones still answer late first messages this long
CERT_MARGIN = 3600  # renew the sender certificate this long before it expires
BATCH = 256  # sends or pushes handled in one transaction
UPKEEP_INTERVAL = 3600.0  # seconds between prekey checks on (re)connecting
RECEIPT_DELAY = 0.2  # seconds receipts wait to be sent together
BACKLOG_TIMEOUT = 30.0  # how long the server may take to push what was queued
SEND_RETRIES = 3  # device-list refreshes before a send gives up


# ---------------------------------------------------------------------- public records


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the history. ``id`` is the sender-chosen random id (hex in JSON)."""

    id: bytes
    peer: str
    outgoing: bool
    text: str
    sent_at: int  # ms, the sender's clock
    received_at: int  # ms, this device's clock
    status: str  # outgoing: "sending", "sent", "delivered"; incoming: "received"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "from": None if self.outgoing else self.peer,
            "to": self.peer if self.outgoing else None,
            "peer": self.peer,
            "outgoing": self.outgoing,
            "text": self.text,
            "sent_at": self.sent_at,
            "received_at": self.received_at,
            "status": self.status,
        }

    def __repr__(self) -> str:
        return f"Message(id={self.id.hex()}, peer={self.peer!r}, outgoing={self.outgoing})"


@dataclass(frozen=True, slots=True)
class Contact:
    account_id: bytes
    username: str
    account_key: bytes
    verified: bool
    key_changed: bool
    devices: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "account_id": self.account_id.hex(),
            "verified": self.verified,
            "key_changed": self.key_changed,
            "devices": list(self.devices),
        }


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message: Message


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    peer: str
    message_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class KeyChanged:
    """``peer``'s account key is not the one pinned: a new phone, or an attack. When the
    contact was verified, nothing is sent to it until :meth:`Client.verify`."""

    peer: str
    verified: bool


Event = MessageReceived | ReceiptReceived | KeyChanged


# ---------------------------------------------------------------------- internals


@dataclass(slots=True)
class _ContactRow:
    account_id: bytes
    username: str
    account_key: bytes
    verified: bool
    key_changed: bool
    delivery_token: bytes | None
    devices: dict[int, DeviceCertificate]


@dataclass(slots=True)
class _Outgoing:
    """A send waiting for the sender loop: a text, or a receipt (no history row)."""

    peer: str
    content: Content
    future: asyncio.Future[Message | None]
    store: bool  # a history row for it (texts) or not (receipts)
    attempts: int = 0


@dataclass(slots=True)
class _Prepared:
    item: _Outgoing
    contact: _ContactRow
    envelopes: list[tuple[bytes, int, bytes]]
    outbox_id: int = 0


@dataclass(slots=True)
class _BatchState:
    """What a receive batch changes, committed at once."""

    sessions: dict[tuple[bytes, int], list[Session]] = field(default_factory=dict)
    used_prekeys: set[tuple[str, int]] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    messages: list[tuple[TextContent, bytes, int]] = field(default_factory=list)
    receipts: list[tuple[bytes, ReceiptContent]] = field(default_factory=list)
    seen_ids: set[bytes] = field(default_factory=set)
    tokens: dict[bytes, bytes] = field(default_factory=dict)
    new_contacts: dict[bytes, _ContactRow] = field(default_factory=dict)
    key_changes: dict[bytes, bytes] = field(default_factory=dict)
    device_certs: dict[bytes, dict[int, DeviceCertificate]] = field(default_factory=dict)
    reply_to: dict[bytes, list[bytes]] = field(default_factory=dict)
    prekey_messages: int = 0


def _now_ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


def _int(value: bytes | None, default: int = 0) -> int:
    return default if value is None else int(value.decode())


def _verified_devices(
    account_id: bytes, account_key: bytes, devices: Sequence[Any]
) -> dict[int, DeviceCertificate]:
    """The devices of a directory answer whose certificates the account key signed; any
    other entry (a ghost the server added) is dropped here and never encrypted to."""
    out: dict[int, DeviceCertificate] = {}
    for item in devices:
        try:
            cert = DeviceCertificate.decode(unb64(item["certificate"]))
            verify_certificate(cert, expected_account_key=account_key)
        except (ProtocolError, KeyError, TypeError, ServerError):
            log.warning("ignoring a listed device whose certificate does not verify")
            continue
        if cert.account_id != account_id or cert.device_id != item.get("device_id"):
            log.warning("ignoring a listed device whose certificate names another device")
            continue
        out[cert.device_id] = cert
    return out


class Client:
    """A profile, unlocked. Create with :meth:`create` or :meth:`open`; close when done."""

    def __init__(
        self,
        store: Store,
        *,
        rng: Rng = system_rng,
        clock: Callable[[], float] = time.time,
    ) -> None:
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
        self._transport = Transport(
            self.server_url,
            Identity(self._device.signing_key, self._account.account_id, self._device.device_id),
            clock=clock,
            rng=rng,
        )
        self._sessions: dict[tuple[bytes, int], list[Session]] = {}
        self._sealed: SealedSocket | None = None
        self._stream: Stream | None = None
        self._queue: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._sender_cert: SenderCertificate | None = None
        self._sender_cert_expires = 0
        # Held while ratchets step and their results are committed (a send batch or a
        # receive batch), so two batches never interleave on one session.
        self._lock = asyncio.Lock()
        self._pending_events: list[Event] = []
        self._receipts_due: dict[bytes, list[bytes]] = {}
        self._prekeys_used = 0
        self._contacts: dict[bytes, _ContactRow] | None = None
        self._delivering: set[asyncio.Task[None]] = set()
        self._verified_senders: set[bytes] = set()
        self._receipt_task: asyncio.Task[None] | None = None
        self._last_upkeep: float | None = None
        self._submissions: asyncio.Queue[list[_Prepared]] = asyncio.Queue()
        self._submitter: asyncio.Task[None] | None = None  # sender certificates already checked

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
        params: KdfParams | None = None,
        wipe_after: int | None = None,
        rng: Rng = system_rng,
        clock: Callable[[], float] = time.time,
    ) -> Client:
        """Make keys, register ``username`` on the server, and keep it all in a new
        profile. If the server refuses, no profile is left behind."""
        profile = Path(profile)
        server_url = server_url.rstrip("/")
        async with Transport(server_url, clock=clock, rng=rng) as anonymous:
            doc = await anonymous.request("GET", "/v1/certificate/server", signed=False)
            server_key = unb64(doc.get("public_key") if isinstance(doc, dict) else None)
            VerifyKey.from_public_bytes(server_key)
        now = int(clock())
        account = AccountIdentity.generate(rng)
        device = DeviceKeys.generate(account, 1, now=now, rng=rng)
        token = rng(32)
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
                    "server_url": server_url.encode(),
                    "username": username.encode(),
                    "account": account.to_bytes(),
                    "device": device.to_bytes(),
                    "delivery_token": token,
                    "server_key": server_key,
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
            body = {
                "username": username,
                "account_key": b64(account.public_key().public_bytes_raw()),
                "certificate": b64(device.certificate.encode()),
                "delivery_token": b64(token),
                "signed_prekey": b64(spk.public.encode()),
                "kem_last_resort": b64(kem_lr.public.encode()),
                "one_time_prekeys": [b64(k.public.encode()) for k in one_time],
                "kem_one_time_prekeys": [b64(k.public.encode()) for k in kem_one_time],
            }
            identity = Identity(device.signing_key, account.account_id, 1)
            async with Transport(server_url, identity, clock=clock, rng=rng) as transport:
                answer = await transport.request("POST", "/v1/accounts", body=body)
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
    ) -> Client:
        store = await asyncio.to_thread(Store.open, Path(profile), passcode)
        try:
            return cls(store, rng=rng, clock=clock)
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
        while not self._submissions.empty() and self._submitter is not None:
            await asyncio.sleep(0.01)
        if self._delivering:
            await asyncio.wait(set(self._delivering), timeout=10)
        if self._submitter is not None:
            self._submitter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._submitter
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        for sock in (self._sealed, self._stream):
            if sock is not None:
                with contextlib.suppress(Exception):
                    await sock.close()
        self._sealed = self._stream = None
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

    def _contact_rows(self, where: str = "", args: tuple[Any, ...] = ()) -> list[_ContactRow]:
        conn = self._store.read()
        rows = conn.execute(
            "SELECT account_id, username, account_key, verified, key_changed, delivery_token "  # noqa: S608 (where: our constants)
            f"FROM contacts {where}",
            args,
        ).fetchall()
        out = []
        for account_id, username, key, verified, changed, token in rows:
            devices = {
                device_id: DeviceCertificate.decode(cert)
                for device_id, cert in conn.execute(
                    "SELECT device_id, certificate FROM contact_devices WHERE account_id = ?",
                    (account_id,),
                )
            }
            out.append(
                _ContactRow(
                    account_id, username, key, bool(verified), bool(changed), token, devices
                )
            )
        return out

    def _contact_cache(self) -> dict[bytes, _ContactRow]:
        """Every contact, read once and kept until a write touches contacts."""
        if self._contacts is None:
            self._contacts = {c.account_id: c for c in self._contact_rows()}
        return self._contacts

    def _contacts_changed(self) -> None:
        self._contacts = None

    def _contact_by_name(self, name: str) -> _ContactRow | None:
        name = name.lower()
        for contact in self._contact_cache().values():
            if contact.username == name:
                return contact
        return None

    def _contact_by_id(self, account_id: bytes) -> _ContactRow | None:
        return self._contact_cache().get(account_id)

    def contacts(self) -> list[Contact]:
        return [
            Contact(
                c.account_id,
                c.username,
                c.account_key,
                c.verified,
                c.key_changed,
                tuple(sorted(c.devices)),
            )
            for c in sorted(self._contact_cache().values(), key=lambda c: c.username)
        ]

    async def _directory(self, name: str) -> tuple[bytes, str, bytes, dict[int, DeviceCertificate]]:
        """An unauthenticated lookup (the server does not learn who asks)."""
        try:
            doc = await self._transport.request("GET", f"/v1/accounts/{name}", signed=False)
        except ServerError as exc:
            if exc.code in ("not_found", "invalid_request"):
                raise UnknownContact(name) from None
            raise
        try:
            account_id = bytes.fromhex(doc["account_id"])
            account_key = unb64(doc["account_key"])
            username = str(doc["username"]).lower()
            devices = _verified_devices(account_id, account_key, doc["devices"])
        except (KeyError, TypeError, ValueError):
            raise ServerError(0, "bad_response", "malformed account lookup") from None
        if username != name.lower() or len(account_id) != 16 or len(account_key) != 32:
            raise ServerError(0, "bad_response", "the lookup answered for another name")
        return account_id, username, account_key, devices

    async def _resolve(self, name: str, *, refresh: bool = False) -> _ContactRow:
        """The contact ``name``, looked up on the server the first time (and on
        ``refresh``). Its account is pinned: if the name later answers with another
        account (or the account with another key) that is a key change, as when a phone
        number's identity key changes in Signal."""
        known = self._contact_by_name(name)
        if known is not None and known.devices and not refresh:
            return known
        account_id, username, account_key, devices = await self._directory(name)
        now = int(self._clock())
        with self._store.transaction() as conn:
            if known is not None and known.account_id != account_id:
                # the pinned account is replaced by another one under the same name
                for gone in (account_id, known.account_id):
                    conn.execute("DELETE FROM contact_devices WHERE account_id = ?", (gone,))
                conn.execute("DELETE FROM contacts WHERE account_id = ?", (account_id,))
                conn.execute(
                    "UPDATE contacts SET account_id = ? WHERE account_id = ?",
                    (account_id, known.account_id),
                )
                conn.execute(
                    "UPDATE messages SET peer = ? WHERE peer = ?", (account_id, known.account_id)
                )
                self._note_key_change(conn, known, account_key, old_account=known.account_id)
            elif known is None:
                existing = self._contact_by_id(account_id)
                if existing is None:
                    conn.execute(
                        "INSERT INTO contacts (account_id, username, account_key, added) "
                        "VALUES (?, ?, ?, ?)",
                        (account_id, username, account_key, now),
                    )
                elif existing.account_key != account_key:
                    self._note_key_change(conn, existing, account_key)
            elif known.account_key != account_key:
                self._note_key_change(conn, known, account_key)
            _replace_devices(conn, account_id, devices)
        self._contacts_changed()
        contact = self._contact_by_id(account_id)
        assert contact is not None
        return contact

    def _note_key_change(
        self,
        conn: Any,
        contact: _ContactRow,
        new_key: bytes,
        *,
        old_account: bytes | None = None,
    ) -> None:
        """Record that ``contact`` now has ``new_key``: keep the old key to show, drop the
        sessions with the old devices, and raise :class:`KeyChanged`. A verified contact
        stays "verified" with ``key_changed`` set, which blocks sending until re-verified."""
        account_id = contact.account_id if old_account is None else old_account
        conn.execute(
            "UPDATE contacts SET account_key = ?, previous_key = ?, key_changed = 1 "
            "WHERE username = ?",
            (new_key, contact.account_key, contact.username),
        )
        conn.execute("DELETE FROM sessions WHERE account_id = ?", (account_id,))
        for address in [a for a in self._sessions if a[0] == account_id]:
            del self._sessions[address]
        self._pending_events.append(KeyChanged(contact.username, contact.verified))

    def safety_number(self, name: str) -> str:
        contact = self._contact_by_name(name)
        if contact is None:
            raise UnknownContact(name)
        return safety_number(
            self.account_id, self.account_key, contact.account_id, contact.account_key
        )

    def safety_qr_payload(self, name: str) -> bytes:
        """What the QR code beside the safety number encodes (scanned to compare)."""
        contact = self._contact_by_name(name)
        if contact is None:
            raise UnknownContact(name)
        return safety_qr_payload(
            self.account_id, self.account_key, contact.account_id, contact.account_key
        )

    async def lookup(self, name: str) -> Contact:
        """Fetch ``name`` from the server's directory (pinning its key on first use)."""
        row = await self._resolve(name, refresh=True)
        return Contact(
            row.account_id,
            row.username,
            row.account_key,
            row.verified,
            row.key_changed,
            tuple(sorted(row.devices)),
        )

    def verify(self, name: str) -> None:
        """Mark ``name``'s current safety number as checked by the user."""
        contact = self._contact_by_name(name)
        if contact is None:
            raise UnknownContact(name)
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE contacts SET verified = 1, key_changed = 0, previous_key = NULL "
                "WHERE account_id = ?",
                (contact.account_id,),
            )
        self._contacts_changed()

    def acknowledge_key_change(self, name: str) -> None:
        """Dismiss the warning for an unverified contact's new key (shown once)."""
        with self._store.transaction() as conn:
            conn.execute(
                "UPDATE contacts SET key_changed = 0 WHERE username = ? AND verified = 0",
                (name.lower(),),
            )
        self._contacts_changed()

    # ------------------------------------------------------------------ history

    def history(self, name: str, limit: int = 1000) -> list[Message]:
        contact = self._contact_by_name(name)
        if contact is None:
            raise UnknownContact(name)
        rows = (
            self._store.read()
            .execute(
                "SELECT message_uuid, outgoing, body, sent_at, received_at, status "
                "FROM messages WHERE peer = ? ORDER BY id DESC LIMIT ?",
                (contact.account_id, limit),
            )
            .fetchall()
        )
        return [
            Message(uid, contact.username, bool(out), body, sent, received, status)
            for uid, out, body, sent, received, status in reversed(rows)
        ]

    # ------------------------------------------------------------------ sending

    async def send(self, name: str, text: str) -> Message:
        """Encrypt ``text`` to every device of ``name`` and return once the server has
        stored it. Raises :class:`UnknownContact`, :class:`UntrustedContact` or a
        :class:`TransportError`; on any error the message is not marked sent."""
        content = TextContent(self._rng(16), _now_ms(self._clock), self._token, self.username, text)
        future: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
        self._start_sender()
        await self._queue.put(_Outgoing(name.lower(), content, future, store=True))
        message = await future
        assert message is not None
        return message

    def _start_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        """Take queued sends in batches: encrypt and commit a batch, hand its frames to the
        server in order, and go on with the next batch while the server answers (a task
        per batch finishes it)."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._send_batch(batch)
            except asyncio.CancelledError:
                _fail(batch, ServerUnavailable("the client closed"))
                raise
            except Exception as exc:  # each item's own error was set; this is the rest
                _fail(batch, exc)

    async def _sender_certificate(self) -> SenderCertificate:
        now = int(self._clock())
        if self._sender_cert is None or self._sender_cert_expires - CERT_MARGIN < now:
            doc = await self._transport.request("GET", "/v1/certificate/sender")
            cert = SenderCertificate.decode(unb64(doc.get("certificate")))
            cert.verify(self._server_key, now=now)
            self._sender_cert, self._sender_cert_expires = cert, cert.expires
        return self._sender_cert

    async def _session_for(self, contact: _ContactRow, device_id: int) -> Session:
        address = (contact.account_id, device_id)
        sessions = self._load_sessions(address)
        if sessions:
            return sessions[0]
        doc = await self._transport.request(
            "GET", f"/v1/keys/{contact.account_id.hex()}/{device_id}", signed=False
        )
        bundle = PreKeyBundle.decode(unb64(doc.get("bundle") if isinstance(doc, dict) else None))
        if bundle.certificate != contact.devices[device_id]:
            raise ServerError(0, "bad_response", "the bundle's certificate is not the device's")
        session = Session.initiate(
            self._device, bundle, expected_account_key=contact.account_key, rng=self._rng
        )
        self._sessions[address] = [session]
        return session

    def _load_sessions(self, address: tuple[bytes, int]) -> list[Session]:
        sessions = self._sessions.get(address)
        if sessions is None:
            row = (
                self._store.read()
                .execute(
                    "SELECT state FROM sessions WHERE account_id = ? AND device_id = ?", address
                )
                .fetchone()
            )
            sessions = decode_sessions(row[0]) if row else []
            if sessions:
                self._sessions[address] = sessions
        return sessions

    async def _prepare(self, item: _Outgoing, sender_cert: SenderCertificate) -> _Prepared:
        contact = await self._resolve(item.peer)
        if contact.key_changed:
            if contact.verified:
                raise UntrustedContact(contact.username)
            self._pending_events.append(KeyChanged(contact.username, False))
        if not contact.devices:
            raise UnknownContact(item.peer)
        plaintext = encode_content(item.content)
        envelopes = []
        for device_id, cert in sorted(contact.devices.items()):
            session = await self._session_for(contact, device_id)
            sealed = seal(
                session.encrypt(plaintext, rng=self._rng),
                sender_cert,
                DhPublicKey.from_public_bytes(cert.identity_key),
            )
            envelopes.append((contact.account_id, device_id, sealed))
        return _Prepared(item, contact, envelopes)

    def _forget_sessions(self, prepared: Sequence[_Prepared]) -> None:
        """After a failed commit the in-memory ratchets ran ahead of the store: drop them
        (nothing they produced was sent) so the stored state is reloaded."""
        for p in prepared:
            for account_id, device_id, _ in p.envelopes:
                self._sessions.pop((account_id, device_id), None)

    async def _send_batch(self, batch: list[_Outgoing]) -> None:
        sender_cert = await self._sender_certificate()
        async with self._lock:
            prepared = await self._encrypt_batch(batch, sender_cert)
        if prepared:
            if self._submitter is None or self._submitter.done():
                self._submitter = asyncio.create_task(self._submit_loop())
            self._submissions.put_nowait(prepared)

    async def _submit_loop(self) -> None:
        """Hand committed batches to the server in the order they were encrypted, while
        the send loop goes on encrypting (the socket's window may make this wait)."""
        while True:
            prepared = await self._submissions.get()
            try:
                sock = await self._sealed_socket()
                futures = []
                for p in prepared:
                    token = p.contact.delivery_token
                    tokens = {p.contact.account_id: token} if token else {}
                    futures.append(await sock.send(p.envelopes, tokens))
            except Exception as exc:  # left in the outbox: sent again by flush_outbox
                _fail([p.item for p in prepared], exc)
                continue
            task = asyncio.create_task(self._finish(prepared, futures))
            self._delivering.add(task)
            task.add_done_callback(self._delivering.discard)

    async def _encrypt_batch(
        self, batch: list[_Outgoing], sender_cert: SenderCertificate
    ) -> list[_Prepared]:
        """Encrypt, then commit ratchet steps, history rows and outbox in one transaction."""
        prepared: list[_Prepared] = []
        for item in batch:
            try:
                prepared.append(await self._prepare(item, sender_cert))
            except (ClientError, ProtocolError) as exc:
                item.future.set_exception(exc)
        if not prepared:
            return prepared
        now_ms = _now_ms(self._clock)
        try:
            with self._store.transaction() as conn:
                self._save_sessions(conn, {(a, d) for p in prepared for a, d, _ in p.envelopes})
                conn.executemany(
                    "INSERT INTO messages (message_uuid, peer, outgoing, body, "
                    "sent_at, received_at, status) VALUES (?, ?, 1, ?, ?, ?, 'sending')",
                    [
                        (c.message_id, p.contact.account_id, c.text, c.sent_at, now_ms)
                        for p in prepared
                        if p.item.store and isinstance(c := p.item.content, TextContent)
                    ],
                )
                outbox_id = _outbox_add(conn, prepared)
                for p in prepared:
                    p.outbox_id = outbox_id
        except BaseException:
            self._forget_sessions(prepared)
            raise
        return prepared

    def _save_sessions(self, conn: Any, addresses: set[tuple[bytes, int]]) -> None:
        now = int(self._clock())
        for address in addresses:
            sessions = self._sessions.get(address)
            if sessions:
                conn.execute(
                    "INSERT OR REPLACE INTO sessions (account_id, device_id, state, updated) "
                    "VALUES (?, ?, ?, ?)",
                    (*address, encode_sessions(sessions), now),
                )

    async def _sealed_socket(self) -> SealedSocket:
        if self._sealed is None or not self._sealed.alive:
            self._sealed = await self._transport.open_sealed()
        return self._sealed

    async def _finish(self, prepared: list[_Prepared], futures: list[asyncio.Future[int]]) -> None:
        try:
            await self._settle(prepared, futures)
        except Exception as exc:
            _fail([p.item for p in prepared], exc)

    async def _settle(self, prepared: list[_Prepared], futures: list[asyncio.Future[int]]) -> None:
        """Once the server answered a batch: mark what it stored as sent, retry what named
        an outdated device list (re-encrypting for the current one), fail the rest."""
        results = await asyncio.gather(*futures, return_exceptions=True)
        done: list[_Prepared] = []
        retry: list[_Outgoing] = []
        for p, result in zip(prepared, results, strict=True):
            if not isinstance(result, BaseException):
                done.append(p)
            elif isinstance(result, ServerError) and result.code == "mismatched_devices":
                retry.append(p.item)
                async with self._lock:  # it drops sessions: not while a batch encrypts
                    await self._refresh_after_mismatch(p.contact)
            else:
                p.item.future.set_exception(result)
        finished = {id(p) for p in done}
        retried = {id(item) for item in retry}
        with self._store.transaction() as conn:
            # the batch's outbox row goes: stored ones are sent, retried ones are
            # encrypted anew, and refused ones are marked failed
            conn.execute("DELETE FROM outbox WHERE id = ?", (prepared[0].outbox_id,))
            conn.executemany(
                "UPDATE messages SET status = ? WHERE message_uuid = ? AND status = 'sending'",
                [
                    ("sent" if id(p) in finished else "failed", c.message_id)
                    for p in prepared
                    if isinstance(c := p.item.content, TextContent)
                    and (id(p) in finished or id(p.item) not in retried)
                ],
            )
        for p in done:
            if not p.item.future.done():
                p.item.future.set_result(self._message(p) if p.item.store else None)
        for item in retry:
            item.attempts += 1
            if item.attempts > SEND_RETRIES:
                item.future.set_exception(
                    ServerError(409, "mismatched_devices", "the device list keeps changing")
                )
                continue
            await self._queue.put(item)

    def _message(self, p: _Prepared) -> Message:
        content = p.item.content
        assert isinstance(content, TextContent)
        return Message(
            content.message_id,
            p.contact.username,
            True,
            content.text,
            content.sent_at,
            content.sent_at,
            "sent",
        )

    async def _refresh_after_mismatch(self, contact: _ContactRow) -> None:
        with self._store.transaction() as conn:
            conn.execute("DELETE FROM contact_devices WHERE account_id = ?", (contact.account_id,))
        self._contacts_changed()
        await self._resolve(contact.username, refresh=True)
        current = self._contact_by_id(contact.account_id)
        keep = set(current.devices) if current else set()
        with self._store.transaction() as conn:
            for device_id in [d for a, d in self._sessions if a == contact.account_id]:
                if device_id not in keep:
                    self._sessions.pop((contact.account_id, device_id), None)
            conn.execute(
                "DELETE FROM sessions WHERE account_id = ? AND device_id NOT IN "  # noqa: S608 (placeholders only)
                f"({','.join('?' * len(keep)) or 'NULL'})",
                (contact.account_id, *sorted(keep)),
            )

    async def flush_outbox(self) -> int:
        """Send again what a crash left in the outbox (the same bytes: no key is reused;
        receivers drop what they already have). Returns how many sends were completed."""
        rows = self._store.read().execute("SELECT id, payload FROM outbox ORDER BY id").fetchall()
        if not rows:
            return 0
        sock = await self._sealed_socket()
        done = 0
        for outbox_id, payload in rows:
            sends = _outbox_decode(payload)
            futures = [await sock.send(envelopes, tokens) for _, envelopes, tokens in sends]
            results = await asyncio.gather(*futures, return_exceptions=True)
            for result in results:
                if isinstance(result, ServerUnavailable):
                    raise result
                if isinstance(result, ServerError):
                    log.warning("an unsent message was refused on resend: %s", result.code)
            with self._store.transaction() as conn:
                conn.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))
                conn.executemany(
                    "UPDATE messages SET status = ? WHERE message_uuid = ? AND status = 'sending'",
                    [
                        ("failed" if isinstance(result, BaseException) else "sent", uuid)
                        for (uuid, _, _), result in zip(sends, results, strict=True)
                        if uuid
                    ],
                )
            done += len(sends)
        return done

    # ------------------------------------------------------------------ receiving

    async def _open_stream(self) -> Stream:
        if self._stream is None or self._stream.close_code is not None:
            self._stream = await self._transport.open_stream()
        return self._stream

    async def receive(self, wait: float = 0.0) -> list[Event]:
        """Fetch everything queued for this device (waiting up to ``wait`` seconds for at
        least one message), store it, acknowledge it; returns the events in order."""
        await self.flush_outbox()
        stream = await self._open_stream()
        await self._upkeep()
        events: list[Event] = self.take_events()
        deadline = time.monotonic() + wait
        got_message = drained_once = False
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
            got_message = got_message or any(isinstance(e, MessageReceived) for e in new)
            if drained:
                drained_once = True
                if got_message or time.monotonic() >= deadline:
                    break
        await self._flush_receipts_and_prekeys()
        return events + self.take_events()

    @staticmethod
    async def _drain(stream: Stream, first: Push) -> tuple[list[Push], bool]:
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
        events, self._pending_events = self._pending_events, []
        return events

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
                    push = await stream.next_push(None)
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

    async def _process(self, stream: Stream, pushes: list[Push]) -> list[Event]:
        """Decrypt a batch, commit it in one transaction, then ack it."""
        async with self._lock:
            state = _BatchState()
            processed = self._already_processed([p.server_id for p in pushes])
            try:
                for push in pushes:
                    if push.server_id in processed:  # stored before a crash, not yet acked
                        continue
                    try:
                        await self._open(push, state)
                    except (ProtocolError, UnknownContact) as exc:
                        # a forged, corrupted, replayed or undecryptable message: dropped
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
            for address, sessions in state.sessions.items():
                self._sessions[address] = sessions
            for push in pushes:
                await stream.ack(push.server_id)
            self._receipts_due.update(
                {k: self._receipts_due.get(k, []) + v for k, v in state.reply_to.items()}
            )
            self._prekeys_used += state.prekey_messages
            return state.events

    def _already_processed(self, ids: list[bytes]) -> set[bytes]:
        conn = self._store.read()
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT server_id FROM processed WHERE server_id IN ({marks})", ids)  # noqa: S608 (placeholders only)
        return {row[0] for row in rows}

    def _batch_sessions(self, state: _BatchState, address: tuple[bytes, int]) -> list[Session]:
        if address in state.sessions:
            return state.sessions[address]
        stored = self._load_sessions(address)
        # decrypt into copies so a failed commit leaves the cache as stored
        copies = [Session.from_bytes(s.to_bytes()) for s in stored]
        state.sessions[address] = copies
        return copies

    async def _open(self, push: Push, state: _BatchState) -> None:
        opened = unseal(
            push.body,
            self._device.identity_key,
            server_key=self._server_key,
            now=int(self._clock()),
            verified=self._verified_senders,
        )
        sender = opened.sender
        address = (sender.account_id, sender.device_id)
        contact = state.new_contacts.get(sender.account_id) or self._contact_by_id(
            sender.account_id
        )
        message = opened.message
        sessions = self._batch_sessions(state, address)
        plaintext: bytes | None = None
        if isinstance(message, PreKeyMessage):
            for i, session in enumerate(sessions):
                if session.matches(message):
                    plaintext = session.decrypt(message)
                    sessions.insert(0, sessions.pop(i))
                    break
            else:
                account_key = message.certificate.account_key
                session, plaintext = self._respond(message, state)
                sessions.insert(0, session)
                state.prekey_messages += 1
                contact = await self._contact_for_new_session(
                    contact, sender.account_id, account_key, message.certificate, plaintext, state
                )
        else:
            for i, session in enumerate(sessions):
                try:
                    opened.check_session(session.remote_certificate)
                    plaintext = session.decrypt(message)
                except DuplicateMessage:
                    raise
                except ProtocolError:
                    continue
                sessions.insert(0, sessions.pop(i))
                break
            if plaintext is None:
                raise UnknownContact("no session decrypts this message")
        if contact is None:
            raise UnknownContact("a message from an unknown sender without a first message")
        content = decode_content(plaintext)
        self._absorb(content, contact, sender.device_id, push, state)

    def _respond(self, message: PreKeyMessage, state: _BatchState) -> tuple[Session, bytes]:
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
        contact: _ContactRow | None,
        account_id: bytes,
        account_key: bytes,
        certificate: DeviceCertificate,
        plaintext: bytes,
        state: _BatchState,
    ) -> _ContactRow:
        """The contact a new session (a PreKeyMessage) is with. Its certificate verified
        under the account key it names (:meth:`Session.respond` checked that)."""
        if contact is not None:
            if contact.account_key != account_key:
                state.key_changes[account_id] = account_key
                state.device_certs[account_id] = {}
                contact.account_key = account_key
            state.device_certs.setdefault(account_id, dict(contact.devices))[
                certificate.device_id
            ] = certificate
            contact.devices[certificate.device_id] = certificate
            return contact
        # A sender we do not know: its claimed name must be its name in the directory.
        content = decode_content(plaintext)
        if not isinstance(content, TextContent):
            raise UnknownContact("a first message that is not a text")
        real_id, username, real_key, devices = await self._directory(content.sender_name)
        if real_id != account_id or real_key != account_key:
            raise UnknownContact("a sender whose claimed name is another account's")
        if self._contact_by_name(username) is not None:
            # a contact we know by this name, now another account: a key change
            return await self._resolve(username, refresh=True)
        row = _ContactRow(account_id, username, account_key, False, False, None, devices)
        row.devices[certificate.device_id] = certificate
        state.new_contacts[account_id] = row
        return row

    def _absorb(
        self,
        content: Content,
        contact: _ContactRow,
        device_id: int,
        push: Push,
        state: _BatchState,
    ) -> None:
        state.tokens[contact.account_id] = content.delivery_token
        if isinstance(content, TextContent):
            if content.message_id in state.seen_ids:
                return
            state.seen_ids.add(content.message_id)
            state.messages.append((content, contact.account_id, device_id))
            state.reply_to.setdefault(contact.account_id, []).append(content.message_id)
            now_ms = _now_ms(self._clock)
            state.events.append(
                MessageReceived(
                    Message(
                        content.message_id,
                        contact.username,
                        False,
                        content.text,
                        content.sent_at,
                        now_ms,
                        "received",
                    )
                )
            )
        else:
            state.receipts.append((contact.account_id, content))
            state.events.append(ReceiptReceived(contact.username, content.message_ids))

    def _commit_batch(self, conn: Any, state: _BatchState, pushes: list[Push]) -> bool:
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
        for (account_id, device_id), sessions in state.sessions.items():
            if sessions:
                conn.execute(
                    "INSERT OR REPLACE INTO sessions (account_id, device_id, state, updated) "
                    "VALUES (?, ?, ?, ?)",
                    (account_id, device_id, encode_sessions(sessions), now),
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
        for content, account_id, _device_id in state.messages:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO messages (message_uuid, peer, outgoing, body, sent_at, "
                "received_at, status) VALUES (?, ?, 0, ?, ?, ?, 'received')",
                (content.message_id, account_id, content.text, content.sent_at, now_ms),
            )
            if cursor.rowcount:
                kept.append(content.message_id)
        state.events = [
            e for e in state.events if not isinstance(e, MessageReceived) or e.message.id in kept
        ]
        for account_id, receipt in state.receipts:
            for message_id in receipt.message_ids:
                conn.execute(
                    "UPDATE messages SET status = 'delivered' WHERE message_uuid = ? "
                    "AND peer = ? AND outgoing = 1",
                    (message_id, account_id),
                )
        conn.executemany(
            "INSERT OR IGNORE INTO processed (server_id, at) VALUES (?, ?)",
            [(p.server_id, now) for p in pushes],
        )
        return changed

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
                await self._queue.put(_Outgoing(contact.username, receipt, future, store=False))
                futures.append(future)
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                log.warning("a delivery receipt was not sent: %s", type(result).__name__)
        if self._prekeys_used:
            self._prekeys_used = 0
            await self.maintain_prekeys()

    # ------------------------------------------------------------------ prekeys

    async def _upkeep(self) -> None:
        """Prekey upkeep on connecting, at most every :data:`UPKEEP_INTERVAL`: so a device
        that rarely gets new sessions still rotates its signed prekey weekly."""
        now = time.monotonic()
        if self._last_upkeep is None or now - self._last_upkeep >= UPKEEP_INTERVAL:
            self._last_upkeep = now
            await self.maintain_prekeys()

    async def maintain_prekeys(self) -> None:
        """Refill one-time prekeys when the server says the stock is low, and rotate the
        signed and last-resort prekeys weekly (old ones kept a while for late messages)."""
        status = await self._transport.request("GET", "/v1/keys/status")
        now = int(self._clock())
        body: dict[str, Any] = {}
        next_id = _int(self._store.get_meta("next_prekey_id"), 1000)
        new_rows: list[tuple[str, int, bytes]] = []
        if isinstance(status, dict) and status.get("refill"):
            one_time = [
                OneTimePreKeyPair.generate(next_id + i, rng=self._rng) for i in range(PREKEY_BATCH)
            ]
            kem = [
                self._device.new_kem_prekey(
                    next_id + PREKEY_BATCH + i, KemPreKeyKind.ONE_TIME, now=now, rng=self._rng
                )
                for i in range(PREKEY_BATCH)
            ]
            next_id += 2 * PREKEY_BATCH
            body["one_time_prekeys"] = [b64(k.public.encode()) for k in one_time]
            body["kem_one_time_prekeys"] = [b64(k.public.encode()) for k in kem]
            new_rows += [("otpk", k.key_id, k.to_bytes()) for k in one_time]
            new_rows += [("kem", k.key_id, k.to_bytes()) for k in kem]
        spk_created = _int(self._store.get_meta("spk_created"))
        rotate = now - spk_created >= SPK_ROTATION
        if rotate:
            spk = self._device.new_signed_prekey(next_id, now=now, rng=self._rng)
            kem_lr = self._device.new_kem_prekey(
                next_id + 1, KemPreKeyKind.LAST_RESORT, now=now, rng=self._rng
            )
            next_id += 2
            body["signed_prekey"] = b64(spk.public.encode())
            body["kem_last_resort"] = b64(kem_lr.public.encode())
            new_rows += [
                ("spk", spk.key_id, spk.to_bytes()),
                ("kem_lr", kem_lr.key_id, kem_lr.to_bytes()),
            ]
        if not body:
            return
        # keep the private halves first: a key the server hands out must be answerable
        with self._store.transaction() as conn:
            for kind, key_id, record in new_rows:
                _insert_prekey(conn, kind, key_id, record, now)
            self._store.set_meta(conn, "next_prekey_id", str(next_id).encode())
        await self._transport.request("PUT", "/v1/keys", body=body)
        if rotate:
            with self._store.transaction() as conn:
                self._store.set_meta(conn, "spk_created", str(now).encode())
                # older signed and last-resort keys answer late first messages a while
                conn.execute(
                    "DELETE FROM prekeys WHERE kind IN ('spk', 'kem_lr') AND created < ?",
                    (now - SPK_RETENTION,),
                )

    # ------------------------------------------------------------------ passcode

    def change_passcode(self, old: str, new: str) -> None:
        self._store.change_passcode(old, new)


# ---------------------------------------------------------------------- rows


def _fail(items: Sequence[_Outgoing], exc: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)


def _remove_profile(profile: Path) -> None:
    """Undo a profile whose registration failed: only the files the store made."""
    for name in ("keyfile.json", "profile.db", "profile.db-wal", "profile.db-shm"):
        with contextlib.suppress(FileNotFoundError):
            (profile / name).unlink()
    with contextlib.suppress(OSError):
        profile.rmdir()


def _insert_prekey(conn: Any, kind: str, key_id: int, record: bytes, now: int) -> None:
    conn.execute(
        "INSERT INTO prekeys (kind, key_id, record, created) VALUES (?, ?, ?, ?)",
        (kind, key_id, record, now),
    )


def _replace_devices(conn: Any, account_id: bytes, devices: dict[int, DeviceCertificate]) -> None:
    conn.execute("DELETE FROM contact_devices WHERE account_id = ?", (account_id,))
    conn.executemany(
        "INSERT INTO contact_devices (account_id, device_id, certificate) VALUES (?, ?, ?)",
        [(account_id, d, cert.encode()) for d, cert in devices.items()],
    )


def _outbox_add(conn: Any, prepared: list[_Prepared]) -> int:
    """One outbox row for a batch: every send's envelopes and tokens, in order."""
    payload = json.dumps(
        [
            {
                "uuid": p.item.content.message_id.hex()
                if isinstance(p.item.content, TextContent)
                else "",
                "messages": [[a.hex(), d, b64(body)] for a, d, body in p.envelopes],
                "tokens": {p.contact.account_id.hex(): b64(p.contact.delivery_token)}
                if p.contact.delivery_token
                else {},
            }
            for p in prepared
        ]
    ).encode()
    cursor = conn.execute(
        "INSERT INTO outbox (message_uuid, payload) VALUES (?, ?)", (b"", payload)
    )
    return int(cursor.lastrowid)


Outboxed = tuple[bytes, list[tuple[bytes, int, bytes]], dict[bytes, bytes]]


def _outbox_decode(payload: bytes) -> list[Outboxed]:
    try:
        out: list[Outboxed] = []
        for doc in json.loads(payload):
            envelopes = [(bytes.fromhex(a), int(d), unb64(b)) for a, d, b in doc["messages"]]
            tokens = {bytes.fromhex(a): unb64(t) for a, t in doc["tokens"].items()}
            out.append((bytes.fromhex(doc["uuid"]), envelopes, tokens))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecodeError("a corrupt outbox entry") from exc
    return out
