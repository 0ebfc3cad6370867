"""What every client command shares: opening the profile, showing alarms before and
after the command's work, and handling the events a command brings back."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from sealpost._errors import ProtocolError
from sealpost.cli.errors import CliError, describe
from sealpost.cli.output import (
    notice,
    print_alarm_line,
    print_message,
    progress_bar,
    warn,
    warn_key_change,
)
from sealpost.cli.passcode import read_passcode
from sealpost.cli.render import one_line
from sealpost.client.client import Client
from sealpost.client.errors import ClientError, ServerError, UnknownContact
from sealpost.client.records import Event, KeyChanged, MessageReceived

__all__ = [
    "conversation_is_group",
    "default_profile",
    "handle_events",
    "open_client",
    "server_url",
    "show_alarms",
    "with_client",
]


def default_profile() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sealpost" / "default"


async def open_client(
    profile: Path, passcode: str | None = None, *, read_only: bool = False
) -> Client:
    """Open the profile; ``read_only`` (a command that only shows what is stored): opened
    as usual where it can be written (so that, say, expired messages still go), and
    read-only where it cannot (a read-only file system, files this user cannot write)."""
    if passcode is None:
        passcode = read_passcode()
    if not read_only:
        return await Client.open(profile, passcode)
    try:
        return await Client.open(profile, passcode)
    except OSError:  # the lock or the keyfile could not be written
        return await Client.open(profile, passcode, read_only=True)


def show_alarms(client: Client, shown: set[int]) -> None:
    """Print the alarms not dismissed (and not shown yet by this command) on stderr."""
    for alarm in client.alarms():
        if alarm.alarm_id in shown:
            continue
        shown.add(alarm.alarm_id)
        print_alarm_line(alarm)


async def with_client(
    profile: Path,
    body: Callable[[Client], Awaitable[int]],
    passcode: str | None = None,
    *,
    read_only: bool = False,
) -> int:
    """Open the profile (``read_only``: a command that only shows what is stored), show
    alarms, run ``body``, show the alarms it raised, close."""
    client = await open_client(profile, passcode, read_only=read_only)
    shown: set[int] = set()
    try:
        show_alarms(client, shown)
        try:
            return await body(client)
        except (ServerError, UnknownContact) as exc:
            # a refused signature, or a contact the directory lost: is it this account
            # (or this device) that the server no longer knows?
            if isinstance(exc, ServerError) and exc.code != "unauthorized":
                raise
            better = await client.diagnose_refusal()
            if better is None:
                raise
            raise better from exc
    finally:
        try:
            show_alarms(client, shown)  # raised while this command ran
        finally:
            await client.close()


async def handle_events(
    client: Client, events: list[Event], as_json: bool, save_dir: Path | None = None
) -> int:
    """Print ``events`` (saving attachments into ``save_dir``); returns how many saves
    failed. A failed save is reported and skipped: the message and its attachment stay
    in the profile, so ``sealpost save ID`` can fetch it later."""
    failed = 0
    for event in events:
        if isinstance(event, MessageReceived):
            message = event.message
            if save_dir is not None and message.attachment is not None:
                try:
                    with progress_bar(message.attachment.filename) as bar:
                        saved = await client.save_attachment(message.id, save_dir, progress=bar)
                except (OSError, ClientError, ProtocolError) as exc:
                    failed += 1
                    warn(
                        f"the file {one_line(message.attachment.filename)} was not saved: "
                        f"{describe(exc)[0]}. The message is kept; save it later with "
                        f"'sealpost save {message.id.hex()} --dir DIR'"
                    )
                else:
                    attachment = dataclasses.replace(message.attachment, saved_to=str(saved))
                    message = dataclasses.replace(message, attachment=attachment)
            print_message(message, as_json)
        elif isinstance(event, KeyChanged):
            warn_key_change(event)
            if not event.verified:
                client.acknowledge_key_change(event.peer)
        else:
            notice(event, as_json)
    return failed


def server_url(text: str) -> str:
    """``text`` if it is an http(s) URL of a host, else a usage error that says so."""
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.hostname:
        return text
    hint = f" (did you mean http://{one_line(text)}?)" if "://" not in text and text else ""
    raise CliError(f"a server URL starts with http:// or https://{hint}", 2)


def conversation_is_group(client: Client, name: str) -> bool:
    """Whether ``name`` is a group this account can send to; a clear refusal for a group
    it was removed from or a ``#name`` it has no group of (the server knows no groups)."""
    bare = name.removeprefix("#")
    named = [g for g in client.groups() if g.name == bare]
    if named and (name.startswith("#") or client.is_group(name)):
        if not any(g.member for g in named):
            raise CliError(f"you are no longer a member of #{one_line(bare)}", 5)
        return True
    if name.startswith("#"):
        raise CliError(
            f"you are in no group named #{one_line(bare)} (see 'sealpost group list')", 5
        )
    return False
