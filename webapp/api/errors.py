"""Errors of the API in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`
with its status codes. Every refusal of the front door is translated here, in one place."""

from __future__ import annotations

from django.http import JsonResponse

from webapp.inference.refusals import (
    InputBlocked,
    InvalidInput,
    LimitReached,
    ModelUnavailable,
    NotAllowed,
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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def response(self) -> JsonResponse:
        return error_response(
            self.status,
            self.message,
            code=self.code,
            param=self.param,
            retry_after=self.retry_after,
        )


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    retry_after: int | None = None,
) -> JsonResponse:
    body = {
        "error": {
            "message": message,
            "type": TYPES.get(status, "invalid_request_error"),
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
    if isinstance(refused, LimitReached):
        return ApiError(429, refused.message, code="limit_reached", retry_after=RETRY_AFTER_SECONDS)
    if isinstance(refused, ModelUnavailable):
        return ApiError(404, refused.message, code="model_not_found", param="model")
    if isinstance(refused, InvalidInput):
        return ApiError(400, refused.message, code="invalid_value")
    return ApiError(400, refused.message, code=refused.code)
