"""What the main screen's keys and the compose box's ``/commands`` do: every one is a call
on the public :class:`~sealpost.client.Client` API, run in a worker, its error shown as a
notification (escaped, no markup) that leaves the screen as it was."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import ProgressBar

from sealpost.app.compose import Command
from sealpost.app.dialogs import ConfirmScreen, HelpScreen, PromptScreen
from sealpost.app.messages import MessageList
from sealpost.app.screens import AlarmsScreen, DevicesScreen, GroupScreen, SafetyScreen
from sealpost.app.text import peer, toast
from sealpost.cli.errors import CliError
from sealpost.cli.output import format_duration, parse_duration
from sealpost.client import ClientError, ServerUnavailable, UnknownContact, UntrustedContact
from sealpost.client.status import MessageStatus

if TYPE_CHECKING:
    from sealpost.app.main import MainScreen

__all__ = ["run", "send"]

_ERRORS = (ClientError, OSError, ValueError, CliError)


async def run(screen: MainScreen, command: Command) -> None:
    handler = _COMMANDS.get(command.name)
    if handler is None:
        toast(screen, f"no command /{command.name} (/help lists them)", "warning")
        return
    try:
        await handler(screen, command)
    except _ERRORS as exc:
        toast(screen, _describe(exc), "error")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UntrustedContact):
        return f"{exc}: compare the safety number again (Ctrl+T) and verify"
    if isinstance(exc, CliError):
        return str(exc.args[0]) if exc.args else "bad input"
    return str(exc) or type(exc).__name__


def _need_current(screen: MainScreen) -> str:
    if screen.current is None:
        raise ClientError("open a conversation first")
    return screen.current


async def send(screen: MainScreen, address: str, text: str, file: str | None) -> None:
    bar = screen.query_one("#progress", ProgressBar)

    def progress(done: int, total: int) -> None:
        bar.update(total=max(total, 1), progress=done)

    if file is not None:
        bar.update(total=None, progress=0)
        bar.display = True
    try:
        message = await screen.client.send(
            address,
            text,
            file=None if file is None else Path(file).expanduser(),
            progress=progress,
            queue_offline=True,  # kept in the profile while offline (services/pending.py)
        )
    except ServerUnavailable as exc:
        again = " (attach the file again once connected)" if file is not None else ""
        toast(screen, f"not sent: no connection: {_describe(exc)}{again}", "error")
        return
    except _ERRORS as exc:
        toast(screen, f"not sent: {_describe(exc)}", "error")
        return
    finally:
        bar.display = False
    if message.status == MessageStatus.QUEUED:
        screen.show_status()
        toast(screen, "no connection: it is sent when the connection is back", "warning")
    if screen.current == address:
        await screen.query_one(MessageList).add(message)
    await screen.refresh_list()


async def new_chat(screen: MainScreen) -> None:
    name = await screen.app.push_screen_wait(PromptScreen("New conversation with (a username)"))
    if not name or not name.strip():
        return
    name = name.strip().lower()
    try:
        if not screen.client.is_group(name):
            await screen.client.lookup(name)
    except UnknownContact:
        toast(screen, f"no user {name!r} on this server", "error")
        return
    except ClientError as exc:
        toast(screen, _describe(exc), "error")
        return
    await screen.open(name)


async def search(screen: MainScreen, query: str) -> None:
    from sealpost.app.search import SearchScreen

    hit = await screen.app.push_screen_wait(SearchScreen(screen.client, query))
    if hit is not None:
        await screen.open(hit[0], around=hit[1])


async def safety(screen: MainScreen) -> None:
    current = screen.current
    if current is None or current.startswith("#"):
        toast(screen, "open a contact's conversation first", "warning")
        return
    await screen.app.push_screen_wait(SafetyScreen(screen.client, current))
    contact = next((c for c in screen.client.contacts() if c.username == current), None)
    if contact is not None and contact.key_changed and not contact.verified:
        screen.client.acknowledge_key_change(current)  # seen: the warning is dismissed
    screen.warned.discard(current)
    screen._show_title()
    await screen.refresh_list()


async def group_screen(screen: MainScreen) -> None:
    current = screen.current
    if current is None or not current.startswith("#"):
        toast(screen, "open a group's conversation first", "warning")
        return
    await screen.app.push_screen_wait(GroupScreen(screen.client, current[1:]))
    await screen.refresh_list()
    screen._show_title()


async def devices(screen: MainScreen) -> None:
    if await screen.app.push_screen_wait(DevicesScreen(screen.client)) != "link":
        return
    code = await screen.app.push_screen_wait(
        PromptScreen("The link code the new device shows (sealpost-link:…)")
    )
    if code and code.strip():
        try:
            await _link(screen, Command("link", [code.strip()], code.strip()))
        except _ERRORS as exc:
            toast(screen, _describe(exc), "error")


async def alarms(screen: MainScreen) -> None:
    await screen.app.push_screen_wait(AlarmsScreen(screen.client))
    screen.show_alarms()


async def delete(screen: MainScreen) -> None:
    item = screen.query_one(MessageList).selected
    if item is None or not item.message.outgoing or item.gone is not None:
        toast(screen, "choose a message you sent (Up/Down in the messages)", "warning")
        return
    if not await screen.app.push_screen_wait(
        ConfirmScreen("Delete this message for everyone in the conversation?")
    ):
        return
    try:
        await screen.client.delete_for_everyone(_need_current(screen), item.message.id)
    except _ERRORS as exc:
        toast(screen, _describe(exc), "error")
        return
    screen.query_one(MessageList).gone(item.message.id, "deleted")
    await screen.refresh_list()


async def save(screen: MainScreen, directory: str | None) -> None:
    view = screen.query_one(MessageList)
    item = view.selected
    if item is None or item.message.attachment is None:
        with_files = [i for i in view.messages() if i.message.attachment and i.gone is None]
        item = with_files[-1] if with_files else None
    if item is None or item.message.attachment is None:
        toast(screen, "no file to save here", "warning")
        return
    if directory is None:
        directory = await screen.app.push_screen_wait(
            PromptScreen("Save to the directory", screen.settings.save_dir or str(Path.cwd()))
        )
        if not directory:
            return
    bar = screen.query_one("#progress", ProgressBar)
    bar.update(total=None, progress=0)
    bar.display = True
    try:
        saved = await screen.client.save_attachment(
            item.message.id,
            Path(directory).expanduser(),
            progress=lambda done, total: bar.update(total=max(total, 1), progress=done),
        )
    except _ERRORS as exc:
        toast(screen, f"not saved: {_describe(exc)}", "error")
        return
    finally:
        bar.display = False
    screen.settings.save_dir = str(Path(directory).expanduser())
    screen.settings.save(screen.client)
    toast(screen, f"saved to {saved}")
    await view.open(screen.client, _need_current(screen), around=item.message.id)


async def _file(screen: MainScreen, command: Command) -> None:
    if not command.args:
        raise ClientError("/file PATH [TEXT]")
    await send(screen, _need_current(screen), " ".join(command.args[1:]), command.args[0])


async def _save(screen: MainScreen, command: Command) -> None:
    await save(screen, command.rest or None)


async def _timer(screen: MainScreen, command: Command) -> None:
    seconds = parse_duration(command.rest or "")
    await screen.client.set_timer(_need_current(screen), seconds)
    toast(screen, f"disappearing messages: {format_duration(seconds)}")
    screen._show_title()


async def _delete(screen: MainScreen, command: Command) -> None:
    await delete(screen)


async def _group(screen: MainScreen, command: Command) -> None:
    if len(command.args) < 3 or command.args[0] != "create":
        raise ClientError("/group create NAME MEMBER...")
    view = await screen.client.create_group(command.args[1], command.args[2:])
    await screen.open("#" + view.name)


async def _members(screen: MainScreen, command: Command) -> None:
    current = _need_current(screen)
    if not current.startswith("#"):
        raise ClientError("open a group first")
    name = current[1:]
    client = screen.client
    if command.name == "add":
        await client.group_add(name, command.args)
    elif command.name == "remove":
        await client.group_remove(name, command.args)
    elif command.name == "rename":
        view = await client.group_rename(name, command.rest)
        screen.current = "#" + view.name
    else:
        if not await screen.app.push_screen_wait(ConfirmScreen(Text("Leave this group?"))):
            return
        await client.group_leave(name)
    screen._show_title()
    await screen.refresh_list()


async def _verify(screen: MainScreen, command: Command) -> None:
    await safety(screen)


async def _link(screen: MainScreen, command: Command) -> None:
    if not command.rest:
        raise ClientError("/link CODE (the code the new device shows)")

    async def confirm(name: str, code: str) -> bool:
        question = Text("Link the new device ", end="")
        question.append_text(peer(name, "bold"))
        question.append(" to this account?\nIt must show the code ")
        question.append(code, "bold")
        question.append(". Say no if it does not, or if you did not start this.")
        answer: bool = await screen.app.push_screen_wait(ConfirmScreen(question))
        return answer

    device_id = await screen.client.link_accept(command.rest, confirm)
    toast(screen, f"linked as device {device_id}")


async def _screen(screen: MainScreen, command: Command) -> None:
    if command.name == "devices":
        await devices(screen)
    elif command.name == "alarms":
        await alarms(screen)
    elif command.name == "search":
        await search(screen, command.rest)
    elif command.name == "safety":
        await safety(screen)
    else:
        await screen.app.push_screen_wait(HelpScreen())


async def _notify(screen: MainScreen, command: Command) -> None:
    if command.rest not in ("on", "off"):
        raise ClientError(f"/{command.name} on|off")
    if command.name == "notify":
        screen.settings.notify = command.rest == "on"
    else:
        screen.settings.notify_text = command.rest == "on"
    screen.settings.save(screen.client)
    toast(screen, f"{command.name}: {command.rest}")


_COMMANDS = {
    "file": _file,
    "save": _save,
    "timer": _timer,
    "delete": _delete,
    "group": _group,
    "add": _members,
    "remove": _members,
    "rename": _members,
    "leave": _members,
    "verify": _verify,
    "safety": _screen,
    "link": _link,
    "devices": _screen,
    "alarms": _screen,
    "search": _screen,
    "help": _screen,
    "notify": _notify,
    "notify-text": _notify,
}
