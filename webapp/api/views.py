"""The /v1/ endpoints for models, chat, completions, embeddings and moderations: async
views served by Daphne; each reads its request (`schemas`), queues its generations through
the front door (`services`), and answers from their `done` events, whole or as
server-sent events (`following`, `sse`)."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from webapp.api import moderations, schemas, services, shapes, sse
from webapp.api.endpoint import ApiRequest, api_view, json_body
from webapp.api.errors import ApiError, error_response
from webapp.api.following import Follower
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Status
from webapp.inference.refusals import ModelUnavailable


@api_view("GET")
async def list_models(request: ApiRequest) -> HttpResponseBase:
    entries = await sync_to_async(lambda: list(services.models_for(request.api_user)))()
    return JsonResponse({"object": "list", "data": [shapes.model_object(e) for e in entries]})


@api_view("GET")
async def retrieve_model(request: ApiRequest, model_id: str) -> HttpResponseBase:
    entries = services.models_for(request.api_user).filter(name=model_id)
    entry = await sync_to_async(entries.first)()
    if entry is None:
        raise ApiError(
            404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model"
        )
    return JsonResponse(shapes.model_object(entry))


@api_view("POST")
async def chat_completions(request: ApiRequest) -> HttpResponseBase:
    parsed = schemas.parse_chat(
        json_body(request),
        max_chars=settings.ATELIER_MAX_MESSAGE_CHARS,
        max_system_chars=settings.ATELIER_MAX_SYSTEM_PROMPT_CHARS,
        default_max_tokens=settings.ATELIER_DEFAULT_MAX_TOKENS,
    )
    return await _complete(request, parsed, shapes.CHAT, "/v1/chat/completions", "chatcmpl")


@api_view("POST")
async def completions(request: ApiRequest) -> HttpResponseBase:
    parsed = schemas.parse_completion(
        json_body(request), max_chars=settings.ATELIER_MAX_MESSAGE_CHARS
    )
    return await _complete(request, parsed, shapes.TEXT, "/v1/completions", "cmpl")


async def _complete(
    request: ApiRequest, parsed: schemas.ChatRequest, kind: str, endpoint: str, prefix: str
) -> HttpResponseBase:
    submitted = await sync_to_async(services.submit_chat)(request.api_user, parsed, endpoint)
    model = submitted.model.name
    if submitted.blocked is not None:
        blocked_id = f"{prefix}-blocked"
        if parsed.stream:
            events = sse.blocked(
                kind=kind,
                id=blocked_id,
                model=model,
                notice=submitted.blocked.message,
                n=parsed.sampling.n,
            )
            return sse.response(events)
        body = shapes.blocked_completion(
            kind=kind,
            id=blocked_id,
            model=model,
            notice=submitted.blocked.message,
            n=parsed.sampling.n,
        )
        return JsonResponse(body)
    ids = [g.pk for g in submitted.generations]
    response_id = f"{prefix}-{ids[0]}"
    follower = Follower(ids)
    follower.start()
    if parsed.stream:
        return sse.response(
            sse.completion_events(
                follower,
                kind=kind,
                id=response_id,
                model=model,
                include_usage=parsed.include_usage,
                keepalive=settings.ATELIER_API_KEEPALIVE_SECONDS,
            )
        )
    dones = await _wait(follower)
    error = shapes.failure(dones)
    if error is not None:
        return error_response(500, error, code="generation_failed")
    return JsonResponse(shapes.completion(kind=kind, id=response_id, model=model, dones=dones))


async def _wait(follower: Follower) -> list[dict[str, Any]]:
    """Every done event; a client that leaves before (the view is cancelled) stops them."""
    try:
        return await follower.wait()
    except asyncio.CancelledError:
        await asyncio.shield(follower.stop_unfinished())
        raise
    finally:
        await follower.close()


@api_view("POST")
async def embeddings(request: ApiRequest) -> HttpResponseBase:
    parsed = schemas.parse_embeddings(
        json_body(request), max_chars=settings.ATELIER_JOB_MAX_ITEM_CHARS
    )
    submitted = await sync_to_async(services.submit_embeddings)(request.api_user, parsed)
    if submitted.blocked is not None:
        raise ApiError(
            400, submitted.blocked.message, code="content_policy_violation", param="input"
        )
    generation_id = submitted.generations[0].pk
    follower = Follower([generation_id])
    follower.start()
    (done,) = await _wait(follower)
    if done.get("status") == Status.BLOCKED:
        raise ApiError(
            400,
            str(done.get("text") or done.get("error")),
            code="content_policy_violation",
            param="input",
        )
    error = shapes.failure([done])
    if error is not None:
        return error_response(500, error, code="generation_failed")
    result = done.get("result") or await sync_to_async(services.stored_result)(generation_id)
    vectors = (result or {}).get("embeddings") or []
    return JsonResponse(
        shapes.embedding_list(
            vectors,
            model=submitted.model.name,
            encoding=parsed.encoding_format,
            prompt_tokens=int(done.get("usage", {}).get("prompt_tokens", 0)),
        )
    )


@api_view("POST")
async def moderate(request: ApiRequest) -> HttpResponseBase:
    parsed = schemas.parse_moderation(
        json_body(request), max_chars=settings.ATELIER_JOB_MAX_ITEM_CHARS
    )
    user = request.api_user
    policy = await sync_to_async(moderations.policy_of)(user)
    assessments = await sync_to_async(moderations.check_here)(user, parsed.texts)
    for name in policy.models:
        result = await _model_scores(request, name, parsed.texts)
        moderations.add_model_scores(assessments, policy.policy, name, result)
    return JsonResponse(
        {
            "id": f"modr-{id(assessments):x}",
            "model": parsed.model or "atelier-policy",
            "results": [a.result() for a in assessments],
            "atelier": {"policy": policy.name, "models": list(policy.models)},
        }
    )


async def _model_scores(request: ApiRequest, name: str, texts: list[str]) -> dict[str, Any]:
    """The policy's moderation model `name` on the texts, run by its worker."""
    entry = await sync_to_async(
        ModelEntry.objects.filter(name=name, task="moderation", enabled=True).first
    )()
    if entry is None:
        raise ApiError(
            503,
            f"The content policy's moderation model '{name}' is not available.",
            code="moderation_model_unavailable",
        )
    try:
        generation = await sync_to_async(services.submit_moderation)(request.api_user, entry, texts)
    except ModelUnavailable:
        raise ApiError(
            503,
            f"The content policy's moderation model '{name}' is not available to your account.",
            code="moderation_model_unavailable",
        ) from None
    follower = Follower([generation.pk])
    follower.start()
    (done,) = await _wait(follower)
    error = shapes.failure([done])
    if error is not None:
        raise ApiError(500, error, code="generation_failed")
    result = done.get("result") or await sync_to_async(services.stored_result)(generation.pk)
    return result or {}


async def not_found(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    """Anything under /v1/ that is not an endpoint."""
    return error_response(
        404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url"
    )
