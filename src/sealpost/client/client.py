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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sealpost.client.errors import ClientError
from sealpost.client.records import Contact, Event, GroupView, Message
from sealpost.client.relay import RelayTransport
from sealpost.client.services.assembly import assemble, context
from sealpost.client.services.conversations import ConversationSummary
from sealpost.client.services.directory import contact_view
from sealpost.client.services.linking import join_account
from sealpost.client.services.registration import create_account
from sealpost.client.services.search import SearchHit
from sealpost.client.store import LOCK_TIMEOUT, KdfParams, Store
from sealpost.client.store.alarms import Alarm
from sealpost.entropy import Rng, system_rng

__all__ = ["Client"]


class Client:
    """A profile, unlocked. Create with :meth:`create` or :meth:`open`; close when done.

    A facade: each call is one service's (:mod:`sealpost.client.services`, built by
    :mod:`.services.assembly`)."""

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
        self._ctx = context(store, rng=rng, clock=clock, transport=transport)
        self._services = assemble(self._ctx)
        self.server_url = self._ctx.server_url

    def __repr__(self) -> str:
        return f"Client(username={self.username!r}, device={self.device_id})"

    # -- lifecycle (services/registration.py, services/linking.py)

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
        store, _ = await join_account(
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
        await client._services.device_changes.announce(device_name)
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
        services = self._services
        await services.receiver.stop_receipts()
        await services.sending.close()
        await services.receiver.disconnect()
        await self._ctx.transport.close()
        self._ctx.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def link_accept(
        self,
        code_text: str,
        confirm: Callable[[str, str], bool | Awaitable[bool]],
    ) -> int:
        """Provision the new device that shows ``code_text``: ``confirm(device name,
        confirmation code)`` must return true (the user compared the code with the one on
        the new device). Sends it the account key, contacts, groups and timers, sealed to
        its keys; returns the device id it will take."""
        return await self._services.linking.accept(code_text, confirm)

    def change_passcode(self, old: str, new: str) -> None:
        self._ctx.store.change_passcode(old, new)

    # -- facts

    @property
    def username(self) -> str:
        """The name this account answers to (what its messages say it is)."""
        return self._ctx.username

    @username.setter
    def username(self, name: str) -> None:
        self._ctx.username = name

    @property
    def account_id(self) -> bytes:
        return self._ctx.account_id

    @property
    def device_id(self) -> int:
        return self._ctx.device_id

    @property
    def account_key(self) -> bytes:
        return self._ctx.account.public_key().public_bytes_raw()

    @property
    def store(self) -> Store:
        return self._ctx.store

    def whoami(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "server": self.server_url,
            "account_id": self.account_id.hex(),
            "device_id": self.device_id,
        }

    # -- contacts and trust (services/directory.py)

    def contacts(self) -> list[Contact]:
        return self._services.directory.contacts()

    def safety_number(self, name: str) -> str:
        return self._services.directory.safety_number(name)

    def safety_qr_payload(self, name: str) -> bytes:
        """What the QR code beside the safety number encodes (scanned to compare)."""
        return self._services.directory.safety_qr_payload(name)

    async def lookup(self, name: str) -> Contact:
        """Fetch ``name`` from the server's directory (pinning its key on first use)."""
        return contact_view(await self._services.directory.resolve(name, refresh=True))

    def verify(self, name: str) -> None:
        """Mark ``name``'s current safety number as checked by the user."""
        self._services.directory.verify(name)

    def acknowledge_key_change(self, name: str) -> None:
        """Dismiss the warning for an unverified contact's new key (shown once)."""
        self._services.directory.acknowledge_key_change(name)

    # -- conversations and history (services/conversations.py, services/search.py)

    def is_group(self, name: str) -> bool:
        """Whether ``name`` addresses a group (``#name``, or a name no contact has)."""
        return self._services.conversations.is_group(name)

    def timer(self, name: str) -> int:
        """The disappearing-message timer of a conversation, in seconds (0: off)."""
        return self._services.conversations.timer(name)

    def history(self, name: str, limit: int = 1000) -> list[Message]:
        """The last ``limit`` messages of a conversation (a contact or a group), oldest
        first; expired disappearing messages are gone."""
        return self._services.conversations.history(name, limit)

    def page(
        self, name: str, *, before: bytes | None = None, after: bytes | None = None, limit: int = 50
    ) -> list[Message]:
        """A page of a conversation (services/conversations.py: keyset pages)."""
        return self._services.conversations.page(name, before=before, after=after, limit=limit)

    def conversations(self, read: Mapping[str, int] | None = None) -> list[ConversationSummary]:
        """The conversation list, unread counts after ``read`` marks (services/conversations.py)."""
        services = self._services
        return services.conversations.overview(services.groups.views(), read or {})

    def expire(self) -> int:
        """Delete the disappearing messages whose time is up (and the files saved from
        their attachments). Returns how many went."""
        return self._services.conversations.expire()

    def search(
        self, text: str, *, conversation: str | None = None, limit: int = 50
    ) -> list[SearchHit]:
        """Local full-text search (:mod:`sealpost.client.services.search`)."""
        return self._services.search.search(text, conversation=conversation, limit=limit)

    # -- sending (services/messaging.py, then services/sending.py and delivery.py)

    async def send(
        self,
        name: str,
        text: str = "",
        *,
        file: Path | str | None = None,
        progress: Callable[[int, int], None] | None = None,
        queue_offline: bool = False,
    ) -> Message:
        """Encrypt ``text`` (and ``file``, uploaded first as an encrypted attachment) to
        every device of ``name`` (a contact, or a group: see :meth:`history`) and to this
        account's other devices; return once the server has stored it. Raises
        :class:`UnknownContact`, :class:`UntrustedContact` or a :class:`TransportError`;
        on any error the message is not marked sent.

        ``queue_offline``: when the server cannot be reached (:class:`ServerUnavailable`),
        a text without a file to a known conversation is kept in the profile instead and
        returned as ``"sending"``; it is encrypted and sent when the client next connects
        (:meth:`receive`, :meth:`events`, :meth:`flush_outbox`, the next :meth:`send`),
        or becomes ``"failed"`` with a :class:`SendFailed` event if the contact turns out
        unknown or untrusted (:mod:`.services.pending`)."""
        return await self._services.messaging.send(
            name, text, file=file, progress=progress, queue_offline=queue_offline
        )

    def waiting(self) -> int:
        """How many messages wait to be sent: written while the server could not be
        reached (``send(..., queue_offline=True)``), or encrypted and not yet answered for
        (sent again with the next connection)."""
        return self._services.pending.count()

    async def set_timer(self, name: str, seconds: int) -> None:
        """Set the disappearing-message timer of a conversation (0 turns it off). Applied
        on every device of every member: messages sent after it disappear ``seconds``
        after they were sent (sender) or received (recipients)."""
        await self._services.messaging.set_timer(name, seconds)

    async def delete_for_everyone(self, name: str, message_id: bytes) -> None:
        """Delete a message this account sent, here and on every recipient's devices."""
        await self._services.messaging.delete_for_everyone(name, message_id)

    async def flush_outbox(self) -> int:
        """Send again what a crash left in the outbox (the same bytes: no key is reused;
        receivers drop what they already have), then what was kept while the server could
        not be reached (``send(..., queue_offline=True)``). Returns how many sends were
        completed; raises :class:`ServerUnavailable` if the server cannot be reached."""
        return await self._services.pending.send_all()

    # -- receiving (services/receiving.py)

    async def receive(self, wait: float = 0.0) -> list[Event]:
        """Fetch everything queued for this device (waiting up to ``wait`` seconds for at
        least one message), store it, acknowledge it; returns the events in order."""
        return await self._services.receiver.receive(wait)

    def take_events(self) -> list[Event]:
        """Events noticed outside :meth:`receive` and :meth:`events` (a key change seen
        while sending), each returned once."""
        return self._ctx.events.take()

    def events(self) -> AsyncIterator[Event]:
        """Every event as it happens, staying connected (reconnecting with backoff)."""
        return self._services.receiver.events()

    async def maintain_prekeys(self) -> None:
        """Refill one-time prekeys when the server says the stock is low, and rotate the
        signed and last-resort prekeys weekly (:mod:`.services.prekeys`)."""
        await self._services.prekeys.maintain()

    # -- groups (services/groups.py)

    def groups(self) -> list[GroupView]:
        """Every group this account is or was in."""
        return self._services.groups.views()

    async def create_group(self, name: str, members: Sequence[str]) -> GroupView:
        """A new group of this account (its admin) and ``members`` (usernames); every
        member's devices are told, pairwise. The server learns nothing of it."""
        return await self._services.groups.create(name, members)

    async def group_add(self, group: str, members: Sequence[str]) -> GroupView:
        return await self._services.groups.add(group, members)

    async def group_remove(self, group: str, members: Sequence[str]) -> GroupView:
        """Remove members: every remaining member's devices rotate their sender keys
        before their next message, so the removed cannot read what follows."""
        return await self._services.groups.remove(group, members)

    async def group_rename(self, group: str, name: str) -> GroupView:
        return await self._services.groups.rename(group, name)

    async def group_leave(self, group: str) -> GroupView:
        return await self._services.groups.leave(group)

    # -- attachments (services/attachments.py)

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
        return await self._services.attachments.save(message_id, directory, progress=progress)

    # -- key transparency (services/monitoring.py)

    @property
    def monitor_grace(self) -> float:
        """Seconds a log entry naming a device this account does not know may wait for the
        sibling's announcement of it before it is an alarm."""
        return self._services.monitoring.grace

    @monitor_grace.setter
    def monitor_grace(self, seconds: float) -> None:
        self._services.monitoring.grace = seconds

    @property
    def monitor_interval(self) -> float:
        """Seconds between checks of this account's log entries while connected."""
        return self._services.monitoring.interval

    @monitor_interval.setter
    def monitor_interval(self, seconds: float) -> None:
        self._services.monitoring.interval = seconds

    async def diagnose_refusal(self) -> ClientError | None:
        """After the server refused this device's signature (``unauthorized``): the error
        that says why, if the server's public answers tell (:mod:`.diagnose`)."""
        return await self._services.monitoring.diagnose_refusal()

    def log_head(self) -> dict[str, Any] | None:
        """The newest signed tree head this device has checked (what it gossips)."""
        return self._services.monitoring.log_head()

    def alarms(self, *, include_dismissed: bool = False) -> list[Alarm]:
        """Key-transparency alarms, oldest first (they stay until dismissed)."""
        return self._services.monitoring.alarms(include_dismissed=include_dismissed)

    async def dismiss_alarms(self, alarm_ids: Sequence[int] | None = None) -> int:
        """Dismiss these alarms (all with ``None``); returns how many were dismissed."""
        return self._services.monitoring.dismiss_alarms(alarm_ids)

    async def monitor(self) -> int:
        """Check this account's key-transparency entries since the last check, retry the
        gossiped heads not yet proven, look a few contacts up again; returns how many
        entries were checked (:mod:`.services.monitoring`)."""
        return await self._services.monitoring.monitor()

    # -- own devices (services/devices.py, services/device_changes.py)

    async def refresh_devices(self) -> None:
        """Fetch this account's device list again (after a change or a refused send)."""
        await self._services.devices.refresh()

    async def devices(self) -> list[dict[str, Any]]:
        """This account's devices (certified by its key), this one marked ``current``."""
        return await self._services.devices.list()

    async def remove_device(self, device_id: int) -> None:
        """Revoke another device of this account: the account key signs a revocation,
        the server deletes the device, contacts stop encrypting to it, and this
        account's other devices are told."""
        await self._services.device_changes.remove(device_id)
