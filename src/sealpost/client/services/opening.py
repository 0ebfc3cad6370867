"""Opening one push of a receive batch: unseal it, decrypt it in its sender's sessions,
decide whom it is from, and absorb what it says into the batch state.

No network call and no commit happen here (this runs under the batch lock): what a
message needs from the network (a new sender's directory entry, a group state blob) is
read from the batch's :class:`~sealpost.client.inbox.Prefetched`, which raises
:class:`~sealpost.client.inbox.Missing` for what is not fetched yet; the pipeline then
fetches it without the lock and opens the batch again (:mod:`.receiving`).

- **Sealed sender** (:func:`~sealpost.protocol.unseal`): the server's certificate says
  which device sent the message; the ratchet message inside decrypts only in a session
  with that device (:class:`~sealpost.protocol.SessionRecord`: the current session, then
  the previous ones; the one that decrypts is promoted).
- **A first message** (a PreKeyMessage no session holds) starts a new session with this
  device's prekeys (the one-time ones are used up with the batch). Its certificate proves
  nothing by itself (the server signs sender certificates for anything), so a device or
  account key not pinned for the contact is accepted only if the contact's directory
  entry, checked against the log, holds exactly it; else the message is dropped with a
  ``directory_mismatch`` alarm. A sender not known at all must name itself, and the
  directory must give that name this account and key.
- **Absorbing** is pure (:mod:`.absorb`); group contents go to the group receiver.

Failures are the message's own (:mod:`sealpost.client.inbox`): a protocol error, a
:class:`~sealpost.client.errors.TransparencyFailure`, or a
:class:`~sealpost.client.inbox.DropMessage`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sealpost.client.context import ClientContext
from sealpost.client.groupkeys import GROUP_SEALED_PREFIX, MULTI_SEALED_PREFIX
from sealpost.client.inbox import DropMessage
from sealpost.client.rows import BatchState, ContactRow, GroupRow
from sealpost.client.services import absorb
from sealpost.client.services.senders import Senders
from sealpost.client.transport import Push
from sealpost.protocol import (
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
    Content,
    DeleteContent,
    DeviceNotice,
    GroupStateRequest,
    GroupUpdateContent,
    SenderKeyContent,
    SentTranscript,
    TextContent,
    TimerContent,
    decode_content_with_gossip,
    decode_unpadded,
)
from sealpost.protocol.errors import InvalidMessage, UnknownPreKey

__all__ = ["GroupHandlers", "Opener"]

Address = tuple[bytes, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupHandlers:
    """The group receiver's entry points a pairwise batch calls (the group owner's code)."""

    open_sealed: Callable[[Push, BatchState], Awaitable[None]]
    open_multi: Callable[[Push, BatchState], Awaitable[None]]
    absorb_update: Callable[[GroupUpdateContent, ContactRow, int, BatchState], Awaitable[None]]
    sender_key: Callable[[bytes, bytes, int, BatchState], None]
    answer_request: Callable[[GroupStateRequest, ContactRow, BatchState], None]
    group: Callable[[bytes, BatchState], GroupRow | None]


class Opener:
    """Opens pushes into a batch state (see the module docstring)."""

    def __init__(
        self,
        ctx: ClientContext,
        senders: Senders,
        groups: GroupHandlers,
        *,
        verified_senders: set[bytes],
        load_sessions: Callable[[Address], SessionRecord],
        contact_by_id: Callable[[bytes], ContactRow | None],
        own_row: Callable[[BatchState], ContactRow],
    ) -> None:
        self._ctx = ctx
        self._senders = senders
        self._groups = groups
        self._verified = verified_senders
        self._load_sessions = load_sessions
        self._contact_by_id = contact_by_id
        self._own_row = own_row

    async def open(self, push: Push, state: BatchState) -> None:
        """Open one push into ``state`` (or raise: the message's fault or not, see
        :mod:`sealpost.client.inbox`)."""
        if push.body[:2] == GROUP_SEALED_PREFIX:
            await self._groups.open_sealed(push, state)
            return
        if push.body[:2] == MULTI_SEALED_PREFIX:
            await self._groups.open_multi(push, state)
            return
        ctx = self._ctx
        opened = unseal(
            push.body,
            ctx.device.identity_key,
            server_key=ctx.server_key,
            now=int(ctx.clock()),
            verified=self._verified,
        )
        sender = opened.sender
        own = sender.account_id == ctx.account_id
        if own and sender.device_id == ctx.device_id:
            raise DropMessage("a message claiming to come from this very device")
        contact = (
            self._own_row(state)
            if own
            else state.new_contacts.get(sender.account_id) or self._contact_by_id(sender.account_id)
        )
        message = opened.message
        sessions = self._sessions(state, (sender.account_id, sender.device_id))
        if isinstance(message, PreKeyMessage):
            plaintext = sessions.decrypt_prekey(message)
            if plaintext is None:
                certificate = message.certificate
                if ctx.store.repos().devices.is_revoked(sender.account_id, sender.device_id):
                    raise DropMessage("a message from a revoked device")
                if own and certificate.account_key != ctx.account.public_key().public_bytes_raw():
                    raise DropMessage("a device of this account not certified by its key")
                session, plaintext = self._respond(message, state)
                state.prekey_messages += 1
                if own:
                    state.own_devices[certificate.device_id] = certificate
                    assert contact is not None
                    contact.devices[certificate.device_id] = certificate
                else:
                    contact = self._senders.for_new_session(
                        contact, sender.account_id, certificate, plaintext, state
                    )
                # only now: a session with a device the log did not confirm is not kept
                sessions.promote(session)
        else:
            plaintext = sessions.decrypt(message, check=opened.check_session)
        if contact is None:
            raise DropMessage("a message from an unknown sender without a first message")
        content, gossip = decode_content_with_gossip(plaintext)
        if gossip is not None:
            state.gossip.setdefault(gossip, contact.username)
        if own:
            await self._absorb_own(content, sender.device_id, state)
        elif not absorb.pairwise(content, contact, now_ms=ctx.now_ms(), state=state):
            await self._absorb_group(content, contact, sender.device_id, state)

    def _sessions(self, state: BatchState, address: Address) -> SessionRecord:
        if address not in state.sessions:
            # decrypt into a copy, so a batch that is not committed leaves the cache as is
            state.sessions[address] = self._load_sessions(address).copy()
        return state.sessions[address]

    def _respond(self, message: PreKeyMessage, state: BatchState) -> tuple[Session, bytes]:
        """A new session from a first message, with the prekeys it names (a one-time one
        at most once in a batch: it is deleted with the batch)."""

        def load(kind: str, key_id: int | None) -> bytes | None:
            if key_id is None or (kind, key_id) in state.used_prekeys:
                return None
            return self._ctx.store.repos().prekeys.get(kind, key_id)

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
            self._ctx.device,
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

    async def _absorb_group(
        self, content: Content, sender: ContactRow, device_id: int, state: BatchState
    ) -> None:
        if isinstance(content, GroupUpdateContent):
            await self._groups.absorb_update(content, sender, device_id, state)
        elif isinstance(content, GroupStateRequest):
            self._groups.answer_request(content, sender, state)
        elif isinstance(content, SenderKeyContent):
            self._groups.sender_key(content.distribution, sender.account_id, device_id, state)
        else:
            raise InvalidMessage()

    async def _absorb_own(self, content: Content, device_id: int, state: BatchState) -> None:
        """A message from another device of this account."""
        me = self._ctx.account_id
        if isinstance(content, SentTranscript):
            inner = decode_unpadded(content.content)
            if not isinstance(inner, TextContent | TimerContent | DeleteContent):
                raise InvalidMessage()
            if content.group_id is not None:
                if inner.group_id != content.group_id:
                    raise InvalidMessage()
                if self._groups.group(content.group_id, state) is None:
                    raise DropMessage("a transcript for an unknown group")
                peer = content.group_id
            else:
                assert content.account_id is not None and content.name is not None
                if inner.group_id is not None:
                    raise InvalidMessage()
                contact = self._senders.new_contact_now(
                    content.name, content.account_id, None, state
                )
                peer = contact.account_id
            self._senders.conversation(inner, peer, me, True, state)
        elif isinstance(content, DeviceNotice):
            absorb.device_notice(content, state)
        elif isinstance(content, GroupUpdateContent | SenderKeyContent):
            await self._absorb_group(content, self._own_row(state), device_id, state)
        else:
            raise InvalidMessage()
