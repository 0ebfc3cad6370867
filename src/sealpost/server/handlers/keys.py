"""Prekeys: upload, stock, and bundle fetch (which consumes one-time prekeys).

A bundle fetch removes one X25519 one-time prekey and one ML-KEM one-time prekey in one
transaction, so each is handed out at most once. When the ML-KEM stock is empty the
device's last-resort ML-KEM key is used; when the X25519 stock is empty the bundle simply
has none (its flags say so). Fetching is allowed without authentication (a sender need not
reveal itself before a sealed first message), so nobody must be able to drain a device's
one-time keys by fetching: each address may fetch ``bundles_per_address`` bundles an hour
(then 429), and each target device hands out ``bundles_per_target`` one-time keys an hour;
past that its bundles carry none (the signed prekey and the last-resort ML-KEM key still
start a session, with the forward secrecy of the signed prekey only). When a fetch leaves
either one-time stock under ``prekey_refill_below``, the device, if connected, is told
(``{"type": "prekeys_low"}`` on its stream) and refills at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from sealpost.crypto.sign import VerifyKey
from sealpost.protocol.wire import (
    DeviceCertificate,
    KemPreKey,
    KemPreKeyKind,
    OneTimePreKey,
    PreKeyBundle,
    SignedPreKey,
)
from sealpost.server.authn import Authenticator, rate_limited
from sealpost.server.codec import json_response, parse_device_id, parse_hex
from sealpost.server.context import Context
from sealpost.server.errors import ApiError
from sealpost.server.handlers.prekeys import parse_prekeys
from sealpost.server.requests import client_address, read_body
from sealpost.server.schema import Bundle, Stock, UploadPreKeys, decode
from sealpost.server.storage.base import PreKeyStock, PreKeyStockFull

__all__ = ["KeysApi"]


class KeysApi:
    def __init__(
        self,
        ctx: Context,
        auth: Authenticator,
        on_low_stock: Callable[[tuple[bytes, int]], None] = lambda address: None,
    ) -> None:
        self._ctx = ctx
        self._auth = auth
        self._on_low_stock = on_low_stock

    def _stock(self, stock: PreKeyStock) -> Response:
        low = self._ctx.config.prekey_refill_below
        return json_response(
            Stock(
                signed_prekey=stock.signed_prekey,
                kem_last_resort=stock.kem_last_resort,
                one_time_prekeys=stock.one_time,
                kem_one_time_prekeys=stock.kem_one_time,
                refill_below=low,
                refill=stock.one_time < low or stock.kem_one_time < low,
            )
        )

    async def upload(self, request: Request) -> Response:
        cfg = self._ctx.config
        body = await read_body(request, cfg.max_request)
        device = await self._auth.authenticate(request, hashlib.sha256(body).digest())
        doc = decode(body, UploadPreKeys)
        dsk = VerifyKey.from_public_bytes(device.certificate.signing_key)
        upload = parse_prekeys(doc, dsk, limit=cfg.max_prekeys)
        try:
            await self._ctx.storage.store_prekeys(
                device.account_id, device.device_id, upload, max_stock=cfg.max_prekey_stock
            )
        except PreKeyStockFull:
            raise ApiError(
                409, "prekey_stock_full", f"a device may hold {cfg.max_prekey_stock} one-time keys"
            ) from None
        stock = await self._ctx.storage.prekey_stock(device.account_id, device.device_id)
        return self._stock(stock)

    async def status(self, request: Request) -> Response:
        device = await self._auth.authenticate(request, hashlib.sha256(b"").digest())
        stock = await self._ctx.storage.prekey_stock(device.account_id, device.device_id)
        return self._stock(stock)

    async def bundle(self, request: Request) -> Response:
        await self._auth.authenticate_optional(request, hashlib.sha256(b"").digest())
        account_id = parse_hex(request.path_params["account_id"], 16, "account id")
        device_id = parse_device_id(request.path_params["device_id"])
        limits = self._ctx.limits
        wait = await limits.bundle_addresses.take(client_address(request))
        if wait:
            raise rate_limited(wait)
        one_time = not await limits.bundle_targets.take((account_id, device_id))
        parts = await self._ctx.storage.take_bundle(account_id, device_id, one_time=one_time)
        if parts is None:
            raise ApiError(404, "not_found", "no such device")
        if one_time:  # it may have taken the last keys above the refill mark
            stock = await self._ctx.storage.prekey_stock(account_id, device_id)
            low = self._ctx.config.prekey_refill_below
            if stock.one_time < low or stock.kem_one_time < low:
                self._on_low_stock((account_id, device_id))
        kem = KemPreKey.decode(parts.kem) if parts.kem is not None else None
        bundle = PreKeyBundle(
            DeviceCertificate.decode(parts.certificate),
            SignedPreKey.decode(parts.signed_prekey),
            OneTimePreKey.decode(parts.one_time) if parts.one_time is not None else None,
            kem,
        )
        self._ctx.metrics.inc("sealpost_bundles_served_total", "prekey bundles handed out")
        return json_response(
            Bundle(
                bundle=bundle.encode(),
                one_time_prekey=parts.one_time is not None,
                kem_prekey=None
                if kem is None
                else ("one_time" if kem.kind == KemPreKeyKind.ONE_TIME else "last_resort"),
            )
        )
