"""The composition root: every client service, built once from one
:class:`~sealpost.client.context.ClientContext` and wired to the others' methods.

:func:`context` reads this device's identity from an unlocked store (and makes the
transport to its server unless one is given); :func:`assemble` builds the service graph
and returns it as :class:`Services`, which :class:`~sealpost.client.Client` (the facade)
holds. Nothing here does any work of its own: each line hands a service what it needs,
and state two services share (the sessions held in memory, the senders whose logged
entries were checked in this process) is made here and passed to both.

Where two services need each other (the directory asks key transparency for proofs, and
monitoring looks contacts up again through the directory; the groups service queues sends
on the sender loop, which drops the group chains after a failed commit), the one built
first is handed a small function defined here that calls the other once it exists, so
that no service calls back into ``Client``.

Example::

    ctx = context(store, rng=os.urandom, clock=time.time)
    services = assemble(ctx)
    await services.messaging.send("bob", "hello")
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sealpost.client.context import ClientContext
from sealpost.client.errors import NotRegistered
from sealpost.client.relay import RelayTransport
from sealpost.client.rows import ContactRow, Outgoing
from sealpost.client.services.attachments import Attachments
from sealpost.client.services.batch_commit import BatchCommitter, OwnerWrites
from sealpost.client.services.conversations import Conversations
from sealpost.client.services.delivery import DeliveryPeers
from sealpost.client.services.device_changes import DeviceChanges
from sealpost.client.services.devices import OwnDevices
from sealpost.client.services.directory import Directory
from sealpost.client.services.group_encryptor import GroupEncryptor
from sealpost.client.services.group_receive import GroupReceiver
from sealpost.client.services.groups import GroupService
from sealpost.client.services.linking import Linking
from sealpost.client.services.messaging import Messaging
from sealpost.client.services.monitoring import Monitoring
from sealpost.client.services.opening import GroupHandlers, Opener
from sealpost.client.services.pairwise import PairwiseEncryptor, SessionCache
from sealpost.client.services.pending import PendingSends
from sealpost.client.services.prekeys import Prekeys, Upkeep
from sealpost.client.services.receiving import Fetchers, Hooks, Receiver
from sealpost.client.services.search import Search
from sealpost.client.services.senders import Senders
from sealpost.client.services.sending import Sending, SendPeers
from sealpost.client.services.transcripts import Transcripts
from sealpost.client.services.transparency import KeyTransparency
from sealpost.client.store import Store
from sealpost.client.transport import Identity, Transport
from sealpost.crypto.sign import VerifyKey
from sealpost.entropy import Rng
from sealpost.protocol import AccountIdentity, DeviceKeys

__all__ = ["Services", "assemble", "context"]


@dataclass(frozen=True, slots=True)
class Services:
    """The services of one unlocked profile (each module's docstring says what it does)."""

    directory: Directory
    conversations: Conversations
    messaging: Messaging
    search: Search
    sending: Sending
    pending: PendingSends
    receiver: Receiver
    groups: GroupService
    attachments: Attachments
    devices: OwnDevices
    device_changes: DeviceChanges
    linking: Linking
    monitoring: Monitoring
    prekeys: Prekeys


def context(
    store: Store,
    *,
    rng: Rng,
    clock: Callable[[], float],
    transport: RelayTransport | None = None,
) -> ClientContext:
    """This device's identity as ``store`` holds it, with the transport to its server
    (by default a :class:`Transport` acting as this device); :class:`NotRegistered` if the
    profile has no account."""
    url = store.get_meta("server_url")
    account_raw = store.get_meta("account")
    device_raw = store.get_meta("device")
    if url is None or account_raw is None or device_raw is None:
        raise NotRegistered("this profile has no account")
    server_url = url.decode()
    account = AccountIdentity.from_bytes(account_raw)
    device = DeviceKeys.from_bytes(device_raw)
    identity = Identity(device.signing_key, account.account_id, device.device_id)
    return ClientContext(
        store=store,
        transport=transport or Transport(server_url, identity, clock=clock, rng=rng),
        account=account,
        device=device,
        username=(store.get_meta("username") or b"").decode(),
        server_url=server_url,
        server_key=VerifyKey.from_public_bytes(store.get_meta("server_key") or b""),
        delivery_token=store.get_meta("delivery_token") or b"",
        clock=clock,
        rng=rng,
    )


def assemble(ctx: ClientContext) -> Services:
    """Build every service of the client on ``ctx`` (see the module docstring)."""
    sessions: SessionCache = {}  # stepped by the send and the receive pipelines
    verified_senders: set[bytes] = set()  # senders whose logged entry was checked

    # the later half of each pair that needs the other (defined below)
    async def transparency() -> KeyTransparency:
        return await monitoring.transparency()

    def requeue(item: Outgoing) -> None:
        sending.requeue(item)

    def spawn(work: Coroutine[Any, Any, None]) -> None:
        sending.delivery.spawn(work)

    encryptor = PairwiseEncryptor(ctx, sessions)
    directory = Directory(ctx, transparency=transparency, forget_sessions=encryptor.forget_device)

    def contacts() -> Iterable[ContactRow]:
        return directory.cache().values()

    monitoring = Monitoring(ctx, contacts=contacts, lookup=partial(directory.resolve, refresh=True))
    conversations = Conversations(ctx, directory)
    devices = OwnDevices(ctx, monitoring, forget_session=encryptor.forget_device)
    attachments = Attachments(ctx)
    groups = GroupService(
        ctx,
        attachments,
        resolve=directory.resolve,
        name_of=conversations.name_of,
        timer=conversations.timer_of,
        own_row=devices.own_row,
        enqueue=requeue,
        spawn=spawn,
    )

    transcripts = Transcripts(encryptor, own_row=devices.own_row, gossip=monitoring.gossip)
    group_encryptor = GroupEncryptor(
        ctx,
        groups,
        resolve=directory.resolve,
        contact_by_id=directory.by_id,
        pairwise=encryptor.encrypt,
        transcript=transcripts.of,
        gossip=monitoring.gossip,
    )
    sending = Sending(
        ctx,
        encryptor,
        transcripts,
        SendPeers(
            resolve=directory.resolve,
            own_row=devices.own_row,
            gossip=monitoring.gossip,
            prepare_group=group_encryptor.prepare,
            forget_group_chains=groups.chains.held.clear,  # reloaded from the store
            emit=ctx.events.emit,
        ),
        DeliveryPeers(
            resolve=lambda name, refresh: directory.resolve(name, refresh=refresh),
            contact_by_id=directory.by_id,
            refresh_own_devices=devices.refresh,
            name_of=conversations.name_of,
            group_name=groups.name,
        ),
    )
    pending = PendingSends(
        ctx,
        conversations,
        put=sending.put,
        flush_outbox=sending.delivery.flush_outbox,
        group_name=groups.name,
    )
    prekeys = Prekeys(ctx)
    senders = Senders(
        ctx,
        contact_by_id=directory.by_id,
        contact_by_name=directory.by_name,
        group=groups.get,
        member_name=groups.member_name,
    )
    group_receiver = GroupReceiver(
        ctx,
        groups,
        attachments,
        verified_senders=verified_senders,
        new_contact=senders.new_contact,
        absorb_conversation=senders.conversation,
        transparency=monitoring.transparency,
    )
    opener = Opener(
        ctx,
        senders,
        GroupHandlers(
            open_sealed=group_receiver.open_sealed,
            open_multi=group_receiver.open_multi,
            absorb_update=group_receiver.absorb_update,
            sender_key=group_receiver.absorb_sender_key,
            answer_request=group_receiver.answer_request,
            group=groups.get,
        ),
        verified_senders=verified_senders,
        load_sessions=encryptor.load,
        contact_by_id=directory.by_id,
        own_row=lambda state: devices.own_row(state.own_devices),
    )
    committer = BatchCommitter(
        ctx,
        OwnerWrites(
            note_key_change=directory.note_key_change,
            forget_own_device=devices.forget_own,
            record_revocation=devices.record_revocation,
        ),
        contact_by_id=directory.by_id,
        group=groups.get,
    )

    def local_changed() -> None:  # timers or this account's device list may have changed
        conversations.timers_changed()
        devices.changed()

    receiver = Receiver(
        ctx,
        opener,
        committer,
        Fetchers(
            lookup=directory.lookup,
            refresh=partial(directory.resolve, refresh=True),
            download=attachments.download_bytes,
        ),
        Hooks(
            flush_outbox=pending.send_all,
            upkeep=Upkeep(ctx, prekeys, monitoring).run,
            maintain_prekeys=prekeys.maintain,
            transparency=monitoring.transparency,
            enqueue=sending.put,
            queue_group_sends=groups.send_replies,
            contact_by_id=directory.by_id,
            contacts_changed=directory.changed,
            local_changed=local_changed,
            next_monitor=lambda: monitoring.next_due,
        ),
        sessions=sessions,
    )
    return Services(
        directory=directory,
        conversations=conversations,
        messaging=Messaging(ctx, conversations, directory, attachments, sending, pending),
        search=Search(
            ctx,
            conversations,
            groups=groups.views,
            contacts=lambda: {c.account_id: c.username for c in directory.contacts()},
        ),
        sending=sending,
        pending=pending,
        receiver=receiver,
        groups=groups,
        attachments=attachments,
        devices=devices,
        device_changes=DeviceChanges(ctx, devices, enqueue=sending.enqueue, contacts=contacts),
        linking=Linking(ctx, devices, monitoring, contacts=contacts),
        monitoring=monitoring,
        prekeys=prekeys,
    )
