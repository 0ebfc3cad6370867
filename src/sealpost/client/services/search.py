"""Local full-text search (:meth:`Client.search`): the store's FTS5 index
(:mod:`sealpost.client.store.search`) turned into :class:`SearchHit` records.

Nothing leaves the device: the index lives in the encrypted database, next to the
messages, and is changed in the same transaction as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sealpost.client.context import ClientContext
from sealpost.client.records import GroupView, Message
from sealpost.client.services.conversations import Conversations
from sealpost.client.store.search import HIT_END, HIT_START

__all__ = ["HIT_END", "HIT_START", "Search", "SearchHit"]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message that matched, and a few words around the match, the matched words
    between :data:`HIT_START` and :data:`HIT_END` (private-use characters)."""

    message: Message
    snippet: str

    @property
    def address(self) -> str:
        """How to name its conversation (``#name`` for a group)."""
        return ("#" if self.message.group is not None else "") + self.message.peer


class Search:
    def __init__(
        self,
        ctx: ClientContext,
        conversations: Conversations,
        *,
        groups: Callable[[], list[GroupView]],
        contacts: Callable[[], dict[bytes, str]],
    ) -> None:
        self._ctx = ctx
        self._conversations = conversations
        self._groups = groups
        self._contacts = contacts

    def search(
        self, text: str, *, conversation: str | None = None, limit: int = 50
    ) -> list[SearchHit]:
        """Messages whose text has every word of ``text`` (``"a phrase"`` in quotes),
        newest first, in one conversation when named."""
        self._conversations.expire()
        peer = None if conversation is None else self._conversations.resolve(conversation)[0]
        names: dict[bytes, tuple[str, bytes | None]] = {
            k: (v, None) for k, v in self._contacts().items()
        }
        names.update({g.group_id: (g.name, g.group_id) for g in self._groups()})
        own = self._ctx.account_id
        hits = []
        for row in self._ctx.store.repos().search.search(text, self._ctx.now_ms(), limit, peer):
            display, group = names.get(row.peer, (row.peer.hex()[:12], None))
            author = row.author if row.author is not None else (own if row.outgoing else row.peer)
            message = Message(
                row.message_id,
                display,
                row.outgoing,
                row.body,
                row.sent_at,
                row.received_at,
                row.status,
                group,
                self._conversations.name_of(author),
                None,
                row.expires_at,
            )
            hits.append(SearchHit(message, row.snippet))
        return hits
