"""Atelier's own endpoints beside the OpenAI ones: the studio's one-shot tasks
(summarize, translate, classify an image), through the studio's services, so they have the
pages' limits and refusals and each result is in the user's Results. Not streamed: the
answer is the finished result."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponseBase, JsonResponse

from generation.specs import SummaryLength, Task
from webapp.api import services, shapes
from webapp.api.endpoint import ApiRequest, api_view, json_body
from webapp.api.errors import ApiError, bad_field
from webapp.api.following import Follower
from webapp.inference import front_door
from webapp.inference.models import Status
from webapp.studio import services as studio
from webapp.studio.models import Result


def _fields(body: dict[str, Any], allowed: set[str]) -> None:
    for name in body:
        if name not in allowed:
            raise ApiError(
                400,
                f"Unrecognized request argument supplied: {name}",
                code="unknown_parameter",
                param=name,
            )


def _text_field(body: dict[str, Any], name: str, *, required: bool) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise bad_field(name, f"'{name}' must be a non-empty string.")
    return value


def _model_id(request: ApiRequest, name: str, task: str, endpoint: str) -> int:
    """The named model's id (or the task's default's), if a worker serves it (503)."""
    if name:
        entry = services.model_named(request.api_user, name, task, endpoint)
    else:
        entry = front_door.model_for(request.api_user, task, None)
    services.check_served(entry)
    return entry.pk


async def _answer(result: Result, kind: str) -> JsonResponse:
    generation = result.generation
    follower = Follower([generation.pk])
    follower.start()
    try:
        (done,) = await follower.wait()
    finally:
        await follower.close()
    error = shapes.failure([done])
    if error is not None:
        raise ApiError(500, error, code="generation_failed")
    stored = await sync_to_async(services.stored_result)(generation.pk)
    return JsonResponse(
        {
            "id": f"atelier-{generation.pk}",
            "object": f"atelier.{kind}",
            "model": generation.model_name,
            "text": done.get("text") or "",
            "finish_reason": shapes.finish_reason(done),
            "blocked": done.get("status") == Status.BLOCKED,
            "result": done.get("result") or stored,
            "usage": shapes.usage([done]),
        }
    )


@api_view("POST")
async def summarize(request: ApiRequest) -> HttpResponseBase:
    body = json_body(request)
    _fields(body, {"model", "text", "length"})
    text = _text_field(body, "text", required=True)
    length = body.get("length") or SummaryLength.MEDIUM
    if length not in set(SummaryLength):
        raise bad_field("length", f"'length' must be one of {', '.join(SummaryLength)}.")
    name = _text_field(body, "model", required=False)

    def queue() -> Result:
        model_id = _model_id(request, name, Task.SUMMARIZE, "/v1/atelier/summarize")
        return studio.summarize(request.api_user, text=text, length=length, model_id=model_id)

    return await _answer(await sync_to_async(queue)(), "summary")


@api_view("POST")
async def translate(request: ApiRequest) -> HttpResponseBase:
    body = json_body(request)
    _fields(body, {"model", "text", "target", "source"})
    text = _text_field(body, "text", required=True)
    target = _text_field(body, "target", required=True)
    source = _text_field(body, "source", required=False)
    name = _text_field(body, "model", required=False)

    def queue() -> Result:
        model_id = _model_id(request, name, Task.TRANSLATE, "/v1/atelier/translate")
        return studio.translate(
            request.api_user, text=text, target=target, source=source, model_id=model_id
        )

    return await _answer(await sync_to_async(queue)(), "translation")


@api_view("POST")
async def classify(request: ApiRequest) -> HttpResponseBase:
    image = request.FILES.get("image")
    if image is None:
        raise ApiError(
            400,
            "'image' is required (multipart/form-data).",
            code="missing_required_parameter",
            param="image",
        )
    if image.size is not None and image.size > settings.ATELIER_MAX_IMAGE_BYTES:
        raise ApiError(
            413,
            f"The image is larger than {settings.ATELIER_MAX_IMAGE_BYTES} bytes.",
            code="file_too_large",
            param="image",
        )
    data = image.read()
    name = request.POST.get("model", "")

    def queue() -> Result:
        model_id = _model_id(request, name, Task.CLASSIFY_IMAGE, "/v1/atelier/classify")
        return studio.classify(
            request.api_user, image=data, file_name=image.name or "image", model_id=model_id
        )

    return await _answer(await sync_to_async(queue)(), "classification")
