"""The unit of work and the repositories it binds.

``with store.unit() as repos:`` is one transaction over every repository of the profile
(:class:`Repositories`): what the block writes is committed together, fsynced, when it
ends, and rolled back if it raises, so a unit that raises has changed nothing. This is how
a ratchet step is committed with the message it produced or consumed, and how a whole
receive or send batch is one commit. ``store.repos()`` gives the same repositories for
reads outside a unit; there every write is refused, so nothing ever autocommits alone.

Each repository (one per record type, libsignal's storage traits) speaks in whole
operations, takes and returns records (:mod:`sealpost.client.rows` or its own), and holds
no cache: caches belong to the services that use them. A repository method that writes
more than one statement runs them under a savepoint (:meth:`Connection.atomic`), so a
method that raises has changed nothing even inside a unit that goes on. A file to delete
once its row is gone is queued with :meth:`Connection.after_commit`: it goes only if the
unit commits.

Example::

    with store.unit() as repos:
        repos.meta.set("greeting", b"hello")
        repos.messages.set_timer(peer, 3600)
    assert store.repos().meta.get("greeting") == b"hello"
"""

from __future__ import annotations

from collections.abc import Callable

from sealpost.client.store.alarms import AlarmRepository, LogRepository
from sealpost.client.store.connection import Connection
from sealpost.client.store.contacts import ContactRepository
from sealpost.client.store.devices import DeviceRepository
from sealpost.client.store.groups import GroupRepository, SenderKeyRepository
from sealpost.client.store.messages import MessageRepository
from sealpost.client.store.meta import MetaRepository
from sealpost.client.store.outbox import OutboxRepository
from sealpost.client.store.pending import PendingRepository
from sealpost.client.store.prekeys import PrekeyRepository
from sealpost.client.store.processed import ProcessedRepository
from sealpost.client.store.search import SearchRepository
from sealpost.client.store.sessions import SessionRepository

__all__ = ["Repositories"]


class Repositories:
    """Every repository of the profile, bound to one connection. Each owner of a record
    type adds its repository here, one line (and its import above)."""

    def __init__(self, db: Connection) -> None:
        self._db = db
        self.meta = MetaRepository(db)
        self.contacts = ContactRepository(db)
        self.messages = MessageRepository(db)
        self.prekeys = PrekeyRepository(db)
        self.sessions = SessionRepository(db)
        self.processed = ProcessedRepository(db)
        self.devices = DeviceRepository(db)
        self.groups = GroupRepository(db)
        self.alarms = AlarmRepository(db)
        self.log = LogRepository(db, self.meta)
        self.outbox = OutboxRepository(db)
        self.pending = PendingRepository(db)
        self.groups = GroupRepository(db)
        self.sender_keys = SenderKeyRepository(db)
        self.search = SearchRepository(db)

    def after_commit(self, action: Callable[[], object]) -> None:
        """Run ``action`` once this unit has committed (never if it rolls back): a file
        to remove, a cache to drop."""
        self._db.after_commit(action)
