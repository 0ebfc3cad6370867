"""The key-transparency log: signed tree heads, proofs, and each account's entries.

Every change to an account's keys appends a :class:`~sealpost.transparency.log.LogEntry`
in the same transaction as the change (see :mod:`sealpost.server.storage.base`). The
:class:`LogService` signs the log's state with the server's log key (``DATA/log_key``,
Ed25519; clients pin its public half at ``init``): a new head at most every
``log_head_interval`` seconds while the log grows, and at once when an answer needs a head
covering an entry that the newest head does not (a lookup right after a registration).
Heads are stored; entries and heads are never rewritten, and every proof is read from the
stored complete subtrees (O(log n) rows), never by rebuilding the tree.

Endpoints (all unauthenticated: the log is public, and asking reveals nothing about whom
one talks to beyond what a directory lookup already does):

- ``GET /v1/log/key``: the log's public key;
- ``GET /v1/log/head``: the newest signed tree head;
- ``GET /v1/log/consistency?from=M&to=N``: the RFC 9162 consistency proof from size M to N;
- ``GET /v1/log/inclusion?index=I&size=N``: the inclusion proof of entry I at size N;
- ``GET /v1/log/accounts/{account_id}?after=I``: the account's entries after index I, each
  with the certificates and revocations it commits to and its inclusion proof against the
  head returned with them, and ``latest``: the account's newest entry with its inclusion
  proof and its account-map proof at that head (the entry is the newest, not just one).

A head commits to the log root and to the account map's root (:mod:`sealpost.transparency.
smt`); the map can be proven only at the log's current size, so an answer with a map proof
comes with the newest head, signed at once if the log has grown since the last one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from sealpost.crypto.sign import SigningKey
from sealpost.server.codec import json_response, parse_hex
from sealpost.server.context import Context
from sealpost.server.errors import ApiError, bad_request
from sealpost.server.schema import (
    AbsenceProof,
    LogEntries,
    LoggedEntryOut,
    LogHead,
    Proof,
    PublicKey,
    Transparency,
)
from sealpost.server.storage.base import LoggedEntry, LogLookup, Storage, StorageUnavailable
from sealpost.transparency.log import SignedTreeHead, decode_entry

__all__ = ["MAX_ENTRIES_PAGE", "LogApi", "LogService", "absence_out", "logged_out", "lookup_out"]

log = logging.getLogger("sealpost.server.log")

#: Seconds a process that does not sign waits for the leader's head covering an entry.
FOLLOW_WAIT = 5.0
#: Entries of one account in one answer (an account changes its devices rarely).
MAX_ENTRIES_PAGE = 256
_MAX_SIZE = 2**63 - 1
#: Reads of a lookup before giving up while every read finds the log grown again.
_LOOKUP_TRIES = 8


class LogService:
    """Signs tree heads for the log in ``storage`` and hands out the newest one."""

    def __init__(
        self,
        storage: Storage,
        log_key: SigningKey,
        *,
        interval: float,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._storage = storage
        self._key = log_key
        self._interval = interval
        self._clock_ms = clock_ms
        self._head: SignedTreeHead | None = None
        self._leading = False
        self._lock = asyncio.Lock()
        #: For monitoring (``/metrics``): when a pass of :meth:`run` last completed (Unix
        #: seconds; 0 before the first) and how many failed.
        self.last_pass = 0.0
        self.failures = 0

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    async def head(self, min_size: int = 0) -> SignedTreeHead:
        """The newest head, signing a new one first if it covers fewer than ``min_size``
        entries (or none was ever signed). With several processes only the leader signs
        (:meth:`Storage.leader`); the others serve the newest head it stored, waiting up to
        :data:`FOLLOW_WAIT` seconds for one that covers ``min_size``."""
        if not self._storage.leader():
            self._leading = False
            return await self._follow(min_size)
        if not self._leading:  # just took over: start from the newest head stored
            self._leading = True
            self._head = None
        head = self._head
        if head is not None and head.tree_size >= min_size:
            return head
        async with self._lock:
            if self._head is None:
                stored = await self._storage.log_head()
                self._head = None if stored is None else SignedTreeHead.decode(stored)
            head = self._head
            if head is not None and head.tree_size >= min_size:
                return head
            return await self._sign(await self._storage.log_size())

    async def _follow(self, min_size: int) -> SignedTreeHead:
        deadline = time.monotonic() + FOLLOW_WAIT
        while True:
            stored = await self._storage.log_head()
            head = None if stored is None else SignedTreeHead.decode(stored)
            if head is not None and head.tree_size >= min_size:
                self._head = head
                return head
            if time.monotonic() > deadline or self._storage.leader():
                if self._storage.leader():
                    return await self.head(min_size)
                raise StorageUnavailable("no tree head covers that entry yet")
            await asyncio.sleep(0.05)

    async def _sign(self, size: int) -> SignedTreeHead:
        """Sign the log's current state (at least ``size`` entries: it only grows)."""
        previous = self._head
        if previous is not None and previous.tree_size >= size:
            return previous
        state = await self._storage.log_state()  # size, log root and map root at one instant
        if previous is not None and previous.tree_size >= state.size:
            return previous
        timestamp = self._clock_ms()
        if previous is not None:
            timestamp = max(timestamp, previous.timestamp + 1)  # heads move forward in time
        head = SignedTreeHead.sign(
            self._key,
            tree_size=state.size,
            timestamp=timestamp,
            root=state.root,
            map_root=state.map_root,
        )
        await self._storage.add_log_head(state.size, timestamp, head.encode())
        self._head = head
        return head

    async def head_of_size(self, size: int) -> SignedTreeHead | None:
        """A head of exactly ``size`` entries if that is the log's newest state (signing
        it if need be); ``None`` if the log has moved past it (read again and retry)."""
        head = await self.head(size)
        return head if head.tree_size == size else None

    async def lookup(self, username_lower: str) -> tuple[LogLookup, SignedTreeHead]:
        """The name's entry and map proof with the head they are proven against. The map
        is proven at the log's current size only, so the head is the newest one, signed
        now if the log grew since the last (at most one head per log entry)."""
        for _ in range(_LOOKUP_TRIES):
            found = await self._storage.log_lookup(username_lower)
            head = await self.head_of_size(found.size)
            if head is not None:
                return found, head
        raise ApiError(503, "unavailable", "the log is changing too fast; try again")

    async def run(self) -> None:
        """Sign a head whenever the log has grown, every ``interval`` seconds."""
        while True:
            try:
                if self._storage.leader():
                    size = await self._storage.log_size()
                    if self._head is None or size > self._head.tree_size:
                        await self.head(size)
                self.last_pass = time.time()
            except Exception:
                self.failures += 1
                log.exception("signing a tree head failed")
            await asyncio.sleep(self._interval)


def logged_out(item: LoggedEntry, proof: list[bytes]) -> LoggedEntryOut:
    return LoggedEntryOut(
        index=item.index,
        entry=item.entry,
        certificates=list(item.certificates),
        revocations=list(item.revocations),
        proof=proof,
    )


def lookup_out(found: LogLookup, head: SignedTreeHead) -> Transparency | None:
    """A lookup's ``transparency`` object: the newest entry with its inclusion proof and
    its map proof, at ``head``; ``None`` for a name with no account (see :func:`absence_out`)."""
    if found.latest is None:
        return None
    return Transparency(
        head=head.encode(),
        index=found.latest.index,
        entry=found.latest.entry,
        proof=list(found.inclusion),
        map_proof=found.map_proof,
    )


def absence_out(found: LogLookup, head: SignedTreeHead) -> AbsenceProof:
    """The map's proof that the name looked up has no account, at ``head``: of absence,
    or, for a removed account's name, of its deletion entry as the name's value."""
    if found.latest is not None and found.latest.deletion:
        return AbsenceProof(
            head=head.encode(),
            map_proof=found.map_proof,
            index=found.latest.index,
            entry=found.latest.entry,
            proof=list(found.inclusion),
        )
    return AbsenceProof(head=head.encode(), map_proof=found.map_proof)


def _size_param(request: Request, name: str, *, minimum: int = 0) -> int:
    text = request.query_params.get(name, "")
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > _MAX_SIZE:
        raise bad_request(f"query parameter {name} must be an integer")
    value = int(text)
    if value < minimum:
        raise bad_request(f"query parameter {name} must be at least {minimum}")
    return value


class LogApi:
    def __init__(self, ctx: Context, service: LogService) -> None:
        self._ctx = ctx
        self._log = service

    async def key(self, request: Request) -> Response:
        return json_response(PublicKey(public_key=self._log.public_key))

    async def head(self, request: Request) -> Response:
        head = await self._log.head()
        return json_response(LogHead(head=head.encode(), tree_size=head.tree_size))

    async def consistency(self, request: Request) -> Response:
        first = _size_param(request, "from", minimum=1)
        second = _size_param(request, "to", minimum=1)
        size = await self._ctx.storage.log_size()
        if first > second or second > size:
            raise bad_request(f"need 1 <= from <= to <= {size}")
        proof = await self._ctx.storage.log_consistency(first, second)
        return json_response(Proof(proof=list(proof)))

    async def inclusion(self, request: Request) -> Response:
        index = _size_param(request, "index")
        tree_size = _size_param(request, "size", minimum=1)
        size = await self._ctx.storage.log_size()
        if index >= tree_size or tree_size > size:
            raise bad_request(f"need index < size <= {size}")
        proof = await self._ctx.storage.log_inclusion(index, tree_size)
        return json_response(Proof(proof=list(proof)))

    async def account(self, request: Request) -> Response:
        account_id = parse_hex(request.path_params["account_id"], 16, "account id")
        after = -1
        if "after" in request.query_params:
            after = _size_param(request, "after")
        entries = await self._ctx.storage.log_entries(account_id, after=after)
        page = entries[:MAX_ENTRIES_PAGE]
        account = await self._ctx.storage.account_by_id(account_id)
        username = None if account is None else account.username.lower()
        if username is None and entries and entries[-1].deletion:  # a removed account
            username = decode_entry(entries[-1].entry).username
        latest = None
        if username is None:
            head = await self._log.head(max((e.index + 1 for e in page), default=0))
        else:  # the newest entry, proven newest by the map, at the head of the answer
            found, head = await self._log.lookup(username)
            latest = lookup_out(found, head)
        out = [
            logged_out(e, await self._ctx.storage.log_inclusion(e.index, head.tree_size))
            for e in page
        ]
        return json_response(
            LogEntries(
                head=head.encode(), entries=out, more=len(entries) > len(page), latest=latest
            )
        )
