"""A witness of a server's key-transparency log (``sealpost audit``).

The auditor needs no account: it pins the server's log key on its first run (or takes it
from ``--log-key``), keeps the newest signed tree head it has checked in a state file, and
on every run fetches the server's newest head and checks that

- the log key is still the pinned one,
- the head is signed by it,
- the head is consistent with the one kept (an RFC 9162 consistency proof, in whichever
  direction: a head older than the kept one must be a prefix of it), and two heads of
  the same size have the same root,
- time does not run backwards: a larger tree never has an earlier timestamp.

Anything else is a :class:`AuditFailure` whose report names the two heads; both are
signed by the server, so the report is evidence a third party can check. Run it from cron,
or with ``--loop`` as a long-running witness; users who compare auditors' heads (or whose
clients gossip them) share one view of the log or catch the server.

State file (``DIR/audit.json``, written atomically)::

    {"version": 1, "server": URL, "log_key": b64, "head": b64 | null, "checked": int}
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealpost._errors import ProtocolError
from sealpost.client.errors import ClientError, ServerError
from sealpost.client.transport import Transport, unb64
from sealpost.crypto.sign import VerifyKey
from sealpost.transparency.log import SignedTreeHead, legacy_head_anchor
from sealpost.transparency.merkle import EMPTY_ROOT, verify_consistency

__all__ = ["AuditFailure", "AuditReport", "Auditor"]

STATE_FILE = "audit.json"
_VERSION = 1


class AuditFailure(ClientError):
    """The server's log is not one append-only history, or its key changed."""

    def __init__(self, detail: str, report: AuditReport | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.report = report


@dataclass(frozen=True, slots=True)
class AuditReport:
    server: str
    tree_size: int
    timestamp: int
    root: bytes
    previous_size: int | None
    consistent: bool
    detail: str
    head: bytes  # the signed head (evidence)
    previous_head: bytes | None

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "tree_size": self.tree_size,
            "timestamp": self.timestamp,
            "root": self.root.hex(),
            "previous_size": self.previous_size,
            "consistent": self.consistent,
            "detail": self.detail,
            "head": base64.b64encode(self.head).decode(),
            "previous_head": None
            if self.previous_head is None
            else base64.b64encode(self.previous_head).decode(),
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Auditor:
    def __init__(self, server_url: str, state_dir: Path, *, log_key: bytes | None = None) -> None:
        self.server_url = server_url.rstrip("/")
        self.state_dir = state_dir
        self._pinned = log_key

    @property
    def _path(self) -> Path:
        return self.state_dir / STATE_FILE

    def _load(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ClientError(f"the audit state {self._path} is unreadable") from exc
        if not isinstance(doc, dict) or doc.get("version") != _VERSION:
            raise ClientError(f"the audit state {self._path} is not sealpost's")
        if doc.get("server") != self.server_url:
            raise ClientError(f"the audit state in {self.state_dir} is for {doc.get('server')}")
        return doc

    def _save(self, log_key: bytes, head: SignedTreeHead, checked: int) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "version": _VERSION,
            "server": self.server_url,
            "log_key": _b64(log_key),
            "head": _b64(head.encode()),
            "checked": checked,
        }
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)

    async def check(self) -> AuditReport:
        """One round: fetch the newest head and check it against the kept one. Raises
        :class:`AuditFailure` (with a report) when the log misbehaved; the kept head is
        then left as it was, so every later run fails too until someone looks."""
        state = self._load()
        pinned = self._pinned
        if state is not None:
            stored_key = base64.b64decode(state["log_key"])
            if pinned is not None and pinned != stored_key:
                raise AuditFailure("--log-key is not the key this state pinned")
            pinned = stored_key
        async with Transport(self.server_url) as anonymous:
            doc = await anonymous.request("GET", "/v1/log/key", signed=False)
            served_key = unb64(doc.get("public_key") if isinstance(doc, dict) else None)
            if pinned is not None and served_key != pinned:
                raise AuditFailure("the server's log key is not the pinned one")
            log_key = pinned or served_key
            doc = await anonymous.request("GET", "/v1/log/head", signed=False)
            raw = unb64(doc.get("head") if isinstance(doc, dict) else None)
            try:
                head = SignedTreeHead.decode(raw)
                head.verify(VerifyKey.from_public_bytes(log_key))
            except ProtocolError:
                raise AuditFailure("the server's tree head is not signed by its log key") from None
            previous = None
            if state is not None and state.get("head"):
                previous = _kept_head(base64.b64decode(state["head"]))
            report = await self._compare(anonymous, head, previous)
        checked = int(state.get("checked", 0)) + 1 if state else 1
        newest = head if previous is None or head.tree_size >= previous.tree_size else previous
        self._save(log_key, newest, checked)
        return report

    async def _compare(
        self, anonymous: Transport, head: SignedTreeHead, previous: SignedTreeHead | None
    ) -> AuditReport:
        def report(consistent: bool, detail: str) -> AuditReport:
            return AuditReport(
                self.server_url,
                head.tree_size,
                head.timestamp,
                head.root,
                None if previous is None else previous.tree_size,
                consistent,
                detail,
                head.encode(),
                None if previous is None else previous.encode(),
            )

        if previous is None:
            return report(True, "first head seen; pinned")
        if head.tree_size == previous.tree_size:
            legacy = previous.signature == _LEGACY_SIGNATURE
            if head.root != previous.root or (not legacy and head.map_root != previous.map_root):
                raise AuditFailure(
                    f"two signed heads of size {head.tree_size} with different roots",
                    report(False, "same size, different roots"),
                )
            return report(True, "no new entries")
        small, big = (previous, head) if head.tree_size > previous.tree_size else (head, previous)
        if big.timestamp < small.timestamp:
            raise AuditFailure(
                "a larger tree head is older than a smaller one",
                report(False, "time ran backwards"),
            )
        if small.tree_size == 0:  # every log extends the empty one, whose root is fixed
            if small.root != EMPTY_ROOT:
                raise AuditFailure("an empty log with a root", report(False, "bad empty root"))
            return report(True, f"consistent with size {previous.tree_size}")
        try:
            doc = await anonymous.request(
                "GET",
                f"/v1/log/consistency?from={small.tree_size}&to={big.tree_size}",
                signed=False,
            )
            proof = [unb64(h) for h in doc["proof"]]
            verify_consistency(small.tree_size, big.tree_size, small.root, big.root, proof)
        except (ServerError, ProtocolError, KeyError, TypeError) as exc:
            raise AuditFailure(
                f"the log of size {big.tree_size} does not extend the log of size "
                f"{small.tree_size} ({type(exc).__name__})",
                report(False, "not consistent"),
            ) from None
        if head is small:
            return report(True, f"an older head than the kept one (size {previous.tree_size})")
        return report(True, f"consistent with size {previous.tree_size}")


#: Marks a kept head of the first format (no map root), read back by :func:`_kept_head`.
_LEGACY_SIGNATURE = bytes(64)


def _kept_head(raw: bytes) -> SignedTreeHead:
    """The head the state file kept; one of the first format (before heads committed to
    the account map) keeps its size and log root, which the next head must extend."""
    try:
        return SignedTreeHead.decode(raw)
    except ProtocolError:
        size, root = legacy_head_anchor(raw)
        return SignedTreeHead(size, 0, root, EMPTY_ROOT, _LEGACY_SIGNATURE)
