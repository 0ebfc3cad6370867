"""The command line's arguments: options and words in any order, global options after
the command too (issue 14 item 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealpost.cli.parser import build_parser


def parse(*argv: str) -> dict[str, object]:
    return vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ("send", "bob", "--file", "f.txt", "caption"),
        ("send", "bob", "caption", "--file", "f.txt"),
        ("send", "--file", "f.txt", "bob", "caption"),
    ],
)
def test_send_takes_the_file_and_the_caption_in_either_order(argv: tuple[str, ...]) -> None:
    args = parse(*argv)
    assert args["contact"] == "bob" and args["text"] == "caption"
    assert args["file"] == Path("f.txt")


def test_a_text_that_starts_with_a_dash_after_double_dash() -> None:
    args = parse("send", "bob", "--", "-not-an-option")
    assert args["text"] == "-not-an-option"


@pytest.mark.parametrize(
    "argv",
    [
        ("--profile", "p", "--json", "whoami"),
        ("whoami", "--profile", "p", "--json"),
        ("--profile", "p", "whoami", "--json"),
        ("whoami", "--json", "--profile", "p"),
    ],
)
def test_global_options_before_or_after_the_command(argv: tuple[str, ...]) -> None:
    args = parse(*argv)
    assert args["profile"] == Path("p") and args["json"] is True and args["debug"] is False


def test_global_options_after_a_nested_command() -> None:
    args = parse("group", "create", "team", "bob", "carol", "--profile", "p", "--debug")
    assert args["profile"] == Path("p") and args["debug"] is True
    assert args["members"] == ["bob", "carol"]
    args = parse("group", "list", "--json", "--profile", "p")
    assert args["json"] is True and args["profile"] == Path("p")


def test_an_option_given_before_the_command_is_not_reset_by_it() -> None:
    args = parse("--profile", "p", "--debug", "receive", "--wait", "2")
    assert args["profile"] == Path("p") and args["debug"] is True and args["wait"] == 2.0


def test_save_has_a_directory_option() -> None:
    args = parse("save", "00" * 16, "--dir", "in")
    assert args["message_id"] == "00" * 16 and args["dir"] == Path("in")
    assert parse("save", "00" * 16)["dir"] == Path(".")
