"""The HTTP API's errors: one exception, a stable code and a status.

Every error the API returns is ``{"error": CODE, "message": TEXT}`` with the status below.
Codes are stable (clients branch on them); messages are for people and never contain key
material, message content or anything identifying a sender.

======  ========================  ===========================================================
status  code                      when
======  ========================  ===========================================================
400     ``malformed_json``        the body is not a JSON object
400     ``invalid_request``       a field is missing, of the wrong type, or badly encoded
400     ``invalid_key``           a certificate or prekey does not decode or verify
401     ``unauthorized``          missing or bad request signature, unknown device
401     ``clock_skew``            the request timestamp is outside the allowed window
401     ``replayed``              the request nonce was already used
403     ``forbidden``             sealed delivery refused (bad token, recipient not open)
403     ``registration_closed``   the server registers no new accounts (``registration``)
403     ``invite_required``       registration needs an invite code (``registration =
                                  "invite"``)
403     ``invite_invalid``        no usable invite has that code (unknown, used up, expired
                                  or revoked: one answer); wrong guesses are rate limited
404     ``not_found``             no such route, account, device, message or attachment
405     ``method_not_allowed``
408     ``timeout``               the request body did not arrive within ``body_timeout``
                                  (``upload_timeout`` for attachments); the connection closes
409     ``username_taken``        registration with a username already in use
409     ``account_exists``        registration with an account id already in use
409     ``device_exists``         the device id is already registered
409     ``device_revoked``        the device id was revoked (ids are never reused)
409     ``too_many_devices``      the account has ``max_devices`` devices
409     ``last_device``           removing the account's last device
409     ``already_provisioned``   a link channel was already answered
409     ``mismatched_devices``    a send did not name exactly the destination's devices
409     ``prekey_stock_full``     an upload would exceed the per-device prekey stock
410     ``gone``                  the new device left its link channel
413     ``too_large``             a body, envelope, list or attachment over its limit
429     ``rate_limited``          too many requests (or failed authentications from this
                                  address); ``Retry-After`` says when to retry
500     ``internal``              a bug; logged without request data
503     ``busy``                  the server is at ``max_connections``
                                  (:mod:`sealpost.server.connections`); ``Retry-After``
503     ``unavailable``           an account not in the key-transparency log yet
503     ``upload_lost``           an attachment upload's pending blob was lost before it was
                                  stored (another process took it for stale); nothing was
                                  kept: upload it again
507     ``queue_full``            a destination device's queue is at its limit (messages
                                  or bytes)
507     ``attachment_quota``      the uploading account's attachments are at their quota
507     ``insufficient_storage``  free disk is below ``min_free_disk``; ``Retry-After``
======  ========================  ===========================================================
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_response"]


class ApiError(Exception):
    """An error answered to the client as JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.code, "message": self.message, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return ApiError(status, code, message).response()


def bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)
