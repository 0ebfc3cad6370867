"""What a user sees when a command fails: one sentence on stderr and an exit status.

Exit codes: 0 success, 1 any other error, 2 usage, 3 wrong passcode or locked profile,
4 server unreachable or refusing, 5 unknown contact, 6 a verified contact's key changed,
7 a key-transparency check failed (the server's answer contradicts its log; an alarm is
raised), 8 ``sealpost audit`` found the log inconsistent, 130 interrupted (Ctrl-C), 141 the
reader of stdout went away.

:data:`ERRORS` is the one table from an error type to its exit code and sentence; the
first row whose type matches wins, so a subclass goes above its base. A command's own
refusal is a :class:`CliError` that carries its sentence and code. :func:`report` is the
one place any command's error is shown. Text that came from the server or a peer goes
through :func:`~sealpost.cli.render.one_line`.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import httpx
import sqlcipher3.dbapi2 as sqlcipher  # type: ignore[import-untyped]

from sealpost._errors import ProtocolError
from sealpost.cli.render import one_line
from sealpost.client.errors import (
    AccountUnknown,
    ClientError,
    DeviceRevoked,
    LogKeyChanged,
    MessageTooLarge,
    ServerError,
    ServerUnavailable,
    TransparencyFailure,
    UnknownContact,
    UnknownGroup,
    UntrustedContact,
)
from sealpost.client.preflight import NotASealpostServer, UsernameInvalid, UsernameTaken
from sealpost.client.store import (
    CorruptProfile,
    NoProfile,
    ProfileExists,
    ProfileWiped,
    ReadOnlyProfile,
    TooManyAttempts,
    WrongPasscode,
)

__all__ = ["ERRORS", "CliError", "describe", "human_size", "report"]


class CliError(Exception):
    """A command's own refusal: ``str(exc)`` is the sentence, ``code`` the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def human_size(size: int) -> str:
    """``65536`` → ``64 KiB``; ``1048577`` → ``1.0 MiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def _size_beside(size: int, limit: int) -> str:
    """``size`` in human units, or in bytes where rounding would blur it with ``limit``."""
    shown = human_size(size)
    if shown == human_size(limit) or ".0 " in shown:
        return f"{size:,} bytes"
    return shown


def _server_error(exc: ServerError) -> str:
    text = SERVER_CODES.get(exc.code)
    if text is not None:
        return f"{text} ({exc.code})"
    return f"the server refused: {one_line(exc.message)} ({one_line(exc.code)})"


#: Server error codes that mean something the user can act on.
SERVER_CODES = {
    "username_taken": "that username is taken on this server; choose another",
    "registration_closed": "this server registers no new accounts",
    "invite_required": (
        "this server registers by invitation: ask its operator for a code and pass it "
        "with --invite CODE"
    ),
    "invite_invalid": "that invite code is not valid, used up, expired or revoked",
    "rate_limited": "the server is limiting requests; wait a little and try again",
    "unauthorized": (
        "the server did not accept this device's signature (the device may have been "
        "removed, or the server lost this account)"
    ),
}


def _os_error(exc: OSError) -> str:
    where = f" ({one_line(exc.filename)})" if exc.filename else ""
    if exc.errno == errno.EROFS:
        return f"cannot write{where}: the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}"
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}"
    return f"{one_line(exc.strerror or type(exc).__name__)}{where}"


def _database_error(exc: Exception) -> str:
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text:
        return "the profile is read-only: this command needs to write to it"
    if "locked" in text or "busy" in text:
        return "the profile is in use by another sealpost process"
    return "the profile's database failed: " + one_line(exc)


Row = tuple[type[BaseException], int, Callable[[Any], str]]

#: error type → exit code, sentence. First match wins. An empty sentence: nothing is said.
ERRORS: tuple[Row, ...] = (
    (CliError, -1, str),
    (KeyboardInterrupt, 130, lambda e: ""),  # Ctrl-C, at a prompt or anywhere
    (BrokenPipeError, 141, lambda e: ""),  # ``sealpost history bob | head``
    (WrongPasscode, 3, lambda e: "wrong passcode"),
    (TooManyAttempts, 3, lambda e: f"too many wrong passcodes; try again in {_wait(e)}"),
    (ProfileWiped, 3, lambda e: "this profile was wiped after too many wrong passcodes"),
    (NoProfile, 1, lambda e: "no profile here; create one with 'sealpost init'"),
    (ProfileExists, 1, lambda e: "a profile already exists here (use --profile DIR for another)"),
    (CorruptProfile, 1, lambda e: f"the profile is damaged: {e}"),
    (UnknownContact, 5, lambda e: one_line(e)),
    (UnknownGroup, 5, lambda e: f"{one_line(e)} (see 'sealpost group list')"),
    (UsernameInvalid, 2, lambda e: one_line(e)),
    (UsernameTaken, 4, lambda e: one_line(e)),
    (NotASealpostServer, 4, lambda e: one_line(e)),
    (
        MessageTooLarge,
        2,
        lambda e: (
            f"a message holds at most {human_size(e.limit)} of text (this one is "
            f"{_size_beside(e.size, e.limit)}); send a longer text as a file with --file"
        ),
    ),
    (ReadOnlyProfile, 1, lambda e: f"the profile is read-only: {one_line(e)}"),
    (UntrustedContact, 6, lambda e: one_line(e)),
    (LogKeyChanged, 7, lambda e: f"{e.detail}. An alarm was raised: see 'sealpost alarms'"),
    (TransparencyFailure, 7, lambda e: f"{one_line(e)} (nothing was sent; see 'sealpost alarms')"),
    (AccountUnknown, 4, lambda e: one_line(e)),
    (DeviceRevoked, 4, lambda e: one_line(e)),
    (ServerUnavailable, 4, lambda e: f"server unavailable: {one_line(e)}"),
    (ServerError, 4, _server_error),
    (httpx.UnsupportedProtocol, 2, lambda e: "a server URL starts with http:// or https://"),
    (httpx.InvalidURL, 2, lambda e: "that server URL is not valid"),
    (ClientError, 1, lambda e: one_line(e) or type(e).__name__),  # store errors too
    (sqlcipher.OperationalError, 1, _database_error),
    (sqlite3.OperationalError, 1, _database_error),
    (OSError, 1, _os_error),
    (ProtocolError, 1, lambda e: f"the data did not check out: {one_line(e)}"),
)


def _wait(exc: TooManyAttempts) -> str:
    seconds = round(exc.retry_after)
    return f"{seconds} s" if seconds < 120 else f"{round(seconds / 60)} min"


def describe(exc: BaseException) -> tuple[str, int]:
    """The sentence and the exit status for ``exc``."""
    for kind, code, text in ERRORS:
        if isinstance(exc, kind):
            if isinstance(exc, CliError):
                return str(exc), exc.code
            return text(exc), code
    return f"unexpected error: {type(exc).__name__}: {one_line(exc)}", 1


def report(exc: BaseException, *, debug: bool = False) -> int:
    """Show ``exc`` as its sentence on stderr (and, with ``debug``, its traceback); returns
    the exit status. Ctrl-C only ends the prompt's line; a reader of stdout that went away
    gets nothing more (stdout is pointed at ``/dev/null`` so that Python's own flush at exit
    does not fail again)."""
    message, code = describe(exc)
    if isinstance(exc, KeyboardInterrupt):
        print(file=sys.stderr)
    elif isinstance(exc, BrokenPipeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    else:
        print(f"sealpost: {message}", file=sys.stderr, flush=True)
        if debug:
            import traceback

            traceback.print_exception(exc)
    return code
