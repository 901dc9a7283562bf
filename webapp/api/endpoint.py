"""What every /v1/ view shares: the key (Bearer or X-Api-Key) and the account behind it,
the method, the body's size, and answers in OpenAI's error shape whatever goes wrong
(never a Django page or a traceback)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponseBase

from webapp.accounts.models import User
from webapp.api import keys
from webapp.api.errors import ApiError, add_rate_limit_headers, error_response, from_refusal
from webapp.api.models import ApiKey
from webapp.api.schemas import parse_json
from webapp.inference import front_door, uploads
from webapp.inference.models import Source
from webapp.inference.refusals import Refused
from webapp.moderation import services as moderation
from webapp.no_room import discard_partial_uploads

log = logging.getLogger(__name__)

View = Callable[..., Awaitable[HttpResponseBase]]


class ApiRequest(HttpRequest):
    api_key: ApiKey
    api_user: User


def key_secret(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-Api-Key", "").strip()


def authenticated(request: HttpRequest) -> ApiKey:
    """The request's live key, whose user may use the API now; ApiError otherwise."""
    try:
        key = keys.authenticate(key_secret(request))
    except keys.KeyRefused as refused:
        raise ApiError(401, refused.message, code=refused.code) from None
    user = key.user
    if not user.is_active:
        raise ApiError(401, "The account of this API key is disabled.", code="account_disabled")
    if user.is_pending:
        raise ApiError(403, user.why_cannot_generate, code="account_pending")
    suspension = moderation.active_suspension(user)
    if suspension is not None:
        raise ApiError(403, moderation.suspension_message(suspension), code="account_suspended")
    if not keys.may_have_keys(user):
        raise ApiError(
            403,
            "Your account may no longer use API keys; ask an administrator.",
            code="api_keys_not_allowed",
        )
    return key


def api_view(*methods: str) -> Callable[[View], Any]:
    """An async /v1/ view taking `methods`, called with the key's user on the request
    (`request.api_user`); every failure answered as an OpenAI error."""

    def decorate(view: View) -> Any:  # an async view, as Django takes it
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            api_request: Any = None
            try:
                if request.method not in methods:
                    raise ApiError(
                        405,
                        f"{request.method} is not allowed here; use {' or '.join(methods)}.",
                        code="method_not_allowed",
                    )
                key = await sync_to_async(authenticated)(request)
                api_request = request
                api_request.api_key = key
                api_request.api_user = key.user
                # Every request this view queues is the key's, in the usage ledger.
                with front_door.origin(Source.API, key.pk):
                    response = await view(api_request, *args, **kwargs)
                await sync_to_async(add_rate_limit_headers)(response, key.user)
                return response
            except ApiError as error:
                return error.response()
            except Refused as refused:
                answer = from_refusal(refused).response()
                if api_request is not None:
                    await sync_to_async(add_rate_limit_headers)(answer, api_request.api_user)
                return answer
            except RequestDataTooBig:
                return too_large().response()
            except Exception as exc:
                if uploads.out_of_space(exc):  # a full disk: the temporary files' or the database's
                    log.error("API %s %s: no room: %s", request.method, request.path, exc)
                    discard_partial_uploads(request)
                    return error_response(
                        507,
                        f"The request was not stored: {uploads.NO_ROOM_MESSAGE}.",
                        code="insufficient_storage",
                    )
                log.exception("API %s %s failed", request.method, request.path)
                return error_response(
                    500,
                    "The server had an error while processing your request.",
                    code="server_error",
                )

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]  # keys, not cookies
        return wrapper

    return decorate


def too_large() -> ApiError:
    limit = settings.ATELIER_API_MAX_BODY_BYTES
    return ApiError(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, if it is within ATELIER_API_MAX_BODY_BYTES."""
    length = request.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > settings.ATELIER_API_MAX_BODY_BYTES:
        raise too_large()
    body = request.body
    if len(body) > settings.ATELIER_API_MAX_BODY_BYTES:
        raise too_large()
    return parse_json(body)
