"""README.md's command reference names every client command and every option the parser
has, so that it cannot drift from the code again (issue 14: README missed flags)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from sealpost.cli.parser import CLIENT_COMMANDS, build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _reference() -> str:
    text = README.read_text()
    start = text.index("Every command and its options")
    return text[start : text.index("\n\n", text.index("| `server` |", start))]


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaves(child, (*path, name))


def test_every_command_and_option_is_in_the_readme() -> None:
    reference = _reference()
    top = build_parser()
    for option in ("--profile", "--json", "--debug", "--version"):
        assert f"`{option}" in reference
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    for command in CLIENT_COMMANDS:
        for path, parser in _leaves(sub.choices[command], (command,)):
            words = " ".join(path)
            assert f"`{words}" in reference or f"`{path[0]} " in reference, words
            if len(path) > 1:
                assert path[-1] in reference, words
            for action in parser._actions:
                for option in action.option_strings:
                    if option.startswith("--") and option != "--help":
                        assert f"`{option}" in reference or f"[{option}" in reference, (
                            f"{words} {option}"
                        )


def test_every_json_event_is_in_the_readme() -> None:
    from sealpost.cli import output

    source = Path(output.__file__).read_text()
    events = set(re.findall(r'"event": "([a-z_]+)"', source))
    assert events >= {"alarm", "group_changed", "device_linked"}
    text = README.read_text()
    for event in events:
        assert f'"{event}"' in text, event
