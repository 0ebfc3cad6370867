"""Small modal screens: help, a one-line prompt, a yes/no question, a link confirmation.

Each returns its answer through :meth:`ModalScreen.dismiss` (``None`` when cancelled with
Escape). Peer text in questions is passed as :class:`rich.text.Text`, never as markup.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

__all__ = ["HELP", "ConfirmScreen", "HelpScreen", "PromptScreen"]

#: The key bindings and commands, as the help screen lists them (README says the same).
HELP = """\
Keys
  Enter            send the message
  Shift+Enter      new line (also Alt+Enter, Ctrl+J)
  Tab, Shift+Tab   next or previous pane (list, messages, compose box)
  Up, Down         choose a conversation, or a message in the open one
  Ctrl+N, n        new conversation (a username)
  Ctrl+F, /        search the local history
  Ctrl+T           the contact's safety number (compare, then Verify)
  Ctrl+G           the open group: members, add, remove, rename, leave
  Ctrl+E           this account's devices (list, remove; l links one)
  Ctrl+B           key-transparency alarms (read and dismiss)
  d                delete the chosen message you sent, for everyone
  s                save the chosen message's file
  ?, F1            this help
  Ctrl+Q           quit

Commands (type in the compose box)
  /file PATH [TEXT]          send a file (with a caption)
  /save [DIR]                save the chosen (or last) file received
  /timer 30s|10m|1h|1d|1w|off   disappearing messages here
  /delete                    delete the chosen message for everyone
  /group create NAME MEMBER...  a new group
  /add MEMBER...  /remove MEMBER...  /rename NAME  /leave   (the open group)
  /verify                    mark the open contact's safety number as checked
  /link CODE                 link a new device (shows its name and code to compare)
  /devices  /alarms  /search TEXT  /help
  /notify on|off             bell and desktop notifications
  /notify-text on|off        show message text in desktop notifications
  //TEXT                     send a text that starts with /
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f1", "close", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="help"):
            with VerticalScroll():
                yield Static(Text(HELP, end=""), id="help-text")
            yield Static(Text("Esc closes", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """One line of input; Enter answers, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, question: Text | str, value: str = "", *, password: bool = False) -> None:
        super().__init__()
        self._question = question if isinstance(question, Text) else Text(question)
        self._value = value
        self._password = password

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._question)
            yield Input(value=self._value, password=self._password, id="prompt-input")
            yield Static(Text("Enter: OK   Esc: cancel", style="dim"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question (y/n keys, the buttons, or Escape for no)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, question: Text | str, *, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self._question = question if isinstance(question, Text) else Text(question)
        self._yes, self._no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self._question)
            with Horizontal(classes="buttons"):
                yield Button(self._yes, id="yes", variant="primary")
                yield Button(self._no, id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)
