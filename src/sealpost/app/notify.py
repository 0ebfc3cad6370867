"""Notifications for messages in conversations that are not open: a terminal bell and,
where ``notify-send`` exists, a desktop notification.

A desktop notification leaves the terminal: it may show on a locked screen, be logged by
the notification daemon, or be mirrored to a phone. So it names the conversation only;
the text is shown only when the user turns ``notify_text`` on (``/notify-text on``). The
name and text are passed as arguments (no shell), escaped like any peer text, with the
body's ``& < >`` escaped too (notify-send's body takes a little markup).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable

from sealpost.cli.render import one_line

__all__ = ["Notifier"]

_MAX_BODY = 200


class Notifier:
    def __init__(self, bell: Callable[[], None], *, command: str | None = "notify-send") -> None:
        self._bell = bell
        self._command = None if command is None else shutil.which(command)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[tuple[str, str]] = []  # (title, body) of each desktop notification

    @property
    def desktop(self) -> bool:
        return self._command is not None

    def message(self, conversation: str, text: str | None) -> None:
        """Ring, and show ``conversation`` (and ``text``, when not None) on the desktop."""
        self._bell()
        title = f"sealpost: {one_line(conversation)}"
        body = "new message" if text is None else one_line(text)[:_MAX_BODY]
        self.sent.append((title, body))
        if self._command is None:
            return
        task = asyncio.get_running_loop().create_task(self._run(title, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, title: str, body: str) -> None:
        assert self._command is not None
        with contextlib.suppress(OSError):
            proc = await asyncio.create_subprocess_exec(
                self._command,
                "--app-name=sealpost",
                "--",
                title,
                body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await proc.wait()
