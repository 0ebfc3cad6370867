"""The one table from an error to what the user reads and the exit status (issue 14
item 17): each row gives one sentence, limits in human units, no internal names."""

from __future__ import annotations

import errno

import httpx
import pytest

from sealpost.cli.errors import CliError, describe, human_size
from sealpost.client.errors import MessageTooLarge, ServerError, UnknownContact, UnknownGroup
from sealpost.client.store import ReadOnlyProfile, TooManyAttempts, WrongPasscode


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (CliError("nothing to send", 2), 2, "nothing to send"),
        (WrongPasscode(3, 0), 3, "wrong passcode"),
        (TooManyAttempts(300), 3, "5 min"),
        (UnknownContact("zed"), 5, "no user 'zed'"),
        (UnknownGroup("#crew"), 5, "you are in no group named #crew (see 'sealpost group list')"),
        (UnknownGroup("crew", removed=True), 5, "you are no longer a member of #crew"),
        (MessageTooLarge(1_000_000, 64_512), 2, "at most 63 KiB of text (this one is 976.6 KiB)"),
        (ServerError(409, "username_taken", "taken"), 4, "that username is taken"),
        (httpx.UnsupportedProtocol("x"), 2, "http:// or https://"),
        (OSError(errno.EROFS, "Read-only file system", "/p/keyfile.json.tmp"), 1, "read-only"),
        (ReadOnlyProfile("this command opened the profile read-only"), 1, "read-only"),
    ],
)
def test_each_error_is_one_sentence_with_its_exit_code(
    exc: BaseException, code: int, words: str
) -> None:
    message, status = describe(exc)
    assert status == code and words in message and "\n" not in message
    assert type(exc).__name__ not in message


def test_text_from_the_server_cannot_drive_the_terminal() -> None:
    message, _ = describe(ServerError(400, "bad\x1b[2J", "you \x1b]52;c;eA==\x07were\nhacked"))
    assert "\x1b" not in message and "\x07" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("size", "shown"),
    [(10, "10 bytes"), (1024, "1 KiB"), (65_536, "64 KiB"), (1_000_000, "976.6 KiB"),
     (100 << 20, "100 MiB")],
)  # fmt: skip
def test_human_size(size: int, shown: str) -> None:
    assert human_size(size) == shown


@pytest.mark.parametrize(("exc", "code"), [(KeyboardInterrupt(), 130), (BrokenPipeError(), 141)])
def test_an_interrupt_and_a_closed_pipe_are_in_the_table_and_say_nothing(
    exc: BaseException, code: int
) -> None:
    assert describe(exc) == ("", code)


def test_every_error_goes_through_the_one_report(capsys: pytest.CaptureFixture[str]) -> None:
    from sealpost.cli import main

    assert main(["send", "bob", "hi", "--json"]) == 2
    assert main(["server", "--port", "1", "migrate"]) == 2  # no --database: a usage error
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "sealpost: 'send' has no --json output",
        "sealpost: migrate needs --database (SQLite migrates itself)",
    ]
