"""Committing a receive batch: everything its messages changed, in one unit of work.

Called inside ``with store.unit() as repos:`` by the receive pipeline, after every push of
the batch was opened (:mod:`.opening`) and before any is acknowledged: new contacts and
their logged devices, key changes, ratchet steps (each device's
:class:`~sealpost.protocol.SessionRecord`), used one-time prekeys, delivery tokens, the
messages (one deleted for everyone before it arrived is not stored), what absorbing
changed (:data:`~sealpost.client.rows.Change`), group state and sender chains, delivery
receipts (through the :mod:`~sealpost.client.status` table) and the server ids of the
pushes. It all commits together or not at all: a crash between the commit and the
acknowledgement makes the server push the batch again, and its ids say it is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sealpost.client.context import ClientContext
from sealpost.client.records import MessageReceived
from sealpost.client.rows import (
    BatchState,
    Change,
    ContactRow,
    DeletedForEveryone,
    DeviceRevoked,
    GroupRow,
    OwnDeviceLinked,
    OwnDeviceRemoved,
    TimerSet,
)
from sealpost.client.store import Repositories
from sealpost.client.store.messages import ReceivedRow
from sealpost.client.transport import Push

__all__ = ["BatchCommitter", "OwnerWrites"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerWrites:
    """Writes that other services own because they keep a cache beside the repository
    (the directory's contacts, the sessions held in memory), each inside the batch's
    unit."""

    note_key_change: Callable[[Repositories, ContactRow, bytes], None]
    forget_own_device: Callable[[Repositories, int], None]
    record_revocation: Callable[[Repositories, bytes, int, bytes | None], None]


class BatchCommitter:
    """Writes a batch state (see the module docstring)."""

    def __init__(
        self,
        ctx: ClientContext,
        owners: OwnerWrites,
        *,
        contact_by_id: Callable[[bytes], ContactRow | None],
        group: Callable[[bytes, BatchState], GroupRow | None],
    ) -> None:
        self._ctx = ctx
        self._owners = owners
        self._contact_by_id = contact_by_id
        self._group = group

    def commit(self, repos: Repositories, state: BatchState, pushes: list[Push]) -> bool:
        """Write ``state`` inside the unit ``repos``; returns whether contacts changed.
        Drops from ``state.events`` the messages that were stored already (a push seen
        twice)."""
        owners = self._owners
        now = int(self._ctx.clock())
        now_ms = self._ctx.now_ms()
        for row in state.new_contacts.values():
            repos.contacts.add(row.account_id, row.username, row.account_key, now)
            repos.contacts.replace_devices(row.account_id, row.devices)
        for account_id, new_key in state.key_changes.items():
            contact = self._contact_by_id(account_id)
            if contact is not None:
                owners.note_key_change(repos, contact, new_key)
        for account_id, certs in state.device_certs.items():
            repos.contacts.replace_devices(account_id, certs)
        repos.devices.certify_own(state.own_devices, now)
        for address, record in state.sessions.items():
            repos.sessions.save(address, record, now)
        repos.prekeys.use(state.used_prekeys)
        changed = bool(state.new_contacts or state.key_changes or state.device_certs)
        for account_id, token in state.tokens.items():
            known = self._contact_by_id(account_id)
            if known is None or known.delivery_token != token:
                repos.contacts.set_delivery_token(account_id, token)
                changed = True
        tombstones = repos.messages.tombstoned([m.message_id for m in state.messages])
        kept = repos.messages.add_received_all(
            [
                ReceivedRow(
                    m.message_id,
                    m.peer,
                    m.author,
                    m.outgoing,
                    m.text,
                    m.sent_at,
                    now_ms,
                    (m.sent_at if m.outgoing else now_ms) + m.expires_in * 1000
                    if m.expires_in
                    else None,
                    m.attachment,
                )
                for m in state.messages
                if (m.message_id, m.author) not in tombstones  # deleted for everyone first
            ]
        )
        for change in state.changes:
            self._apply(repos, change, now)
        for write in state.writes:
            write(repos)
        for key, chain in state.sender_keys.items():
            repos.sender_keys.put(key, chain, now)
        state.events = [
            e for e in state.events if not isinstance(e, MessageReceived) or e.message.id in kept
        ]
        for account_id, receipt in state.receipts:
            for message_id in receipt.message_ids:
                if not repos.messages.delivered(message_id, account_id):
                    self._group_receipt(repos, message_id, account_id, state)
        repos.processed.mark([p.server_id for p in pushes], now)
        return changed

    def _apply(self, repos: Repositories, change: Change, now: int) -> None:
        if isinstance(change, TimerSet):
            repos.messages.set_timer(change.peer, change.seconds)
        elif isinstance(change, DeletedForEveryone):
            repos.messages.delete_authored(change.target, change.peer, change.author, now)
        elif isinstance(change, OwnDeviceLinked):
            repos.devices.name_own(change.device_id, change.name, now)
        elif isinstance(change, OwnDeviceRemoved):
            self._owners.forget_own_device(repos, change.device_id)
        elif isinstance(change, DeviceRevoked):
            self._owners.record_revocation(
                repos, change.account_id, change.device_id, change.revocation
            )

    def _group_receipt(
        self, repos: Repositories, message_id: bytes, account_id: bytes, state: BatchState
    ) -> None:
        """A member's delivery receipt for a group message this account sent: the message
        is delivered once every current member but this account has confirmed it."""
        found = repos.messages.group_receipts(message_id)
        if found is None:
            return
        row_id, group_id, raw = found
        group = self._group(group_id, state)
        if group is None:
            return
        members = {m.account_id for m in group.info.members} - {self._ctx.account_id}
        if account_id not in members:
            return  # only members confirm
        confirmed = {raw[i : i + 16] for i in range(0, len(raw), 16)} | {account_id}
        repos.messages.set_group_receipts(row_id, b"".join(sorted(confirmed)), members <= confirmed)
