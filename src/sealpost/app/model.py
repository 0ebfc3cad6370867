"""What the app shows, read from the public :class:`~sealpost.client.Client` API.

A conversation is addressed as the CLI addresses it: a contact by its username, a group
as ``#name``. The conversation list is every contact and every group this account is in,
most recent first, each with a preview of its last message and how many messages arrived
after the one last read (:meth:`Client.conversations`: one store query, not a read of
each history). Where the user last read is kept per conversation in the
profile's encrypted store (the ``app.read`` meta key, a JSON object: address -> the
``received_at`` of the newest message read), so unread counts survive a restart and never
sit in a file in clear; the app's settings (``app.settings``) likewise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sealpost.client import Client, ConversationSummary, Message

__all__ = ["ReadMarks", "Settings", "address_of", "summaries"]

_READ_KEY = "app.read"
_SETTINGS_KEY = "app.settings"


@dataclass(slots=True)
class Settings:
    """The app's settings, kept in the profile (``/notify``, ``/notify-text``)."""

    notify: bool = True  # bell and desktop notification for conversations not open
    notify_text: bool = False  # whether a desktop notification shows the message's text
    save_dir: str = ""  # where files are saved by default ("" : the current directory)

    @classmethod
    def load(cls, client: Client) -> Settings:
        raw = client.store.repos().meta.get(_SETTINGS_KEY)
        settings = cls()
        if raw is None:
            return settings
        try:
            doc = json.loads(raw)
        except ValueError:
            return settings
        if isinstance(doc, dict):
            for key, value in doc.items():
                if key in ("notify", "notify_text") and isinstance(value, bool):
                    setattr(settings, key, value)
                elif key == "save_dir" and isinstance(value, str):
                    settings.save_dir = value
        return settings

    def save(self, client: Client) -> None:
        with client.store.unit() as repos:
            repos.meta.set(_SETTINGS_KEY, json.dumps(asdict(self)).encode())


class ReadMarks:
    """Per conversation, the ``received_at`` of the newest message the user has seen."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._marks: dict[str, int] = {}
        raw = client.store.repos().meta.get(_READ_KEY)
        if raw is not None:
            try:
                doc: Any = json.loads(raw)
            except ValueError:
                doc = {}
            if isinstance(doc, dict):
                self._marks = {
                    str(k): int(v)
                    for k, v in doc.items()
                    if isinstance(v, int) and not isinstance(v, bool)
                }

    def mark(self, address: str) -> int:
        return self._marks.get(address, 0)

    def set(self, address: str, received_at: int) -> None:
        if received_at <= self._marks.get(address, 0):
            return
        self._marks[address] = received_at
        with self._client.store.unit() as repos:
            repos.meta.set(_READ_KEY, json.dumps(self._marks).encode())

    def marks(self) -> dict[str, int]:
        return dict(self._marks)


def address_of(message: Message) -> str:
    return "#" + message.peer if message.group is not None else message.peer


def summaries(client: Client, marks: ReadMarks) -> list[ConversationSummary]:
    """Every conversation, most recent first (then by name)."""
    return client.conversations(marks.marks())
