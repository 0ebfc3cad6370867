"""The group encryptor: one group message, encrypted once, for every member device.

Each device has a signed sender chain per group (:class:`~sealpost.client.groupkeys.OwnChain`,
cached by :class:`~sealpost.client.services.groups.OwnChains`). Before a message goes out,
every member device that has not had this device's current chain is sent it pairwise
(a :class:`~sealpost.protocol.content.SenderKeyContent` over the ratchet sessions); the
message is then encrypted with the chain and sealed once with the chain's envelope key
(``0x23``), and the server fans the one body out to the devices named. The chain is
replaced (and so sent again to everyone) when the group's state says to rotate: a member
was removed, so it cannot read what follows. Every message names the state version and
hash it was sent under (docs/PROTOCOL.md 14.2); a group that is out of date sends nothing.

What the send pipeline gets back is a list of :class:`~sealpost.client.rows.Prepared`
(the distributions first, then the message), with the store writes (the chain's new
position, who holds it) to run in the batch's commit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from sealpost.client.context import ClientContext
from sealpost.client.errors import UnknownGroup, UntrustedContact
from sealpost.client.futures import quiet_future
from sealpost.client.groupkeys import GroupMember, seal_group, state_hash
from sealpost.client.rows import ContactRow, Envelopes, Outgoing, Prepared
from sealpost.client.services.groups import GroupService
from sealpost.client.store import Repositories
from sealpost.client.store.groups import SenderKeyId
from sealpost.protocol.content import (
    DeleteContent,
    SenderKeyContent,
    TextContent,
    TimerContent,
    encode_content,
)
from sealpost.protocol.wire import SenderCertificate

__all__ = ["GroupEncryptor"]

log = logging.getLogger("sealpost.client")

Pairwise = Callable[[ContactRow, bytes, SenderCertificate], Awaitable[Envelopes]]
Transcript = Callable[[Outgoing, ContactRow | None, SenderCertificate], Awaitable[Envelopes]]


class GroupEncryptor:
    """Prepares group sends for the send pipeline (see the module docstring)."""

    def __init__(
        self,
        ctx: ClientContext,
        groups: GroupService,
        *,
        resolve: Callable[[str], Awaitable[ContactRow]],
        contact_by_id: Callable[[bytes], ContactRow | None],
        pairwise: Pairwise,
        transcript: Transcript,
        gossip: Callable[[], bytes | None],
    ) -> None:
        self._ctx = ctx
        self._groups = groups
        self._resolve = resolve
        self._contact_by_id = contact_by_id
        self._pairwise = pairwise
        self._transcript = transcript
        self._gossip = gossip

    async def _members(self, members: Sequence[GroupMember]) -> list[ContactRow]:
        """The other members as contacts, with the devices a lookup checked."""
        contacts = []
        for m in members:
            if m.account_id == self._ctx.account_id:
                continue
            contact = self._contact_by_id(m.account_id)
            if contact is None or not contact.devices:
                contact = await self._resolve(m.username)
            if contact.account_id != m.account_id:
                log.warning("a group member's name now belongs to another account: skipped")
                continue
            if contact.key_changed and contact.verified:
                raise UntrustedContact(contact.username)
            contacts.append(contact)
        return contacts

    async def prepare(self, item: Outgoing, sender_cert: SenderCertificate) -> list[Prepared]:
        """``item`` (a text, timer or deletion for ``item.group``), and the sender-key
        distributions that must reach member devices before it."""
        assert item.group is not None
        group = self._groups.get(item.group)
        if group is None or not group.member:
            raise UnknownGroup(
                group.info.name if group else item.group.hex()[:12], removed=group is not None
            )
        self._groups.refuse_if_out_of_date(group)
        # every group message names the state it is sent under (docs/PROTOCOL.md 14.2)
        assert isinstance(item.content, TextContent | TimerContent | DeleteContent)
        item.content = replace(
            item.content, group_version=group.info.version, group_hash=state_hash(group.info)
        )
        contacts = await self._members(group.info.members)
        chain, rotated = self._groups.chains.get(item.group, group.rotate)
        group_id, chain_id = item.group, chain.chain_id
        shared = self._ctx.store.repos().sender_keys.shared(group_id, chain_id)
        out: list[Prepared] = []
        ctx = self._ctx
        distribution = SenderKeyContent(
            ctx.now_ms(), ctx.delivery_token, ctx.username, chain.distribution()
        )
        for contact in contacts:
            if all((contact.account_id, d) in shared for d in contact.devices):
                continue
            # A send names every device of the account (the server refuses a partial list
            # with mismatched_devices), so a device that lacks the chain (one just linked)
            # gets it with its siblings, which keep the copy they already hold.
            need = dict(contact.devices)
            missing = replace(contact, devices=need)
            envelopes = await self._pairwise(missing, encode_content(distribution), sender_cert)
            tokens = {contact.account_id: contact.delivery_token} if contact.delivery_token else {}
            p = Prepared(
                Outgoing(contact.username, distribution, quiet_future(), store=False),
                contact,
                envelopes,
                tokens,
            )
            p.writes.append(
                _mark_shared([(group_id, contact.account_id, d, chain_id) for d in need])
            )
            out.append(p)
        message = chain.encrypt(encode_content(item.content, self._gossip()))
        recipients = [(c.account_id, d) for c in contacts for d in sorted(c.devices)]
        multi = None
        if recipients:
            # one body for every device: no per-device work beyond naming it
            body = seal_group(sender_cert.encode() + message, chain.envelope_key, ctx.rng)
            multi = (body, [(a, d, b"") for a, d in recipients])
        tokens = {c.account_id: c.delivery_token for c in contacts if c.delivery_token}
        own = await self._transcript(item, None, sender_cert)
        p = Prepared(item, None, [], tokens, own, multi)

        def save(repos: Repositories) -> None:
            repos.sender_keys.save_own(group_id, chain.to_bytes())
            if rotated:
                repos.groups.rotated(group_id)

        p.writes.append(save)
        return [*out, p]


def _mark_shared(rows: list[SenderKeyId]) -> Callable[[Repositories], None]:
    """A write for the batch's commit: these member devices now hold this chain."""

    def write(repos: Repositories) -> None:
        repos.sender_keys.mark_shared(rows)

    return write
