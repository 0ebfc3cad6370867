"""Groups: the groups this account is in, and the changes it makes to them.

A group is signed client-side state (name, members, admins, version), a chain from a
genesis state that the group id is derived from (:mod:`sealpost.protocol.groupstate`,
:mod:`sealpost.protocol.groupchain`); the server knows nothing of it. A change is signed
here (:meth:`GroupService.create`, :meth:`~GroupService.add`, :meth:`~GroupService.remove`,
:meth:`~GroupService.rename`, :meth:`~GroupService.leave`), applied here, and sent
pairwise as the whole chain to every member of the old and new state and to this
account's other devices (:meth:`GroupService.publish`); a chain too large to send inline
goes as an encrypted attachment.

A member's message that names a newer version than this device's marks the group out of
date (:mod:`sealpost.client.groupsync`): nothing is sent to it and no change is signed on
top of the old version (:class:`~sealpost.client.errors.GroupOutOfDate`) until a chain
that reaches that version is checked; the member is asked for it again on each refusal.

The other group services: :mod:`.group_encryptor` (a group message, sender keys) and
:mod:`.group_receive` (group messages and updates inside a receive batch).

Example::

    view = await groups.create("team", ["bob", "carol"])
    view = await groups.remove("team", ["carol"])   # bob's devices rotate their keys
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from sealpost._errors import DecodeError, ProtocolError
from sealpost.client.context import ClientContext
from sealpost.client.errors import (
    ClientError,
    GroupChangeRefused,
    GroupOutOfDate,
    UnknownGroup,
    UntrustedContact,
)
from sealpost.client.futures import future, quiet_future
from sealpost.client.groupkeys import (
    GroupInfo,
    GroupMember,
    OwnChain,
    group_change,
    group_create,
    group_leave,
    group_verify_next,
)
from sealpost.client.groupsync import chain_of, encode_chain
from sealpost.client.records import GroupView
from sealpost.client.rows import BatchState, ContactRow, GroupRow, Outgoing
from sealpost.client.services.attachments import Attachments
from sealpost.client.store import Repositories
from sealpost.protocol.content import (
    MAX_INLINE_STATE,
    Content,
    GroupStateRequest,
    GroupUpdateContent,
)

__all__ = ["GroupService", "OwnChains"]

log = logging.getLogger("sealpost.client")


class OwnChains:
    """This device's sender chain per group, cached (see :mod:`.group_encryptor`); a
    new state of a group drops its entry, so the next message reads the store again."""

    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx
        self.held: dict[bytes, OwnChain] = {}

    def get(self, group_id: bytes, rotate: bool) -> tuple[OwnChain, bool]:
        """This device's chain for a group (a new one when due to rotate), and whether
        it is new."""
        chain = self.held.get(group_id)
        if chain is not None and not rotate:
            return chain, False
        if not rotate:
            raw = self._ctx.store.repos().sender_keys.own(group_id)
            if raw is not None:
                try:
                    chain = OwnChain.from_bytes(raw)
                except DecodeError:
                    pass  # a chain from before envelope keys: start a new one
                else:
                    self.held[group_id] = chain
                    return chain, False
        chain = OwnChain.create(group_id, rng=self._ctx.rng)
        self.held[group_id] = chain
        return chain, True

    def forget(self, group_id: bytes | None = None) -> None:
        """Drop one group's chain (or all, after a failed commit) from the cache."""
        if group_id is None:
            self.held.clear()
        else:
            self.held.pop(group_id, None)


class GroupService:
    """Group lookups, changes, and the out-of-date rule."""

    def __init__(
        self,
        ctx: ClientContext,
        attachments: Attachments,
        *,
        resolve: Callable[[str], Awaitable[ContactRow]],
        name_of: Callable[[bytes], str],
        timer: Callable[[bytes], int],
        own_row: Callable[[], ContactRow],
        enqueue: Callable[[Outgoing], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._ctx = ctx
        self._attachments = attachments
        self._resolve = resolve
        self._name_of = name_of
        self._timer = timer
        self._own_row = own_row
        self._enqueue = enqueue
        self._spawn = spawn
        self.chains = OwnChains(ctx)

    # -- lookups

    def get(self, group_id: bytes, state: BatchState | None = None) -> GroupRow | None:
        """A group as stored (or as a receive batch ``state`` changed it)."""
        if state is not None and group_id in state.groups:
            return state.groups[group_id]
        return self._ctx.store.repos().groups.get(group_id)

    def name(self, group_id: bytes) -> str | None:
        """A group's name (None: no such group)."""
        found = self.get(group_id)
        return None if found is None else found.info.name

    def by_name(self, name: str) -> GroupRow | None:
        group_id = self._ctx.store.repos().groups.find(name)
        return None if group_id is None else self.get(group_id)

    def views(self) -> list[GroupView]:
        """Every group this account is or was in, by name."""
        out = []
        for group_id in self._ctx.store.repos().groups.ids():
            row = self.get(group_id)
            if row is not None:
                out.append(self.view(row))
        return out

    def view(self, row: GroupRow) -> GroupView:
        info = row.info
        return GroupView(
            info.group_id,
            info.name,
            info.version,
            tuple(m.username for m in info.members),
            tuple(m.username for m in info.members if m.account_id in info.admins),
            row.member,
            self._timer(info.group_id),
        )

    def member_name(self, account_id: bytes, state: BatchState) -> str | None:
        """The username a group this account is in lists for ``account_id``."""
        stored = (
            self.get(group_id) for group_id, _ in self._ctx.store.repos().groups.names(member=True)
        )
        for group in (*state.groups.values(), *stored):
            if group is None or not group.member:
                continue
            for m in group.info.members:
                if m.account_id == account_id:
                    return m.username
        return None

    def member_row(self, group: str) -> GroupRow:
        """A group this account is in, by name, if it is not out of date."""
        name = group if group.startswith("#") else "#" + group
        row = self.by_name(name.removeprefix("#"))
        if row is None:
            raise UnknownGroup(name)
        if not row.member:
            raise UnknownGroup(name, removed=True)
        self.refuse_if_out_of_date(row)
        return row

    def _admin_row(self, group: str) -> GroupRow:
        row = self.member_row(group)
        if self._ctx.account_id not in row.info.admins:
            raise ClientError("only the group's admins may change it")
        return row

    # -- changes

    async def create(self, name: str, members: Sequence[str]) -> GroupView:
        """A new group of this account (its admin) and ``members`` (usernames); every
        member's devices are told, pairwise. The server learns nothing of it."""
        self._check_name(name)
        others = [await self._member_of(m) for m in dict.fromkeys(m.lower() for m in members)]
        others = [m for m in others if m.account_id != self._ctx.account_id]
        raw = group_create(self._ctx.account, self._me(), name, others, rng=self._ctx.rng)
        return await self.publish(None, raw)

    async def add(self, group: str, members: Sequence[str]) -> GroupView:
        row = self._admin_row(group)
        new = [await self._member_of(m) for m in dict.fromkeys(m.lower() for m in members)]
        already = [m.username for m in new if row.info.member(m.account_id) is not None]
        if already:
            raise GroupChangeRefused(
                f"{', '.join(already)} {'is' if len(already) == 1 else 'are'} already in "
                f"#{row.info.name}; nothing was changed"
            )
        return await self.publish(row, group_change(self._ctx.account, row.raw, add=new))

    async def remove(self, group: str, members: Sequence[str]) -> GroupView:
        """Remove members: every remaining member's devices rotate their sender keys
        before their next message, so the removed cannot read what follows."""
        row = self._admin_row(group)
        gone = []
        for name in members:
            found = [m for m in row.info.members if m.username == name.lower()]
            if not found:
                raise GroupChangeRefused(
                    f"{name.lower()} is not in #{row.info.name}; nothing was changed"
                )
            gone.append(found[0].account_id)
        return await self.publish(row, group_change(self._ctx.account, row.raw, remove=gone))

    async def rename(self, group: str, name: str) -> GroupView:
        row = self._admin_row(group)
        if name == row.info.name:
            raise GroupChangeRefused(f"the group is already named #{name}; nothing was changed")
        self._check_name(name, row.info.group_id)
        return await self.publish(row, group_change(self._ctx.account, row.raw, name=name))

    async def leave(self, group: str) -> GroupView:
        row = self.member_row(group)
        return await self.publish(row, group_leave(self._ctx.account, row.raw))

    def _check_name(self, name: str, group_id: bytes | None = None) -> None:
        """Refuse a name another group this account is in already has (``send team``
        could not tell them apart)."""
        for other, other_name in self._ctx.store.repos().groups.names(member=True):
            if other != group_id and other_name.lower() == name.lower():
                raise GroupChangeRefused(
                    f"you are already in a group named #{other_name}; choose another name"
                )

    async def _member_of(self, name: str) -> GroupMember:
        contact = await self._resolve(name)
        if contact.key_changed and contact.verified:
            raise UntrustedContact(contact.username)
        return GroupMember(contact.account_id, contact.account_key, contact.username)

    def _me(self) -> GroupMember:
        ctx = self._ctx
        return GroupMember(
            ctx.account_id, ctx.account.public_key().public_bytes_raw(), ctx.username
        )

    async def publish(self, old: GroupRow | None, raw: bytes) -> GroupView:
        """Apply a new signed group state here, then send it pairwise to every member of
        the old and new state (and to this account's other devices)."""
        info = group_verify_next(None if old is None else old.raw, raw)
        known = () if old is None else chain_of(old.info, old.chain)
        chain = encode_chain((*known, info))
        with self._ctx.store.unit() as repos:
            self.apply(repos, old, info, raw, chain)
        content = await self.chain_update(chain)
        names = {m.account_id: m.username for m in info.members}
        if old is not None:
            names |= {m.account_id: m.username for m in old.info.members}
        names.pop(self._ctx.account_id, None)
        items = [Outgoing(name, content, future(), store=False) for name in sorted(names.values())]
        if self._own_row().devices:
            items.append(Outgoing("", content, future(), store=False, to_self=True))
        for item in items:
            self._enqueue(item)
        results = await asyncio.gather(*(i.future for i in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("a group update was not delivered: %s", type(result).__name__)
                if not isinstance(result, ClientError | ProtocolError):
                    raise result
        row = self.get(info.group_id)
        assert row is not None
        return self.view(row)

    def apply(
        self, repos: Repositories, old: GroupRow | None, info: GroupInfo, raw: bytes, chain: bytes
    ) -> None:
        """Store a verified new state and the chain up to it (see
        :meth:`~sealpost.client.store.groups.GroupRepository.save`); this device's chain
        is read again before its next message."""
        repos.groups.save(
            old, info, raw, chain, account_id=self._ctx.account_id, now=int(self._ctx.clock())
        )
        self.chains.forget(info.group_id)

    async def chain_update(self, chain: bytes) -> GroupUpdateContent:
        """A group update carrying ``chain`` (inline, or as an encrypted attachment when
        large)."""
        pointer = None
        if len(chain) > MAX_INLINE_STATE:
            pointer = (await self._attachments.upload_bytes(chain, "group-state")).pointer
        return GroupUpdateContent(
            self._ctx.now_ms(),
            self._ctx.delivery_token,
            self._ctx.username,
            None if pointer is not None else chain,
            state_pointer=pointer,
        )

    # -- out of date

    def refuse_if_out_of_date(self, row: GroupRow) -> None:
        """A member sent under a newer version than this device has: nothing goes to the
        group (a member removed in that version would read it) and no change is signed
        on top of an old version; the member is asked again for its chain."""
        if not row.out_of_date:
            return
        by = "a member"
        if row.behind_from is not None:
            listed = row.info.member(row.behind_from)
            by = listed.username if listed else self._name_of(row.behind_from)
            if listed is not None:
                self._ask_for_chain(row)
        raise GroupOutOfDate(row.info.name, row.info.version, row.behind, by)

    def _ask_for_chain(self, row: GroupRow) -> None:
        listed = row.info.member(row.behind_from) if row.behind_from else None
        if listed is None:
            return
        self._enqueue(Outgoing(listed.username, self.request(row), quiet_future(), store=False))

    def request(self, row: GroupRow) -> GroupStateRequest:
        """Ask a member for its chain of the group, from the version this device has."""
        ctx = self._ctx
        return GroupStateRequest(
            ctx.now_ms(), ctx.delivery_token, ctx.username, row.info.group_id, row.info.version
        )

    def send_replies(self, state: BatchState) -> None:
        """What a committed receive batch owes other members, pairwise: a chain to a member
        that is behind, a request to one that is ahead (sent by a task: a large chain is
        uploaded first)."""
        if state.group_sends:
            self._spawn(self._send_replies(list(state.group_sends.values())))

    async def _send_replies(self, sends: list[tuple[str, Content | bytes]]) -> None:
        for name, what in sends:
            try:
                content = await self.chain_update(what) if isinstance(what, bytes) else what
            except ClientError as exc:
                log.warning("a group chain was not sent: %s", type(exc).__name__)
                continue
            self._enqueue(Outgoing(name, content, quiet_future(), store=False))
