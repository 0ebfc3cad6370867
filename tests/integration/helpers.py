"""A real server process and a protocol-level test client for the integration tests.

:class:`ServerProcess` runs ``python -m sealpost.cli server`` on 127.0.0.1 with port 0 and
reads the URL it prints; its stdout and stderr go to files in ``logs`` (the breach drill
reads them). :class:`Device` holds real sealpost keys; :class:`Client` signs requests with
:func:`sealpost.protocol.signing.sign_request` and speaks the WebSocket protocol.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from sealpost.client.transport import KEEP_ALIVE
from sealpost.crypto.dh import DhPublicKey
from sealpost.crypto.sign import VerifyKey
from sealpost.protocol import (
    AccountIdentity,
    DeviceKeys,
    KemPreKeyKind,
    KemPreKeyPair,
    OneTimePreKeyPair,
    PreKeyBundle,
    PreKeyMessage,
    SenderCertificate,
    Session,
    SignedPreKeyPair,
    seal,
    unseal,
)
from sealpost.protocol.signing import sign_request, sign_websocket_challenge
from sealpost.server.storage.sqlite import log_account_state

TIMEOUT = 10.0
_names = itertools.count()


def unique_name(prefix: str = "user") -> str:
    """A username no other test on the shared server uses."""
    return f"{prefix}{os.getpid() % 1000}_{next(_names)}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def wait_for(
    predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class ServerProcess:
    """``sealpost server`` as a subprocess; ``url`` once started."""

    def __init__(
        self, data: Path, logs: Path, *args: str, command: list[str] | None = None
    ) -> None:
        self.data = data
        self.logs = logs
        self.args = args
        self.command = command  # another server program that prints the same line
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._starts = 0

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        out = (self.logs / f"stdout.{self._starts}.log").open("wb")
        err = (self.logs / f"stderr.{self._starts}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALPOST_")}
        cmd = self.command or [
            *(sys.executable, "-m", "sealpost.cli", "server", "--data", str(self.data)),
            *("--host", "127.0.0.1", "--port", "0", *self.args),
        ]
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        out.close()
        err.close()
        stdout = self.logs / f"stdout.{self._starts}.log"

        def started() -> str | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode}: "
                    + (self.logs / f"stderr.{self._starts}.log").read_text()
                )
            for line in stdout.read_text().splitlines():
                if "listening on " in line:
                    return line.split("listening on ", 1)[1].strip()
            return None

        self.url = wait_for(started, timeout, "the server to print its URL")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/v1/stream"


@dataclass
class Device:
    """One device of an account with its private keys, as a client would hold them."""

    account: AccountIdentity
    keys: DeviceKeys
    signed_prekey: SignedPreKeyPair
    kem_last_resort: KemPreKeyPair
    one_time: dict[int, OneTimePreKeyPair] = field(default_factory=dict)
    kem_one_time: dict[int, KemPreKeyPair] = field(default_factory=dict)
    delivery_token: bytes = b""

    @classmethod
    def generate(
        cls,
        account: AccountIdentity | None = None,
        device_id: int = 1,
        *,
        one_time: int = 5,
        kem_one_time: int = 2,
        first_key_id: int = 100,
    ) -> Device:
        rng = os.urandom
        now = int(time.time())
        account = account or AccountIdentity.generate(rng)
        keys = DeviceKeys.generate(account, device_id, now=now, rng=rng)
        device = cls(
            account,
            keys,
            keys.new_signed_prekey(1, now=now, rng=rng),
            keys.new_kem_prekey(1, KemPreKeyKind.LAST_RESORT, now=now, rng=rng),
            delivery_token=rng(32),
        )
        device.add_prekeys(one_time, kem_one_time, first_key_id)
        return device

    def add_prekeys(self, one_time: int, kem_one_time: int, first_key_id: int) -> None:
        now = int(time.time())
        for i in range(first_key_id, first_key_id + one_time):
            self.one_time[i] = OneTimePreKeyPair.generate(i, rng=os.urandom)
        for i in range(first_key_id, first_key_id + kem_one_time):
            self.kem_one_time[i] = self.keys.new_kem_prekey(
                i, KemPreKeyKind.ONE_TIME, now=now, rng=os.urandom
            )

    @property
    def account_id(self) -> bytes:
        return self.account.account_id

    @property
    def device_id(self) -> int:
        return self.keys.device_id

    def prekeys_json(self) -> dict[str, Any]:
        return {
            "signed_prekey": b64(self.signed_prekey.public.encode()),
            "kem_last_resort": b64(self.kem_last_resort.public.encode()),
            "one_time_prekeys": [b64(k.public.encode()) for k in self.one_time.values()],
            "kem_one_time_prekeys": [b64(k.public.encode()) for k in self.kem_one_time.values()],
        }

    def registration(self, username: str) -> dict[str, Any]:
        return {
            "username": username,
            "account_key": b64(self.account.public_key().public_bytes_raw()),
            "certificate": b64(self.keys.certificate.encode()),
            "delivery_token": b64(self.delivery_token),
            **self.prekeys_json(),
        }

    def device_json(self) -> dict[str, Any]:
        """The body that adds this device to its (already registered) account."""
        return {"certificate": b64(self.keys.certificate.encode()), **self.prekeys_json()}

    def secrets(self) -> list[bytes]:
        """Every private key byte string of this device (for the breach drill)."""
        out = [
            self.account.signing_key.private_bytes_raw(),
            self.keys.signing_key.private_bytes_raw(),
            self.keys.identity_key.private_bytes_raw(),
            self.signed_prekey.private_key.private_bytes_raw(),
            self.kem_last_resort.private_key.seed_bytes(),
        ]
        out += [k.private_key.private_bytes_raw() for k in self.one_time.values()]
        out += [k.private_key.seed_bytes() for k in self.kem_one_time.values()]
        return out


class Client:
    """HTTP and WebSocket access for one device."""

    def __init__(self, url: str, device: Device | None = None) -> None:
        self.url = url
        self.device = device
        # idle connections dropped before the relay's keep-alive closes them, as the client
        # does: a reuse racing that close fails unanswered
        self.http = httpx.Client(
            base_url=url, timeout=TIMEOUT, limits=httpx.Limits(keepalive_expiry=KEEP_ALIVE)
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        signed: bool = True,
        headers: dict[str, str] | None = None,
        now: int | None = None,
        nonce: bytes | None = None,
    ) -> httpx.Response:
        body = content if content is not None else b""
        if json_body is not None:
            body = json.dumps(json_body).encode()
        all_headers = {"content-type": "application/json"} if json_body is not None else {}
        if signed:
            assert self.device is not None
            all_headers |= sign_request(
                self.device.keys.signing_key,
                self.device.account_id,
                self.device.device_id,
                method,
                path,
                body,
                now=int(time.time()) if now is None else now,
                nonce=nonce or os.urandom(16),
            )
        all_headers |= headers or {}
        return self.http.request(method, path, content=body, headers=all_headers)

    def register(self, username: str, *, invite: str | None = None) -> httpx.Response:
        assert self.device is not None
        body = self.device.registration(username)
        if invite is not None:
            body["invite"] = invite
        return self.request("POST", "/v1/accounts", json_body=body)

    def add_device(self) -> httpx.Response:
        assert self.device is not None
        return self.request("POST", "/v1/devices", json_body=self.device.device_json())

    def lookup(self, username: str) -> httpx.Response:
        return self.request("GET", f"/v1/accounts/{username}", signed=False)

    def send_sealed(
        self, envelopes: list[tuple[bytes, int, bytes]], tokens: dict[bytes, bytes] | None = None
    ) -> httpx.Response:
        headers = {}
        if tokens:
            headers["X-Sealpost-Delivery-Token"] = ",".join(
                f"{a.hex()}:{b64(t)}" for a, t in tokens.items()
            )
        return self.request(
            "PUT",
            "/v1/messages",
            json_body=envelopes_json(envelopes),
            signed=False,
            headers=headers,
        )

    def stream(self) -> Stream:
        assert self.device is not None
        return Stream(self.url.replace("http://", "ws://", 1) + "/v1/stream", self.device)


def envelopes_json(envelopes: list[tuple[bytes, int, bytes]]) -> dict[str, Any]:
    return {
        "messages": [
            {"account_id": a.hex(), "device_id": d, "body": b64(body)} for a, d, body in envelopes
        ]
    }


class Stream:
    """An authenticated WebSocket to /v1/stream."""

    def __init__(self, url: str, device: Device, *, authenticate: bool = True) -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(url, open_timeout=TIMEOUT, close_timeout=2)
        )
        try:
            self._handshake(device, authenticate)
        except BaseException:
            self._stack.close()
            raise

    def _handshake(self, device: Device, authenticate: bool) -> None:
        challenge = json.loads(self.ws.recv(timeout=TIMEOUT))
        assert challenge["type"] == "challenge"
        self.challenge = unb64(challenge["challenge"])
        if authenticate:
            self.ws.send(
                json.dumps(
                    sign_websocket_challenge(
                        device.keys.signing_key, device.account_id, device.device_id, self.challenge
                    )
                )
            )
            ready = json.loads(self.ws.recv(timeout=TIMEOUT))
            assert ready == {"type": "ready"}, ready

    def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        return frame

    def receive_messages(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < count:
            frame = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if frame["type"] == "empty":  # the queue was drained; more may come
                continue
            assert frame["type"] == "message", frame
            out.append(frame)
        return out

    def ack(self, message_id: str) -> None:
        self.ws.send(json.dumps({"type": "ack", "id": message_id}))

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect_files(*roots: Path) -> bytes:
    """Every byte of every file under ``roots`` (the thief's copy)."""
    chunks = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                chunks.append(path.read_bytes())
    return b"\x00".join(chunks)


def encodings(secret: bytes) -> list[bytes]:
    """The forms a secret might take in a file or a log: raw, hex, base64."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
    ]


def start_thread(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------- real end-to-end crypto


def server_public_key(client: Client) -> bytes:
    return unb64(client.request("GET", "/v1/certificate/server", signed=False).json()["public_key"])


def seal_first_message(sender: Client, recipient: Device, plaintext: bytes) -> bytes:
    """Fetch the recipient's bundle, start a PQXDH session, encrypt ``plaintext`` and seal it
    with a server-issued sender certificate: the envelope a real client would send."""
    assert sender.device is not None
    response = sender.request(
        "GET", f"/v1/keys/{recipient.account_id.hex()}/{recipient.device_id}", signed=False
    )
    assert response.status_code == 200, response.text
    bundle = PreKeyBundle.decode(unb64(response.json()["bundle"]))
    session = Session.initiate(
        sender.device.keys,
        bundle,
        expected_account_key=recipient.account.public_key().public_bytes_raw(),
    )
    cert_response = sender.request("GET", "/v1/certificate/sender")
    assert cert_response.status_code == 200, cert_response.text
    cert = SenderCertificate.decode(unb64(cert_response.json()["certificate"]))
    return seal(
        session.encrypt(plaintext),
        cert,
        DhPublicKey.from_public_bytes(bundle.certificate.identity_key),
    )


def open_first_message(
    recipient: Device, envelope: bytes, server_key: bytes
) -> tuple[bytes, bytes]:
    """Unseal and decrypt a first message; returns (sender account id, plaintext)."""
    opened = unseal(
        envelope,
        recipient.keys.identity_key,
        server_key=VerifyKey.from_public_bytes(server_key),
        now=int(time.time()),
    )
    message = opened.message
    assert isinstance(message, PreKeyMessage)
    _, plaintext = Session.respond(
        recipient.keys,
        message,
        signed_prekey=recipient.signed_prekey,
        one_time_prekey=recipient.one_time.get(message.one_time_prekey_id or -1),
        kem_prekey=recipient.kem_one_time.get(message.kem_prekey_id or -1)
        if message.kem_prekey_kind == KemPreKeyKind.ONE_TIME
        else recipient.kem_last_resort,
    )
    return opened.sender.account_id, plaintext


def swap_account(server: ServerProcess, name: str, replacement: str) -> None:
    """Play the server (or a user re-registering): ``name`` now answers with the account
    of ``replacement``, and the server's key-transparency log says so (an unlogged swap
    is refused outright: tests/adversarial/test_hostile_server.py)."""
    db = sqlite3.connect(server.data / "sealpost.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    (old_id,) = db.execute(
        "SELECT account_id FROM accounts WHERE username_lower = ?", (name,)
    ).fetchone()
    (new_id,) = db.execute(
        "SELECT account_id FROM accounts WHERE username_lower = ?", (replacement,)
    ).fetchone()
    db.execute(
        "UPDATE accounts SET username_lower = ?, username = ? WHERE account_id = ?",
        (name + "-old", name + "-old", old_id),
    )
    db.execute(
        "UPDATE accounts SET username_lower = ?, username = ? WHERE account_id = ?",
        (name, name, new_id),
    )
    log_account_state(db, bytes(old_id))
    log_account_state(db, bytes(new_id))
    db.execute("COMMIT")
    db.close()
