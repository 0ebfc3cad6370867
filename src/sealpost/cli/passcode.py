"""Passcode prompts: read at a terminal (never echoed), from ``SEALPOST_PASSCODE``, or
from one line of stdin when stdin is not a terminal.

A new passcode is asked twice at a terminal; when the two entries differ, both are asked
again (up to :data:`NEW_TRIES` times). Ctrl-C or end of input at a prompt ends the command
at once: :class:`KeyboardInterrupt` (exit 130) or :class:`~sealpost.cli.errors.CliError`.
"""

from __future__ import annotations

import getpass
import os
import signal
import sys
import threading
from collections.abc import Callable

from sealpost.cli.errors import CliError

__all__ = [
    "MIN_PASSCODE",
    "NEW_PASSCODE_ENV",
    "NEW_TRIES",
    "PASSCODE_ENV",
    "new_passcode",
    "prompt_line",
    "read_passcode",
]

PASSCODE_ENV = "SEALPOST_PASSCODE"
NEW_PASSCODE_ENV = "SEALPOST_NEW_PASSCODE"  # for 'passcode change' in scripts
MIN_PASSCODE = 6
NEW_TRIES = 3


def _ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise CliError(f"no passcode: set {PASSCODE_ENV} or run in a terminal", 3)
        return line.rstrip("\n")
    try:
        return prompt_line(getpass.getpass, prompt)
    except EOFError:
        raise CliError("no passcode given", 3) from None


def prompt_line(read: Callable[[str], str], prompt: str) -> str:
    """``read(prompt)`` (``getpass.getpass`` or ``input``) with Ctrl-C raising
    :class:`KeyboardInterrupt` at once. Inside :func:`asyncio.run` a Ctrl-C only cancels
    the main task, which a blocking read never sees, so the prompt would wait for Enter;
    Python's own SIGINT handler is put back for the time of the read."""
    if threading.current_thread() is not threading.main_thread():
        return read(prompt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return read(prompt)
    finally:
        signal.signal(signal.SIGINT, previous)


def read_passcode() -> str:
    env = os.environ.get(PASSCODE_ENV)
    if env is not None:
        return env
    return _ask("Passcode: ")


def new_passcode(prompt: str = "New passcode: ", env_name: str = NEW_PASSCODE_ENV) -> str:
    """A passcode being set: asked twice at a terminal, or read from ``env_name``."""
    env = os.environ.get(env_name)
    if env is not None:
        return _long_enough(env)
    if not sys.stdin.isatty():
        return _long_enough(_ask(prompt))
    for _ in range(NEW_TRIES):
        passcode = _ask(prompt)
        if len(passcode) < MIN_PASSCODE:
            print(f"A passcode needs at least {MIN_PASSCODE} characters.", file=sys.stderr)
            continue
        if _ask("Again: ") == passcode:
            return passcode
        print("The two entries differ; please type it again.", file=sys.stderr)
    raise CliError("no passcode was set: the entries differed or were too short", 2)


def _long_enough(passcode: str) -> str:
    if len(passcode) < MIN_PASSCODE:
        raise CliError(f"a passcode needs at least {MIN_PASSCODE} characters", 2)
    return passcode
