"""Group receive: group messages, sender keys and group updates inside a receive batch.

Each method takes the batch's :class:`~sealpost.client.rows.BatchState` and records what
it changes there (chains as advanced, groups as updated, events, store writes, pairwise
replies owed); nothing is committed here: the receive pipeline commits the whole batch at
once, and a message that raises leaves the state as it was before it
(:mod:`sealpost.client.inbox`).

- A group-sealed envelope (``0x23``) is found by its envelope id among the sender chains
  this device holds, opened with that chain's envelope key, and decrypted with the chain
  its sender certificate and header name (:meth:`GroupReceiver.open_sealed`); the legacy
  form (``0x22``, a key wrap per device) is opened with this device's identity key
  (:meth:`GroupReceiver.open_multi`).
- A member device's chain arrives pairwise (:meth:`GroupReceiver.absorb_sender_key`).
- A group update carries a member's whole chain of signed states, inline or as an
  attachment: every version in it is checked from this device's head (or the genesis), so
  any member may relay it; a chain that forks from this device's is an alarm
  (:meth:`GroupReceiver.absorb_update`).
- The version a message names is compared with this device's (:mod:`sealpost.client.groupsync`):
  behind, the group is marked out of date and the author asked for its chain; the author
  behind, it is sent ours (:meth:`GroupReceiver.check_ref`, :meth:`GroupReceiver.answer_request`).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from sealpost.client.context import ClientContext
from sealpost.client.groupkeys import (
    GroupForkError,
    GroupMember,
    ReceiverChain,
    group_envelope_id,
    sender_key_header,
    unseal_group,
    unseal_multi,
    verify_chain,
)
from sealpost.client.groupsync import (
    GroupBehind,
    Ref,
    chain_of,
    change_of,
    compare,
    decode_chain,
    encode_chain,
)
from sealpost.client.inbox import DropMessage
from sealpost.client.records import GroupChanged
from sealpost.client.rows import BatchState, ContactRow, GroupRow
from sealpost.client.services.attachments import Attachments
from sealpost.client.services.groups import GroupService
from sealpost.client.services.transparency import KeyTransparency
from sealpost.client.store.groups import SenderKeyId
from sealpost.client.transport import Push
from sealpost.protocol.content import (
    DeleteContent,
    GroupStateRequest,
    GroupUpdateContent,
    TextContent,
    TimerContent,
    decode_content_with_gossip,
)
from sealpost.protocol.errors import InvalidMessage
from sealpost.protocol.wire import SenderCertificate

__all__ = ["GroupReceiver"]

log = logging.getLogger("sealpost.client")

GroupText = TextContent | TimerContent | DeleteContent
NewContact = Callable[[str, bytes, bytes | None, BatchState], Awaitable[ContactRow]]
AbsorbConversation = Callable[[GroupText, bytes, bytes, bool, BatchState], None]


class GroupReceiver:
    """The group part of a receive batch (see the module docstring)."""

    def __init__(
        self,
        ctx: ClientContext,
        groups: GroupService,
        attachments: Attachments,
        *,
        verified_senders: set[bytes],
        new_contact: NewContact,
        absorb_conversation: AbsorbConversation,
        transparency: Callable[[], Awaitable[KeyTransparency]],
    ) -> None:
        self._ctx = ctx
        self._groups = groups
        self._attachments = attachments
        self._verified = verified_senders
        self._new_contact = new_contact
        self._absorb_conversation = absorb_conversation
        self._transparency = transparency

    # -- group messages

    def _chains_by_envelope(
        self, envelope_id: bytes, state: BatchState
    ) -> dict[SenderKeyId, ReceiverChain]:
        """Every sender chain this device holds under an envelope id (normally one: a
        member that copies another's envelope key into its own distribution only makes
        two candidates, and the certificate picks the right one)."""
        out = self._ctx.store.repos().sender_keys.by_envelope(envelope_id)
        for key, chain in state.sender_keys.items():
            if chain.envelope_id is not None and hmac.compare_digest(
                chain.envelope_id, envelope_id
            ):
                out[key] = chain
            elif key in out:
                del out[key]  # this batch replaced it
        return out

    async def open_sealed(self, push: Push, state: BatchState) -> None:
        """A group-sealed envelope: found by its envelope id, opened with the key that
        came with the sender's chain, decrypted with that chain."""
        candidates = self._chains_by_envelope(group_envelope_id(push.body), state)
        if not candidates:
            raise DropMessage("no sender key for this group message")
        opened = None
        for envelope_key in {c.envelope_key for c in candidates.values() if c.envelope_key}:
            try:
                opened = unseal_group(
                    push.body,
                    envelope_key,
                    server_key=self._ctx.server_key,
                    now=int(self._ctx.clock()),
                    verified=self._verified,
                )
                break
            except InvalidMessage:
                continue
        if opened is None:
            raise InvalidMessage()
        sender, message = opened
        group_id, chain_id = sender_key_header(message)
        receiver = candidates.get((group_id, sender.account_id, sender.device_id, chain_id))
        if receiver is None:
            # the envelope key is not that of the chain the certificate and header name
            raise InvalidMessage()
        await self._decrypt(sender, message, receiver, state)

    async def open_multi(self, push: Push, state: BatchState) -> None:
        """A legacy multi-sealed envelope (``0x22``: a key wrap per device)."""
        sender, message = unseal_multi(
            push.body,
            self._ctx.device.identity_key,
            server_key=self._ctx.server_key,
            now=int(self._ctx.clock()),
            verified=self._verified,
        )
        await self._decrypt(sender, message, None, state)

    async def _decrypt(
        self,
        sender: SenderCertificate,
        message: bytes,
        receiver: ReceiverChain | None,
        state: BatchState,
    ) -> None:
        if sender.account_id == self._ctx.account_id:
            raise DropMessage("group messages from this account come as transcripts")
        group_id, chain_id = sender_key_header(message)
        group = self._groups.get(group_id, state)
        if group is None or not group.member:
            raise DropMessage("a message for a group this account is not in")
        author = group.info.member(sender.account_id)
        if author is None:
            raise DropMessage("a group message from someone not in the group")
        key = (group_id, sender.account_id, sender.device_id, chain_id)
        if receiver is None:
            receiver = state.sender_keys.get(key)
        if receiver is None:
            receiver = self._ctx.store.repos().sender_keys.get(key)
            if receiver is None:
                raise DropMessage("no sender key for this group message")
        plaintext, advanced = receiver.decrypt(message)
        state.sender_keys[key] = advanced
        content, gossip = decode_content_with_gossip(plaintext)
        if gossip is not None:
            state.gossip.setdefault(gossip, author.username)
        if not isinstance(content, TextContent | TimerContent | DeleteContent):
            raise InvalidMessage()
        if content.group_id != group_id:
            raise InvalidMessage()
        await self._new_contact(author.username, author.account_id, author.account_key, state)
        self.check_ref(group, author, content.group_version, content.group_hash, state)
        self._absorb_conversation(content, group_id, sender.account_id, False, state)
        if isinstance(content, TextContent) and content.message_id in state.seen_ids:
            # a delivery receipt to the author, pairwise, as for a 1:1 message
            state.reply_to.setdefault(sender.account_id, []).append(content.message_id)

    # -- sender keys and group states, pairwise

    def absorb_sender_key(
        self, distribution: bytes, account_id: bytes, device_id: int, state: BatchState
    ) -> None:
        """A member device's sender chain for a group (it came over its pairwise
        session, so it is that device's)."""
        chain = ReceiverChain.from_distribution(distribution)
        key = (chain.group_id, account_id, device_id, chain.chain_id)
        if key in state.sender_keys or self._ctx.store.repos().sender_keys.has(key):
            return  # sent again (for a sibling device): keep the position already held
        state.sender_keys[key] = chain

    def check_ref(
        self,
        group: GroupRow,
        author: GroupMember,
        version: int,
        digest: bytes | None,
        state: BatchState,
    ) -> None:
        """Compare the state a member's message names with this device's (see
        :mod:`sealpost.client.groupsync`): behind, mark the group out of date, say so and
        ask the member for its chain; the member behind, send it ours."""
        ref = compare(group.info, version, digest)
        group_id = group.info.group_id
        if ref is Ref.OLDER:
            chain = chain_of(group.info, group.chain)
            state.group_sends.setdefault(
                (group_id, author.account_id), (author.username, encode_chain(chain))
            )
        elif ref is Ref.NEWER and version > group.behind and version >= group.info.version:
            seen = max(version, group.info.version + 1)
            state.groups[group_id] = replace(group, behind=seen, behind_from=author.account_id)
            repos = self._ctx.store.repos()
            state.writes.append(
                lambda _conn: repos.groups.mark_behind(group_id, seen, author.account_id)
            )
            state.events.append(
                GroupBehind(group_id, group.info.name, group.info.version, version, author.username)
            )
            request = self._groups.request(group)
            state.group_sends[(group_id, author.account_id)] = (author.username, request)
            log.warning("a member sent under a newer group version: asked it for the chain")

    def answer_request(
        self, content: GroupStateRequest, sender: ContactRow, state: BatchState
    ) -> None:
        """A member that saw a newer version from this device asks for its chain: sent,
        pairwise, if the asker is a member now (a removed one was sent its removal)."""
        group = self._groups.get(content.group_id, state)
        if group is None or not group.member or group.info.member(sender.account_id) is None:
            log.info("a group state request for a group the asker is not in: ignored")
            return
        if content.version >= group.info.version:
            return
        chain = encode_chain(chain_of(group.info, group.chain))
        state.group_sends[(content.group_id, sender.account_id)] = (sender.username, chain)

    async def absorb_update(
        self,
        content: GroupUpdateContent,
        sender: ContactRow,
        device_id: int,
        state: BatchState,
    ) -> None:
        """A member's chain of group states (any member may relay it: every version in it
        is checked, from this device's head, or from the genesis for a group first seen)."""
        blob = content.state
        if blob is None:
            assert content.state_pointer is not None
            blob = state.fetched.blob(content.state_pointer)  # fetched before the lock
        chain = decode_chain(blob)
        group_id = chain[-1].group_id
        old = self._groups.get(group_id, state)
        known = () if old is None else chain_of(old.info, old.chain)
        try:
            new = verify_chain(known, chain)
        except GroupForkError as fork:
            self._fork_alarm(old, fork, sender.username, state)
            raise
        if content.distribution:
            self.absorb_sender_key(content.distribution, sender.account_id, device_id, state)
        if not new:
            return  # nothing new (a copy, or a chain sent to catch another device up)
        info = new[-1]
        me = self._ctx.account_id
        member = info.member(me) is not None
        if old is None and not member:
            return  # a group this account is not in: nothing to keep
        raw = info.encode()
        full = encode_chain((*known, *new))
        # the out-of-date mark ends once a version at or past the one named is checked,
        # or once the member that named it is no longer in the group
        behind = 0
        if old is not None and old.behind > info.version and old.behind_from is not None:
            behind = old.behind if info.member(old.behind_from) is not None else 0
        state.groups[group_id] = GroupRow(
            info, raw, member, False, full, behind, old.behind_from if behind and old else None
        )
        repos = self._ctx.store.repos()
        state.writes.append(lambda _conn: self._groups.apply(repos, old, info, raw, full))
        steps = [(None, info)] if old is None else list(zip((known[-1], *new), new, strict=False))
        for prev, now in steps:
            change = change_of(prev, now)
            signer = (prev or now).member(change.by)
            state.events.append(
                GroupChanged(
                    group_id,
                    now.name,
                    signer.username if signer else "?",
                    change.added,
                    change.removed,
                    now.member(me) is not None,
                    change.renamed_from,
                    change.admins_added,
                    change.admins_removed,
                    now.version,
                )
            )

    def _fork_alarm(
        self, old: GroupRow | None, fork: GroupForkError, sender: str, state: BatchState
    ) -> None:
        """Two different signed states of one group at one version: an admin signed two
        histories, or a chain was forged around a real signature. An alarm, kept (raised
        once the batch is committed: nothing commits while a batch is open)."""
        name = "?" if old is None else old.info.name
        log.warning("a group chain that forks from this device's: refused")
        state.alarms.append(
            (
                "group_fork",
                f"#{name}",
                f"{sender} sent a chain of #{name} that differs from this device's at "
                f"version {fork.version}",
            )
        )
