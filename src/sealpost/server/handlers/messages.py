"""Sending, fetching and acknowledging messages.

Sending (``PUT /v1/messages``) takes one envelope per destination device. It may be

- **sealed** (no authentication headers): the server does not learn the sender. For each
  destination account the request carries a delivery token in ``X-Sealpost-Delivery-Token``
  (``<account id hex>:<base64 32 bytes>``, comma separated for several accounts), checked
  in constant time against the SHA-256 stored at registration; or, without a token, the
  account must accept sealed messages from anyone (the default) and the request is counted
  against a per-address limit, and its messages and bytes against what that address may
  queue for that account (``sealed_quota_*``). A wrong token is refused whatever the flag
  says. Every sealed send's stored bytes count against its address's
  ``sealed_bytes_per_address`` (a multi-recipient body once).
- **authenticated** (signed by a device): used for the sender's copies to its own other
  devices, where the server knows the sender anyway. The sending device is exempt from its
  own account's device list.

Every destination account must be named with exactly all its devices; otherwise nothing is
stored and the answer is 409 ``mismatched_devices`` with, per account, the missing and
extra device ids and the current certificates, so the client can refresh and retry.
The answer is sent only after the envelopes are committed to disk.

A send is idempotent on its envelopes' ``send_id`` (optional; one for a whole multi send):
the queued message's id is derived from it and the destination device
(:func:`~sealpost.protocol.send_id.queued_message_id`), and an envelope whose message is
still queued stores nothing again, so a client that lost the answer sends the same bytes
again and gets the same answer (``stored`` counts the envelopes accepted). Once the first
copy was delivered and acknowledged, a resend is stored and pushed anew: the recipient
drops it by the message id inside the encryption, as it drops any replay. Nothing about the sender
(address, account, timing beyond the queue's own ``received_at``) is stored or logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import weakref
from collections import deque
from collections.abc import Hashable
from functools import partial

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sealpost.entropy import Rng
from sealpost.protocol.group_sealed import GROUP_SEALED_MIN, GROUP_SEALED_PREFIX
from sealpost.protocol.sealed_multi import MULTI_SEALED_PREFIX, WRAP_LEN, assemble
from sealpost.protocol.send_id import queued_message_id
from sealpost.server.authn import AuthenticatedDevice, Authenticator, rate_limited
from sealpost.server.codec import decode_b64, json_response, parse_hex
from sealpost.server.context import Context
from sealpost.server.errors import ApiError, bad_request, too_large
from sealpost.server.handlers.accounts import devices_out
from sealpost.server.ratelimit import Limiter, LocalLimiter
from sealpost.server.requests import client_address, read_body
from sealpost.server.schema import (
    Mismatch,
    MultiSendRequest,
    Queued,
    QueuedMessage,
    SendRequest,
    Stored,
    Tokens,
    decode,
)
from sealpost.server.storage.base import (
    AccountRecord,
    Envelope,
    Fence,
    MismatchedDevices,
    QueueFull,
    SharedEnvelope,
    UnknownAccount,
)

__all__ = [
    "DELIVERY_TOKEN_HEADER",
    "MessagesApi",
    "PreparedSend",
    "parse_delivery_tokens",
    "token_map",
]

log = logging.getLogger("sealpost.server.messages")

DELIVERY_TOKEN_HEADER = "X-Sealpost-Delivery-Token"  # noqa: S105 (a header name)
MESSAGE_ID_LEN = 16
#: Random message ids drawn from the RNG at once (4 KiB): one read of the OS's CSPRNG for
#: this many sends without a send id, instead of a system call each.
ID_POOL = 256


class _MessageIds:
    """Random message ids for sends without a send id: ``MESSAGE_ID_LEN`` bytes each, cut
    in turn from one draw of ``rng`` of ``ID_POOL`` of them. Each id is 16 bytes of the
    CSPRNG's output used once, as if drawn alone: as unpredictable, and unique with the
    same odds (a 128-bit collision). What is left of a draw is forgotten in a child process
    after a fork, so that two processes never hand out the same ids (a second copy of an
    id would be taken for a resend and not stored)."""

    __slots__ = ("__weakref__", "_next", "_pool", "_rng")

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._pool = b""
        self._next = 0
        _POOLS.add(self)

    def __call__(self) -> bytes:
        start = self._next
        if start >= len(self._pool):
            self._pool = self._rng(ID_POOL * MESSAGE_ID_LEN)
            start = 0
        self._next = start + MESSAGE_ID_LEN
        return self._pool[start : start + MESSAGE_ID_LEN]

    def forget(self) -> None:
        self._pool = b""
        self._next = 0


_POOLS: weakref.WeakSet[_MessageIds] = weakref.WeakSet()


def _forget_pools() -> None:
    for pool in list(_POOLS):
        pool.forget()


os.register_at_fork(after_in_child=_forget_pools)


def parse_delivery_tokens(value: str, limit: int) -> dict[bytes, bytes]:
    tokens: dict[bytes, bytes] = {}
    items = [item.strip() for item in value.split(",") if item.strip()]
    if len(items) > limit:
        raise too_large("too many delivery tokens")
    for item in items:
        account_hex, sep, token_b64 = item.partition(":")
        if not sep:
            raise bad_request(f"{DELIVERY_TOKEN_HEADER} entries are <account hex>:<base64>")
        token = decode_b64(token_b64, DELIVERY_TOKEN_HEADER)
        if len(token) != 32:
            raise bad_request("delivery tokens are 32 bytes")
        tokens[parse_hex(account_hex, 16, "delivery token account id")] = token
    return tokens


def token_map(tokens: Tokens | None, limit: int) -> dict[bytes, bytes]:
    """Decoded ``tokens`` (``{account id hex: 32 bytes}``, checked by the schema) by
    account id; at most ``limit`` of them."""
    if not tokens:
        return {}
    if len(tokens) > limit:
        raise too_large("too many delivery tokens")
    return {bytes.fromhex(account_hex): token for account_hex, token in tokens.items()}


class PreparedSend(msgspec.Struct, frozen=True):
    """A checked send, ready to be stored: what :meth:`MessagesApi.submit` takes (a struct,
    as :class:`~.storage.base.Envelope`: one is made per send)."""

    envelopes: list[Envelope]
    exempt: dict[bytes, int]
    #: A multi-recipient send: its body, stored once, and each device's own part.
    shared: tuple[bytes, list[SharedEnvelope]] | None = None


def _reached(envelopes: list[Envelope]) -> dict[bytes, tuple[int, int]]:
    """A sealed send's destination accounts, each with its messages and bytes."""
    reached: dict[bytes, tuple[int, int]] = {}
    for e in envelopes:
        count, size = reached.get(e.account_id, (0, 0))
        reached[e.account_id] = (count + 1, size + len(e.body))
    return reached


def _authorized(
    tokens: dict[bytes, bytes], account_id: bytes, account: AccountRecord | None
) -> bool:
    """Whether a sealed send may reach ``account``: by its delivery token (``False``), or
    as a stranger, the account open to anyone (``True``). Raises :class:`ApiError`."""
    if account is None:
        raise ApiError(404, "not_found", "no such account")
    token = tokens.get(account_id)
    if token is not None:
        digest = hashlib.sha256(token).digest()
        if not hmac.compare_digest(digest, account.delivery_token_hash):
            raise ApiError(403, "forbidden", "delivery token rejected")
        return False
    if account.sealed_from_anyone:
        return True
    raise ApiError(403, "forbidden", "recipient requires a delivery token")


class MessagesApi:
    """Sends arrive over HTTP (``PUT /v1/messages``) or as ``send`` frames on a WebSocket
    (:mod:`sealpost.server.stream`); both go through :meth:`prepare` and :meth:`submit`."""

    def __init__(self, ctx: Context, auth: Authenticator) -> None:
        self._ctx = ctx
        self._auth = auth
        self._waking: set[tuple[bytes, int]] = set()  # devices to wake, next iteration
        # Sends being stored, in the order queued, whose devices are woken once stored
        # (:meth:`_settle`), and whether a callback waits on the first of them.
        self._storing: deque[tuple[asyncio.Future[int], list[Envelope]]] = deque()
        self._watching = False
        self._publishing: set[asyncio.Task[None]] = set()
        self._stored_anew = 0  # for the metric, counted with ``_waking``
        self._new_id = _MessageIds(ctx.rng)
        # Whether every limit a sealed send takes is this process's own, answered from
        # memory (then :meth:`prepare_now` can run it without a coroutine).
        limits = ctx.limits
        self._limits_now = all(
            isinstance(limiter, LocalLimiter)
            for limiter in (
                ctx.per_address,
                ctx.sealed_per_address,
                limits.sealed_messages,
                limits.sealed_bytes,
                limits.sealed_bytes_per_address,
            )
        )

    def _envelopes(self, doc: SendRequest) -> list[Envelope]:
        cfg = self._ctx.config
        items = doc.messages
        if len(items) > cfg.max_envelopes:
            raise too_large(f"messages holds more than {cfg.max_envelopes} items")
        seen: set[tuple[bytes, int]] = set()
        out = []
        total = 0
        new_id = self._new_id
        for item in items:
            body = item.body
            if len(body) > cfg.max_envelope:
                raise too_large(f"an envelope is over {cfg.max_envelope} bytes")
            total += len(body)
            if total > cfg.max_message_request:
                raise too_large(f"a send is over {cfg.max_message_request} bytes")
            key = (bytes.fromhex(item.account_id), item.device_id)
            if key in seen:
                raise bad_request("a device is named twice")
            seen.add(key)
            message_id = (
                new_id()
                if item.send_id is None
                else queued_message_id(item.send_id, key[0], key[1])
            )
            out.append(Envelope(message_id, key[0], key[1], body))
        return out

    def _multi_envelopes(self, doc: MultiSendRequest) -> list[Envelope]:
        """A multi-recipient send. Either a group-sealed ``body`` (``0x01 0x23 ...``) and
        ``recipients`` as ``[account id hex, device id]``, each device storing the body as
        it is; or (the legacy form) a ``shared`` part and ``[account id hex, device id,
        48-byte wrap base64]``, each device storing ``0x01 0x22 || wrap || shared``."""
        cfg = self._ctx.config
        body, shared = doc.body, doc.shared
        if body is not None:
            if len(body) < GROUP_SEALED_MIN or body[:2] != GROUP_SEALED_PREFIX:
                raise bad_request("body is not a group-sealed envelope")
            if len(body) > cfg.max_envelope:
                raise too_large(f"an envelope is over {cfg.max_envelope} bytes")
            stored = [(a, d, body) for a, d in doc.group_recipients()]
        elif shared is not None:
            if len(shared) < 48:
                raise bad_request("shared is too short to be a sealed message")
            if len(shared) + 2 + WRAP_LEN > cfg.max_envelope:
                raise too_large(f"an envelope is over {cfg.max_envelope} bytes")
            stored = [(a, d, assemble(w, shared)) for a, d, w in doc.wrapped_recipients()]
        else:
            raise bad_request("body or shared is required")
        if len(stored) > cfg.max_multi_recipients:
            raise too_large(f"recipients holds more than {cfg.max_multi_recipients} items")
        seen: set[tuple[bytes, int]] = set()
        out = []
        for account_hex, device_id, envelope in stored:
            key = (bytes.fromhex(account_hex), device_id)
            if key in seen:
                raise bad_request("a device is named twice")
            seen.add(key)
            message_id = (
                self._new_id()
                if doc.send_id is None
                else queued_message_id(doc.send_id, key[0], key[1])
            )
            out.append(Envelope(message_id, key[0], key[1], envelope))
        return out

    async def prepare_multi(
        self, doc: MultiSendRequest, *, tokens: dict[bytes, bytes], address: str
    ) -> PreparedSend:
        """A multi-recipient sealed send, authorized like a sealed one (per account: its
        delivery token, or its open flag). Raises :class:`ApiError`; stores nothing."""
        envelopes = self._multi_envelopes(doc)
        # Stored once for all: the group-sealed body as it is, or the legacy form's shared
        # part behind each device's own 0x01 0x22 || wrap.
        own = 0 if doc.body is not None else len(MULTI_SEALED_PREFIX) + WRAP_LEN
        body = envelopes[0].body[own:]
        stored = len(body) + own * len(envelopes)
        await self._check_sealed(tokens, envelopes, address, stored)
        shared = [
            SharedEnvelope(e.message_id, e.account_id, e.device_id, e.body[:own]) for e in envelopes
        ]
        return PreparedSend(envelopes, {}, (body, shared))

    async def send_multi(self, request: Request) -> Response:
        """``PUT /v1/messages/multi``: the HTTP form of the ``send_multi`` frame."""
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_frame)
        doc = decode(body, MultiSendRequest)
        tokens = token_map(doc.tokens, cfg.max_envelopes * 8)
        prepared = await self.prepare_multi(doc, tokens=tokens, address=client_address(request))
        return json_response(Stored(stored=await self.submit(prepared)))

    async def _check_sealed(
        self, tokens: dict[bytes, bytes], envelopes: list[Envelope], address: str, stored: int
    ) -> None:
        """Authorize a sealed send per destination account (its delivery token, or its open
        flag), then charge the sending address: ``stored`` bytes against its sealed-send
        byte quota, and for each account reached without a token (as a stranger) the
        messages and bytes queued for it against that pair's quota, so no address can fill
        an open account's queue. Raises :class:`ApiError`."""
        reached = _reached(envelopes)
        strangers = []
        storage = self._ctx.storage
        for account_id in reached:
            account = storage.account_known(account_id) or await storage.account_by_id(account_id)
            if _authorized(tokens, account_id, account):
                strangers.append(account_id)
        # Each take answered from memory where it can be (``take_now``), without a coroutine.
        for limiter, key, amount in self._charges(reached, strangers, address, stored):
            wait = limiter.take_now(key, amount)
            if wait is None:
                wait = await limiter.take(key, amount)
            if wait:
                raise rate_limited(wait)

    def _charges(
        self,
        reached: dict[bytes, tuple[int, int]],
        strangers: list[bytes],
        address: str,
        stored: int,
    ) -> list[tuple[Limiter, Hashable, float]]:
        """What a sealed send is charged, in order (the first refusal ends it): with
        strangers, a sealed send of the address, then each stranger's messages and bytes
        for the pair; last its bytes against the address's quota."""
        limits = self._ctx.limits
        charges: list[tuple[Limiter, Hashable, float]] = []
        if strangers:
            charges.append((self._ctx.sealed_per_address, address, 1.0))
            for account_id in strangers:
                count, size = reached[account_id]
                pair = (address, account_id)
                charges.append((limits.sealed_messages, pair, count))
                charges.append((limits.sealed_bytes, pair, size))
        charges.append((limits.sealed_bytes_per_address, address, stored))
        return charges

    def sealed_known(self, doc: SendRequest) -> dict[bytes, AccountRecord] | None:
        """What :meth:`prepare_now` needs to prepare the sealed send ``doc`` without a
        coroutine: its recipients' account records, if this process holds every one in
        memory and its sealed-send limits are its own (answered from memory); else
        ``None``. Reads only."""
        if not self._limits_now or len(doc.messages) > self._ctx.config.max_envelopes:
            return None  # (the handler refuses one over the bound, before any lookup)
        storage = self._ctx.storage
        known: dict[bytes, AccountRecord] = {}
        for item in doc.messages:
            account_id = bytes.fromhex(item.account_id)
            if account_id not in known:
                account = storage.account_known(account_id)
                if account is None:
                    return None
                known[account_id] = account
        return known

    def prepare_now(
        self,
        doc: SendRequest,
        *,
        tokens: dict[bytes, bytes],
        address: str,
        accounts: dict[bytes, AccountRecord],
    ) -> PreparedSend:
        """:meth:`prepare` of a sealed send, without a coroutine, given what
        :meth:`sealed_known` found: the same checks, charges and answers. Raises
        :class:`ApiError`; stores nothing."""
        envelopes = self._envelopes(doc)
        stored = sum(len(e.body) for e in envelopes)
        reached = _reached(envelopes)
        strangers = [a for a in reached if _authorized(tokens, a, accounts[a])]
        for limiter, key, amount in self._charges(reached, strangers, address, stored):
            wait = limiter.take_now(key, amount)
            if wait is None:  # not this process's own limit: sealed_known said so
                raise RuntimeError("a sealed-send limit is not answered from memory")
            if wait:
                raise rate_limited(wait)
        return PreparedSend(envelopes, {})

    async def prepare(
        self,
        doc: SendRequest,
        *,
        sender: AuthenticatedDevice | None,
        tokens: dict[bytes, bytes],
        address: str,
    ) -> PreparedSend:
        """Validate a send and authorize it: sealed (``sender`` is ``None``) by delivery
        token or the recipient's open flag, authenticated by the sender's own account.
        Raises :class:`ApiError`; stores nothing."""
        envelopes = self._envelopes(doc)
        exempt: dict[bytes, int] = {}
        if sender is None:
            stored = sum(len(e.body) for e in envelopes)
            await self._check_sealed(tokens, envelopes, address, stored)
        else:
            exempt[sender.account_id] = sender.device_id
        return PreparedSend(envelopes, exempt)

    def submit(self, prepared: PreparedSend, *, fence: Fence | None = None) -> asyncio.Future[int]:
        """Start storing a prepared send: it is queued in storage at once, so sends
        submitted one after another reach the database in that order and a connection can
        pipeline its sends without reordering them (and without a task each: a WebSocket
        pipelines dozens). The future's result is the number stored, once durable; it
        raises :class:`ApiError`, or :class:`~.storage.base.StaleEpoch` (nothing stored)
        if ``fence``, the epoch of the device's stream the send came on, is no longer the
        device's (a newer connection of it replaced that one). Sends over HTTP and on
        ``/v1/sealed`` come on no device's connection and carry no fence; nor do
        multi-recipient sends, which are sealed.

        :meth:`store` is the same without a future of its own: the stream, which answers
        many sends at once, translates the storage's outcome itself (:meth:`refusal`)."""
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        stored = self.store(prepared, fence=fence)
        stored.add_done_callback(partial(_answered, self, len(prepared.envelopes), answer))
        return answer

    def store(self, prepared: PreparedSend, *, fence: Fence | None = None) -> asyncio.Future[int]:
        """Start storing a prepared send, as :meth:`submit`, and return the storage's own
        future: once done, the send is answered with the number of its envelopes, or, if
        it raised, with :meth:`refusal` of its exception. (Its devices are woken here;
        cancelling the future would lose that: the stream never cancels it.)"""
        cfg = self._ctx.config
        try:
            self._ctx.disk.check()
        except ApiError as exc:
            refused: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused
        now = self._ctx.clock()
        storage = self._ctx.storage
        if prepared.shared is not None:
            body, shared = prepared.shared
            stored = storage.enqueue_shared_nowait(
                body,
                shared,
                received_at=now,
                expires_at=now + cfg.message_ttl,
                max_depth=cfg.max_queue_depth,
                max_bytes=cfg.max_queue_bytes,
            )
        else:
            stored = storage.enqueue_nowait(
                prepared.envelopes,
                exempt=prepared.exempt,
                received_at=now,
                expires_at=now + cfg.message_ttl,
                max_depth=cfg.max_queue_depth,
                max_bytes=cfg.max_queue_bytes,
                fence=fence,
            )
        self._storing.append((stored, prepared.envelopes))
        if not self._watching:
            self._watching = True
            stored.add_done_callback(self._settle)
        return stored

    def _settle(self, _: object = None) -> None:
        """Sends' writes are done: each stored (whether or not one still waits for it) has
        its devices woken; the metric counts the envelopes stored anew (a resend of a
        message still queued stores nothing). One callback waits, on the first send not
        yet done, not one a send (a done callback costs about 2 us: its context copied,
        then a handle run): writes queued in order are done in order, a group commit's
        together, so when it runs the whole commit is done, and it then waits on the
        first of the next."""
        storing = self._storing
        while storing and (stored := storing[0][0]).done():
            _, envelopes = storing.popleft()
            if not stored.cancelled() and stored.exception() is None:
                self._stored_anew += stored.result()
                self._wake(envelopes)
        if storing:
            storing[0][0].add_done_callback(self._settle)
        else:
            self._watching = False

    @staticmethod
    def refusal(exc: BaseException) -> ApiError | None:
        """The answer to a send whose storing raised ``exc``; ``None`` if there is none to
        give at once: :class:`~.storage.base.MismatchedDevices` (its answer needs a read:
        :meth:`mismatch`), or what is no refusal of this send (``StaleEpoch``, a failing
        database), which its caller raises."""
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, UnknownAccount):
            return ApiError(404, "not_found", "no such account")
        if isinstance(exc, QueueFull):
            return ApiError(507, "queue_full", "a destination device's queue is full")
        return None

    def _wake(self, envelopes: list[Envelope]) -> None:
        """Tell the fanout of these envelopes' devices, once for all the sends committed in
        this loop iteration (a group commit finishes many at once)."""
        waking = self._waking
        if not waking:
            asyncio.get_running_loop().call_soon(self._publish)
        for e in envelopes:
            waking.add((e.account_id, e.device_id))

    def _publish(self) -> None:
        addresses, self._waking = self._waking, set()
        anew, self._stored_anew = self._stored_anew, 0
        self._ctx.metrics.inc("sealpost_messages_stored_total", "envelopes durably queued", anew)
        task = asyncio.create_task(self._ctx.fanout.publish(addresses))
        self._publishing.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[None]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fanout publish failed: %s", type(task.exception()).__name__)

    async def send(self, request: Request) -> Response:
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_message_request)
        sender = await self._auth.authenticate_optional(request, hashlib.sha256(body).digest())
        tokens = {}
        if sender is None:
            tokens = parse_delivery_tokens(
                request.headers.get(DELIVERY_TOKEN_HEADER, ""), cfg.max_envelopes
            )
        prepared = await self.prepare(
            decode(body, SendRequest),
            sender=sender,
            tokens=tokens,
            address=client_address(request),
        )
        return json_response(Stored(stored=await self.submit(prepared)))

    async def mismatch(self, exc: MismatchedDevices) -> ApiError:
        """The answer to a send refused as :class:`~.storage.base.MismatchedDevices`: 409
        with the devices each account named has now (read from storage)."""
        accounts = {}
        for account_id, (missing, extra) in exc.accounts.items():
            devices = devices_out(await self._ctx.storage.devices(account_id))
            accounts[account_id.hex()] = Mismatch(missing=missing, extra=extra, devices=devices)
        return ApiError(
            409,
            "mismatched_devices",
            "the device list is not the destination's current one",
            extra={"accounts": msgspec.to_builtins(accounts)},
        )

    async def fetch(self, request: Request) -> Response:
        device = await self._auth.authenticate(request, hashlib.sha256(b"").digest())
        limit = self._ctx.config.fetch_batch
        queued = await self._ctx.storage.fetch(
            device.account_id, device.device_id, after_seq=0, limit=limit + 1
        )
        return json_response(
            Queued(
                messages=[
                    QueuedMessage(id=m.message_id.hex(), body=m.body, received_at=m.received_at)
                    for m in queued[:limit]
                ],
                more=len(queued) > limit,
            )
        )

    async def ack(self, request: Request) -> Response:
        device = await self._auth.authenticate(request, hashlib.sha256(b"").digest())
        message_id = parse_hex(request.path_params["message_id"], MESSAGE_ID_LEN, "message id")
        if not await self._ctx.storage.ack(device.account_id, device.device_id, message_id):
            raise ApiError(404, "not_found", "no such message in this device's queue")
        return Response(status_code=204)


def _answered(
    api: MessagesApi, envelopes: int, answer: asyncio.Future[int], stored: asyncio.Future[int]
) -> None:
    """:meth:`MessagesApi.submit`'s answer, once its write is done."""
    if answer.done():  # the caller gave up
        return
    if stored.cancelled():
        answer.cancel()
        return
    exc = stored.exception()
    if exc is None:
        answer.set_result(envelopes)
    elif isinstance(exc, MismatchedDevices):  # rare: the answer needs a read
        task = asyncio.create_task(api.mismatch(exc))
        task.add_done_callback(partial(_refuse, answer))
    else:
        refusal = api.refusal(exc)
        answer.set_exception(exc if refusal is None else refusal)


def _refuse(answer: asyncio.Future[int], task: asyncio.Task[ApiError]) -> None:
    if answer.done():
        return
    if task.cancelled():
        answer.cancel()
        return
    exc = task.exception()
    answer.set_exception(exc if exc is not None else task.result())
