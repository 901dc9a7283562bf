"""Errors of the API in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`
with its status codes. Every refusal of the front door is translated here, in one place."""

from __future__ import annotations

import math
from datetime import datetime

from django.http import HttpResponseBase, JsonResponse
from django.utils import timezone

from webapp.accounts import quotas
from webapp.accounts.models import User
from webapp.inference.refusals import (
    InputBlocked,
    InvalidInput,
    LimitReached,
    ModelUnavailable,
    NotAllowed,
    QuotaExceeded,
    Refused,
    Suspended,
)

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    507: "server_error",
}

# A client told to wait (429) tries again after this many seconds.
RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    """An answer other than success; `response()` is its JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.type = type
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        response = error_response(
            self.status,
            self.message,
            code=self.code,
            param=self.param,
            retry_after=self.retry_after,
            type=self.type,
        )
        for name, value in self.headers.items():
            response[name] = value
        return response


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    retry_after: int | None = None,
    type: str | None = None,
) -> JsonResponse:
    body = {
        "error": {
            "message": message,
            "type": type or TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }
    response = JsonResponse(body, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def bad_field(param: str, message: str) -> ApiError:
    return ApiError(400, message, code="invalid_value", param=param)


def from_refusal(refused: Refused) -> ApiError:
    """The front door's refusal as an HTTP error. (A blocked input is not an error: the
    endpoints answer it with finish_reason content_filter or flagged.)"""
    if isinstance(refused, InputBlocked):
        return ApiError(400, refused.message, code="content_policy_violation")
    if isinstance(refused, Suspended):
        return ApiError(403, refused.message, code="account_suspended")
    if isinstance(refused, NotAllowed):
        return ApiError(403, refused.message, code="account_not_allowed")
    if isinstance(refused, QuotaExceeded):
        wait = _seconds_until(refused.resets_at)
        return ApiError(
            429,
            refused.message,
            code=refused.code,
            # OpenAI's types: "requests" for a rate limit, "insufficient_quota" for a quota.
            type="requests" if refused.code == "rate_limit_exceeded" else "insufficient_quota",
            retry_after=wait,
            # A day's or month's quota is not back in seconds: SDKs should not retry.
            headers={"x-should-retry": "true" if wait <= 60 else "false"},
        )
    if isinstance(refused, LimitReached):
        return ApiError(429, refused.message, code="limit_reached", retry_after=RETRY_AFTER_SECONDS)
    if isinstance(refused, ModelUnavailable):
        return ApiError(404, refused.message, code="model_not_found", param="model")
    if isinstance(refused, InvalidInput):
        return ApiError(400, refused.message, code="invalid_value")
    return ApiError(400, refused.message, code=refused.code)


def _seconds_until(moment: datetime) -> int:
    return max(1, math.ceil((moment - timezone.now()).total_seconds()))


def _duration(seconds: int) -> str:
    """A reset time as OpenAI writes it: "20s", "6m0s", "1h2m3s"."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_limit_headers(user: User) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the user's quotas: requests a minute, and the
    tighter of the day's and the month's tokens (a limit that is not set is left out)."""
    now = timezone.now()
    found = {s.name: s for s in quotas.standing(user, now)}
    headers: dict[str, str] = {}
    requests = found["requests_per_minute"]
    if requests.limit is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        reset = requests.resets_at or now
        headers["x-ratelimit-reset-requests"] = _duration(
            max(0, math.ceil((reset - now).total_seconds()))
        )
    token_limits = [
        s for s in (found["tokens_per_day"], found["tokens_per_month"]) if s.limit is not None
    ]
    if token_limits:
        tightest = min(token_limits, key=lambda s: s.remaining or 0)
        headers["x-ratelimit-limit-tokens"] = str(tightest.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tightest.remaining)
        reset = tightest.resets_at or now
        headers["x-ratelimit-reset-tokens"] = _duration(
            max(0, math.ceil((reset - now).total_seconds()))
        )
    return headers


def add_rate_limit_headers(response: HttpResponseBase, user: User) -> None:
    for name, value in rate_limit_headers(user).items():
        response[name] = value
