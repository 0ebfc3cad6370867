"""The search screen (Ctrl+F or ``/``): type words, Enter lists the hits, newest first;
choosing one opens its conversation at that message. Dismissed with ``(address, message
id)`` of the hit chosen, or None."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, ListItem, ListView, Static

from sealpost.app.text import peer
from sealpost.client import Client, ClientError, SearchHit
from sealpost.client.services.search import HIT_END, HIT_START

__all__ = ["SearchScreen", "render_hit"]

LIMIT = 50


def render_hit(hit: SearchHit) -> Text:
    text = Text(end="")
    text.append_text(peer(hit.address, "bold"))
    text.append("  ")
    text.append_text(peer("you" if hit.message.outgoing else hit.message.author, "cyan"))
    text.append("\n  ")
    # the snippet's own marks become bold; the rest is escaped peer text
    for i, part in enumerate(hit.snippet.replace(HIT_END, HIT_START).split(HIT_START)):
        text.append_text(peer(part, "bold yellow" if i % 2 else ""))
    return text


class HitItem(ListItem):
    def __init__(self, hit: SearchHit) -> None:
        self.hit = hit
        super().__init__(Static(render_hit(hit)))


class SearchScreen(ModalScreen[tuple[str, bytes] | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "close")]

    def __init__(self, client: Client, query: str = "") -> None:
        super().__init__()
        self._client = client
        self._query = query

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text("Search the history on this device", style="bold"))
            yield Input(value=self._query, placeholder='words, or "a phrase"', id="search-input")
            yield Static(Text(""), id="search-status")
            yield ListView(id="search-hits")

    async def on_mount(self) -> None:
        if self._query:
            await self.run_search(self._query)

    async def run_search(self, query: str) -> None:
        hits_view = self.query_one("#search-hits", ListView)
        status = self.query_one("#search-status", Static)
        await hits_view.clear()
        try:
            hits = self._client.search(query, limit=LIMIT)
        except ClientError as exc:
            status.update(peer(exc, "red"))
            return
        status.update(
            Text(f"{len(hits)} found" + (" (the newest)" if len(hits) == LIMIT else ""), "dim")
        )
        await hits_view.extend(HitItem(h) for h in hits)
        if hits:
            hits_view.index = 0

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        await self.run_search(event.value)
        if len(self.query_one("#search-hits", ListView)):
            self.query_one("#search-hits", ListView).focus()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, HitItem):
            self.dismiss((event.item.hit.address, event.item.hit.message.id))

    def action_close(self) -> None:
        self.dismiss(None)
