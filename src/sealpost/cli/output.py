"""What the client commands print: messages on stdout, notices and alarms on stderr (or
as JSON lines on stdout with ``--json``). Every value that a peer or the server chose goes
through :mod:`sealpost.cli.render`; nothing else prints peer data."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from sealpost.cli.render import json_line, one_line, text_block, timestamp
from sealpost.client.groupsync import GroupBehind
from sealpost.client.records import (
    AlarmRaised,
    DeviceLinked,
    DeviceRemoved,
    Event,
    GroupChanged,
    KeyChanged,
    Message,
    MessageDeleted,
    SendFailed,
    TimerChanged,
)
from sealpost.protocol.content import MAX_TIMER

if TYPE_CHECKING:
    from sealpost.client.attachments import ProgressBar
    from sealpost.client.store.alarms import Alarm

__all__ = [
    "DURATIONS",
    "format_duration",
    "names",
    "notice",
    "parse_duration",
    "print_alarm_line",
    "print_json",
    "print_message",
    "progress_bar",
    "warn",
    "warn_key_change",
]


def print_json(doc: Any, out: TextIO | None = None) -> None:
    print(json_line(doc), file=out or sys.stdout, flush=True)


def warn(text: str) -> None:
    """A line on stderr; ``text`` is already safe to show."""
    print(f"sealpost: {text}", file=sys.stderr, flush=True)


def _where(message: Message) -> str:
    return f"#{one_line(message.peer)}" if message.group else one_line(message.peer)


def print_message(message: Message, as_json: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if as_json:
        print_json(message.to_json(), out)
        return
    where = _where(message)
    text = text_block(message.text)
    if message.attachment is not None:
        a = message.attachment
        saved = f", saved to {one_line(a.saved_to)}" if a.saved_to else ""
        text = f"{text} [file {one_line(a.filename)}, {a.size} bytes{saved}]".strip()
    when = timestamp(message.sent_at)
    if message.outgoing:
        line = f"[{when}] me → {where}: {text}"
    elif message.group:
        line = f"[{when}] {one_line(message.author)} in {where}: {text}"
    else:
        line = f"[{when}] {where}: {text}"
    print(line, file=out, flush=True)


def progress_bar(label: str) -> ProgressBar:
    from sealpost.client.attachments import ProgressBar

    return ProgressBar(one_line(label))


def warn_key_change(event: KeyChanged) -> None:
    peer = one_line(event.peer)
    if event.verified:
        warn(
            f"WARNING: {peer}'s safety number changed since you verified it. "
            f"Nothing will be sent to {peer} until you compare it again "
            f"(sealpost safety-number {peer}) and run 'sealpost verify {peer}'."
        )
    else:
        warn(
            f"warning: {peer}'s safety number changed (a new phone, or "
            f"someone in between). Compare it: sealpost safety-number {peer}"
        )


def print_alarm_line(alarm: Alarm) -> None:
    warn(
        f"ALARM {alarm.alarm_id} ({one_line(alarm.subject)}): {one_line(alarm.meaning)}: "
        f"{one_line(alarm.detail)}. See 'sealpost alarms'."
    )


def names(values: tuple[str, ...] | list[str]) -> str:
    """Names a peer or the server chose, as one safe comma-separated line."""
    return ", ".join(one_line(n) for n in values)


def _group_change_text(event: GroupChanged) -> str:
    """What a group change did, in words: "added dave; removed carol; renamed #a to #b"."""
    if event.renamed_from is None and event.added and not event.removed and event.version == 1:
        return "created it with " + names(event.added)
    parts = []
    if event.added:
        parts.append("added " + names(event.added))
    if event.by in event.removed:
        parts.append("left")
    elif event.removed:
        parts.append("removed " + names(event.removed))
    if event.renamed_from is not None:
        parts.append(f"renamed #{one_line(event.renamed_from)} to #{one_line(event.name)}")
    if event.admins_added:
        parts.append("made " + names(event.admins_added) + " admin")
    if event.admins_removed:
        parts.append("ended admin rights of " + names(event.admins_removed))
    return "; ".join(parts) or "changed it"


def notice(event: Event, as_json: bool) -> None:
    """Print a notice event (not a message, not a key change)."""
    doc: dict[str, Any]
    if isinstance(event, DeviceLinked):
        doc = {"event": "device_linked", "device_id": event.device_id, "name": event.name}
        text = (
            f"a device was linked to your account: {one_line(event.name)} "
            f"(device {event.device_id})"
        )
    elif isinstance(event, DeviceRemoved):
        doc = {"event": "device_removed", "device_id": event.device_id, "name": event.name}
        text = f"a device was removed from your account: {one_line(event.name)} ({event.device_id})"
    elif isinstance(event, GroupChanged):
        doc = {
            "event": "group_changed",
            "group": event.group.hex(),
            "name": event.name,
            "by": event.by,
            "added": list(event.added),
            "removed": list(event.removed),
            "member": event.member,
            "renamed_from": event.renamed_from,
            "admins_added": list(event.admins_added),
            "admins_removed": list(event.admins_removed),
            "version": event.version,
        }
        text = f"#{one_line(event.name)}: {one_line(event.by)} {_group_change_text(event)}"
    elif isinstance(event, GroupBehind):
        doc = {
            "event": "group_behind",
            "group": event.group.hex(),
            "name": event.name,
            "version": event.version,
            "seen": event.seen,
            "by": event.by,
        }
        name, by = one_line(event.name), one_line(event.by)
        text = (
            f"#{name}: {by} sent under version {event.seen} of the group and this device "
            f"has version {event.version}; nothing is sent to #{name} until the update "
            f"arrives (asked {by} for it)"
        )
    elif isinstance(event, TimerChanged):
        where = f"#{one_line(event.peer)}" if event.group else one_line(event.peer)
        doc = {
            "event": "timer_changed",
            "peer": event.peer,
            "seconds": event.seconds,
            "by": event.by,
        }
        text = (
            f"{one_line(event.by)} set disappearing messages in {where} to "
            f"{format_duration(event.seconds)}"
        )
    elif isinstance(event, AlarmRaised):
        alarm = event.alarm
        doc = {"event": "alarm"} | alarm.to_json()
        text = f"ALARM {alarm.alarm_id}: {one_line(alarm.meaning)}: {one_line(alarm.detail)}"
    elif isinstance(event, MessageDeleted):
        doc = {
            "event": "message_deleted",
            "peer": event.peer,
            "id": event.message_id.hex(),
            "by": event.by,
        }
        text = f"{one_line(event.by)} deleted a message in {one_line(event.peer)}"
    elif isinstance(event, SendFailed):
        where = f"#{one_line(event.peer)}" if event.group else one_line(event.peer)
        doc = {
            "event": "send_failed",
            "peer": event.peer,
            "id": event.message_id.hex(),
            "reason": event.reason,
        }
        text = f"a message to {where} written offline was not sent: {one_line(event.reason)}"
    else:
        return
    if as_json:
        print_json(doc)
    else:
        warn(text)


DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``30s``, ``10m``, ``1h``, ``1d``, ``1w``, a number of seconds, or ``off``."""
    from sealpost.cli.errors import CliError

    text = text.strip().lower()
    if text in ("off", "0"):
        return 0
    unit = DURATIONS.get(text[-1:])
    number = text[:-1] if unit else text
    if not number.isdigit():
        raise CliError(f"not a duration: '{one_line(text)}' (try 30s, 10m, 1h, 1d, 1w or off)", 2)
    seconds = int(number) * (unit or 1)
    if not 0 < seconds <= MAX_TIMER:
        raise CliError("a timer is from 1 second to a year", 2)
    return seconds


def format_duration(seconds: int) -> str:
    if seconds == 0:
        return "off"
    for suffix, size in reversed(DURATIONS.items()):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds}s"
