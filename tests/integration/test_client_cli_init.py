"""``sealpost init`` checks what it can before it asks for a passcode, asks again when the
two entries differ, and Ctrl-C at a passcode prompt ends it at once (issue 14 item 20).
The prompts are driven through a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import http.server
import os
import pty
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ServerProcess, unique_name
from test_client_cli import init, sealpost

from sealpost.client.preflight import USERNAME_PATTERN
from sealpost.server.handlers.accounts import USERNAME_PATTERN as SERVER_PATTERN


class Terminal:
    """``sealpost ARGS`` as the foreground program of a new pseudo-terminal."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
        pid, fd = pty.fork()
        if pid == 0:  # the child: its controlling terminal is the pty
            os.execve(sys.executable, [sys.executable, "-m", "sealpost.cli", *args], env)
        self.pid, self.fd, self.seen, self.at = pid, fd, b"", 0

    def expect(self, text: str, timeout: float = 30.0) -> None:
        """Wait for ``text`` after what earlier calls matched."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen[self.at :]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} in {self.seen!r}")
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    raise AssertionError(f"no {text!r} in {self.seen!r}") from None
        self.at += self.seen[self.at :].index(text.encode()) + len(text)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_data = select.select([self.fd], [], [], 0.05)[0]
            if with_data:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.fd, 4096)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"still running; the terminal shows {self.seen!r}")


@pytest.fixture
def not_sealpost() -> Iterator[str]:
    """An HTTP server that is not a sealpost relay (404 for everything)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_init_checks_server_and_username_before_asking_the_passcode(
    server: ServerProcess, tmp_path: Path, not_sealpost: str
) -> None:
    taken, _ = init(server, tmp_path)
    cases = [
        ((server.url, taken), 4, "is taken on this server"),
        ((server.url, "ab"), 2, "a username is 3 to 32 of a-z"),
        ((server.url, "no spaces"), 2, "a username is 3 to 32 of a-z"),
        ((not_sealpost, unique_name()), 4, "not a sealpost server"),
    ]
    for (url, name), code, words in cases:
        # no SEALPOST_PASSCODE and no terminal: reaching the prompt would fail differently
        result = sealpost("init", "--server", url, "--username", name, passcode=None,
                          profile=tmp_path / "new")  # fmt: skip
        assert result.returncode == code, result.stderr
        assert words in result.stderr and "passcode" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "new").exists()
    assert USERNAME_PATTERN.pattern == SERVER_PATTERN.pattern


def test_init_asks_again_when_the_two_passcodes_differ(
    server: ServerProcess, tmp_path: Path
) -> None:
    name = unique_name("tty")
    term = Terminal("--profile", str(tmp_path / "p"), "init", "--server", server.url,
                    "--username", name)  # fmt: skip
    term.expect("Choose a passcode: ")
    term.type("first-passcode\r")
    term.expect("Again: ")
    term.type("second-passcode\r")
    term.expect("differ; please type it again")
    term.expect("Choose a passcode: ")
    term.type("first-passcode\r")
    term.expect("Again: ")
    term.type("first-passcode\r")
    assert term.wait(60) == 0, term.seen
    assert f"registered {name}".encode() in term.seen
    opened = sealpost("whoami", profile=tmp_path / "p", passcode="first-passcode")
    assert opened.returncode == 0 and name in opened.stdout


@pytest.mark.parametrize("prompt", ["Choose a passcode: ", "Again: "])
def test_ctrl_c_at_a_passcode_prompt_exits_at_once(
    server: ServerProcess, tmp_path: Path, prompt: str
) -> None:
    term = Terminal("--profile", str(tmp_path / "p"), "init", "--server", server.url,
                    "--username", unique_name("tty"))  # fmt: skip
    term.expect("Choose a passcode: ")
    if prompt == "Again: ":
        term.type("first-passcode\r")
        term.expect("Again: ")
    started = time.monotonic()
    term.type("\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground program
    assert term.wait(10) == 130
    assert time.monotonic() - started < 5
    assert b"Traceback" not in term.seen and b"KeyboardInterrupt" not in term.seen
    assert not (tmp_path / "p").exists()


def test_ctrl_c_at_the_passcode_prompt_of_an_existing_profile(
    server: ServerProcess, tmp_path: Path
) -> None:
    _, profile = init(server, tmp_path)
    term = Terminal("--profile", str(profile), "whoami")
    term.expect("Passcode: ")
    term.type("\x03")
    assert term.wait(10) == 130
    assert b"Traceback" not in term.seen
