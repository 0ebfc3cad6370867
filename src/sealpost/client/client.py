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
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from sealpost.client.context import ClientContext
from sealpost.client.errors import (
    MAX_SEND_TEXT,
    ClientError,
    MessageTooLarge,
    NotRegistered,
    UnknownContact,
)
from sealpost.client.futures import future as _future
from sealpost.client.records import (
    Contact,
    Event,
    GroupView,
    Message,
)
from sealpost.client.relay import RelayTransport
from sealpost.client.rows import (
    AttachmentRow,
    BatchState,
    ContactRow,
    Envelopes,
    GroupRow,
    Outgoing,
    Prepared,
)
from sealpost.client.services.attachments import Attachments
from sealpost.client.services.batch_commit import BatchCommitter, OwnerWrites
from sealpost.client.services.conversations import Conversations, ConversationSummary
from sealpost.client.services.delivery import DeliveryPeers
from sealpost.client.services.devices import OwnDevices
from sealpost.client.services.directory import Directory, Lookup, contact_view
from sealpost.client.services.group_encryptor import GroupEncryptor
from sealpost.client.services.group_receive import GroupReceiver
from sealpost.client.services.groups import GroupService
from sealpost.client.services.linking import Linking, join_account
from sealpost.client.services.monitoring import Monitoring
from sealpost.client.services.opening import GroupHandlers, Opener
from sealpost.client.services.pairwise import PairwiseEncryptor, SessionCache
from sealpost.client.services.prekeys import Prekeys, Upkeep
from sealpost.client.services.receiving import Fetchers, Hooks, Receiver
from sealpost.client.services.registration import create_account
from sealpost.client.services.search import Search, SearchHit
from sealpost.client.services.senders import Senders
from sealpost.client.services.sending import Sending, SendPeers
from sealpost.client.services.transparency import KeyTransparency
from sealpost.client.store import LOCK_TIMEOUT, KdfParams, Store
from sealpost.client.store.alarms import Alarm
from sealpost.client.transport import (
    Identity,
    Push,
    Transport,
)
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng, system_rng
from sealpost.protocol import (
    AccountIdentity,
    DeviceKeys,
    SessionRecord,
)
from sealpost.protocol.content import (
    DEVICE_LINKED,
    MAX_TIMER,
    DeleteContent,
    DeviceNotice,
    GroupStateRequest,
    GroupUpdateContent,
    TextContent,
    TimerContent,
)
from sealpost.protocol.wire import DeviceCertificate, SenderCertificate

__all__ = ["Client"]

log = logging.getLogger("sealpost.client")

BATCH = 256  # sends or pushes handled in one transaction


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
        self._delivering = self._sending.delivery.delivering  # for callers in other sections
        self._verified_senders: set[bytes] = set()
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
        self._senders = Senders(
            self._ctx,
            contact_by_id=self._contact_by_id,
            contact_by_name=self._contact_by_name,
            group=self._batch_group,
            member_name=self._member_name,
        )
        opener = Opener(
            self._ctx,
            self._senders,
            GroupHandlers(
                open_sealed=self._open_group_sealed,
                open_multi=self._open_group_message,
                absorb_update=self._absorb_group_update,
                sender_key=self._absorb_sender_key,
                answer_request=self._answer_group_request,
                group=self._batch_group,
            ),
            verified_senders=self._verified_senders,
            load_sessions=self._load_sessions,
            contact_by_id=self._contact_by_id,
            own_row=self._own_row,
        )
        committer = BatchCommitter(
            self._ctx,
            OwnerWrites(
                note_key_change=self._trust.note_key_change,
                forget_own_device=self._devices.forget_own,
                record_revocation=self._devices.record_revocation,
            ),
            contact_by_id=self._contact_by_id,
            group=self._batch_group,
        )
        self._receiver = Receiver(
            self._ctx,
            opener,
            committer,
            Fetchers(
                lookup=self._directory,
                refresh=partial(self._resolve, refresh=True),
                download=self._attachments.download_bytes,
            ),
            Hooks(
                flush_outbox=self.flush_outbox,
                upkeep=self._upkeep,
                maintain_prekeys=self.maintain_prekeys,
                transparency=self._transparency,
                enqueue=self._enqueue_control,
                queue_group_sends=self._queue_group_sends,
                contact_by_id=self._contact_by_id,
                contacts_changed=self._contacts_changed,
                local_changed=self._local_changed,
                next_monitor=lambda: self._next_monitor,
            ),
            sessions=self._sessions,
        )
        self._linking = Linking(
            self._ctx,
            self._devices,
            self._monitoring,
            contacts=lambda: self._contact_cache().values(),
        )

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
        If the server refuses, no profile is left behind (:mod:`.services.registration`)."""
        store = await create_account(
            Path(profile),
            passcode,
            server_url=server_url.rstrip("/"),
            username=username,
            device_name=device_name,
            params=params,
            wipe_after=wipe_after,
            invite=invite,
            rng=rng,
            clock=clock,
        )
        return cls(store, rng=rng, clock=clock)

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
        account key, contacts and groups, registers, and tells the other devices
        (:mod:`.services.linking`)."""
        store, payload = await join_account(
            Path(profile),
            passcode,
            server_url=server_url.rstrip("/"),
            device_name=device_name,
            show=show,
            timeout=timeout,
            params=params,
            wipe_after=wipe_after,
            rng=rng,
            clock=clock,
        )
        client = cls(store, rng=rng, clock=clock)
        try:
            await client._devices.refresh()
            notice = DeviceNotice(
                client._ctx.now_ms(), DEVICE_LINKED, payload.device_id, device_name
            )
            await client._devices.notify_own(notice)
        except ClientError as exc:
            log.warning("could not tell the other devices about this one: %s", type(exc).__name__)
        return client

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
        await self._receiver.stop_receipts()
        await self._sending.close()
        if self._receiver.stream is not None:
            with contextlib.suppress(Exception):
                await self._receiver.stream.close()
        self._receiver.stream = None
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

    def page(
        self, name: str, *, before: bytes | None = None, after: bytes | None = None, limit: int = 50
    ) -> list[Message]:
        """A page of a conversation (services/conversations.py: keyset pages)."""
        return self._conversations.page(name, before=before, after=after, limit=limit)

    def conversations(self, read: Mapping[str, int] | None = None) -> list[ConversationSummary]:
        """The conversation list, unread counts after ``read`` marks (services/conversations.py)."""
        return self._conversations.overview(self._groups.views(), read or {})

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
        with self._store.unit() as repos:
            repos.messages.set_timer(peer, seconds)
        self._local_changed()

    async def delete_for_everyone(self, name: str, message_id: bytes) -> None:
        """Delete a message this account sent, here and on every recipient's devices."""
        peer, _, group = self._conversation(name)
        if not self._store.repos().messages.is_outgoing(message_id, peer):
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
        with self._store.unit() as repos:
            repos.messages.delete(message_ids, peer)

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
    # The pipeline is services/receiving.py (two phases: fetch, then open and commit under
    # the lock), opening.py (one push), senders.py (whom it is from), absorb.py (pure) and
    # batch_commit.py (one unit of work).

    async def receive(self, wait: float = 0.0) -> list[Event]:
        """Fetch everything queued for this device (waiting up to ``wait`` seconds for at
        least one message), store it, acknowledge it; returns the events in order."""
        return await self._receiver.receive(wait)

    def take_events(self) -> list[Event]:
        """Events noticed outside :meth:`receive` and :meth:`events` (a key change seen
        while sending), each returned once."""
        return self._ctx.events.take()

    def events(self) -> AsyncIterator[Event]:
        """Every event as it happens, staying connected (reconnecting with backoff)."""
        return self._receiver.events()

    async def _new_contact(
        self,
        name: str,
        account_id: bytes,
        account_key: bytes | None,
        state: BatchState,
        certificate: DeviceCertificate | None = None,
    ) -> ContactRow:  # delegate
        return self._senders.new_contact_now(name, account_id, account_key, state, certificate)

    def _absorb_conversation(
        self,
        content: TextContent | TimerContent | DeleteContent,
        peer: bytes,
        author: bytes,
        outgoing: bool,
        state: BatchState,
    ) -> None:  # delegate
        self._senders.conversation(content, peer, author, outgoing, state)

    def _batch_group(self, group_id: bytes, state: BatchState) -> GroupRow | None:
        return state.groups.get(group_id) or self._group(group_id)  # new in this batch, too

    async def _enqueue_control(self, item: Outgoing) -> None:
        self._start_sender()
        await self._queue.put(item)

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

    async def refresh_devices(self) -> None:
        """Fetch this account's device list again (after a change or a refused send)."""
        await self._devices.refresh()

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
        return await self._linking.accept(code_text, confirm)

    # ------------------------------------------------------------------ passcode

    def change_passcode(self, old: str, new: str) -> None:
        self._store.change_passcode(old, new)
