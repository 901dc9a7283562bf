"""The API's requests onto the generation road: the model a request names, whether a
worker serves it, and the generations of a chat, completion or embeddings request, each
through the front door (`inference.front_door.submit`) like any other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from generation.specs import Task
from webapp.accounts.models import User
from webapp.api.errors import ApiError
from webapp.api.schemas import ChatRequest, EmbeddingsRequest
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_models
from webapp.inference import front_door, liveness
from webapp.inference.models import Generation
from webapp.inference.refusals import InputBlocked

# The catalog tasks each endpoint's `model` may name.
ENDPOINT_TASKS = {
    "/v1/chat/completions": Task.CHAT,
    "/v1/completions": Task.CHAT,
    "/v1/embeddings": Task.EMBED,
}


def models_for(user: User) -> QuerySet[ModelEntry]:
    """Every enabled catalog entry the user may use, of every task."""
    found = ModelEntry.objects.none()
    for task in Task:
        found = found | usable_models(user, task)
    return found.distinct().order_by("task", "name")


def model_named(user: User, name: str, task: str, endpoint: str) -> ModelEntry:
    """The entry named `name` serving `task` for this user: 404 when there is no such
    enabled model, 403 when it is someone else's to use, 400 for another task's model."""
    entry = usable_models(user, task).filter(name=name).first()
    if entry is not None:
        return entry
    other = ModelEntry.objects.filter(name=name, enabled=True).first()
    if other is None:
        raise ApiError(
            404, f"The model '{name}' does not exist.", code="model_not_found", param="model"
        )
    if other.task != task:
        raise ApiError(
            400,
            f"The model '{name}' is a {other.task} model; {endpoint} takes {task} models.",
            code="model_not_supported",
            param="model",
        )
    raise ApiError(
        403, f"You may not use the model '{name}'.", code="model_not_allowed", param="model"
    )


def check_served(entry: ModelEntry) -> None:
    """503 when no live worker serves the model's queue (nothing is queued then)."""
    if not any(entry.queue in worker.queues for worker in liveness.live_workers()):
        raise ApiError(
            503,
            f"No worker is serving the model '{entry.name}' right now; try again later.",
            code="model_not_served",
        )


@dataclass(frozen=True)
class Submitted:
    """A request's generations (one per choice), or why its input was blocked."""

    model: ModelEntry
    generations: list[Generation]
    blocked: InputBlocked | None = None


def submit_chat(user: User, request: ChatRequest, endpoint: str) -> Submitted:
    """One chat generation per choice (`n`), in one transaction: all of them or none
    (a limit reached at the third refuses the request). The input is screened once, with
    the first; a blocked input keeps its verdict for review and queues nothing."""
    entry = model_named(user, request.model, Task.CHAT, endpoint)
    check_served(entry)
    screened = [
        front_door.Screened(text, task, context) for text, task, context in request.screened_texts()
    ]
    generations: list[Generation] = []
    with transaction.atomic():
        try:
            for choice in range(request.sampling.n):
                generations.append(
                    front_door.submit(
                        user,
                        task=Task.CHAT,
                        model=entry,
                        input=request.input(),
                        params=request.sampling.params(choice),
                        screened=screened if choice == 0 else (),
                    )
                )
        except InputBlocked as blocked:
            return Submitted(entry, [], blocked)
    return Submitted(entry, generations)


def submit_embeddings(user: User, request: EmbeddingsRequest) -> Submitted:
    entry = model_named(user, request.model, Task.EMBED, "/v1/embeddings")
    check_served(entry)
    with transaction.atomic():
        try:
            generation = front_door.submit(
                user,
                task=Task.EMBED,
                model=entry,
                input={"texts": request.texts},
                screened=[front_door.Screened(text, "embed") for text in request.texts],
            )
        except InputBlocked as blocked:
            return Submitted(entry, [], blocked)
    return Submitted(entry, [generation])


def submit_moderation(user: User, entry: ModelEntry, texts: list[str]) -> Generation:
    """A moderation model's scores for the texts, as a generation on its worker."""
    check_served(entry)
    return front_door.submit(
        user, task=Task.MODERATION, model=entry, input={"texts": texts}, screened=()
    )


def stored_result(generation_id: int) -> dict[str, Any] | None:
    found = Generation.objects.filter(pk=generation_id).values_list("result", flat=True).first()
    return found if isinstance(found, dict) else None
