"""Every write to a Generation: create and enqueue, claim, first token, finish."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.inference import dispatch, streams
from webapp.inference.models import Generation, Status


def create_generation(
    *, user: User, model: ModelEntry, task: str, input: dict[str, Any], params: dict[str, Any]
) -> Generation:
    """Store a queued Generation and send it to its model's queue once the transaction commits."""
    generation = Generation.objects.create(
        user=user, model=model, model_name=model.name, task=task, input=input, params=params
    )
    queue = model.queue
    transaction.on_commit(lambda: dispatch.send_generation(generation.pk, queue))
    return generation


def generation_for_user(user: User, generation_id: int) -> Generation | None:
    """The generation if it belongs to this user; None otherwise (never another user's)."""
    return Generation.objects.filter(pk=generation_id, user=user).first()


def claim(generation_id: int) -> Generation | None:
    """Move a queued (or redelivered running) generation to running; None if there is
    nothing to run: unknown id, or already finished."""
    now = timezone.now()
    updated = Generation.objects.filter(
        pk=generation_id, status__in=[Status.QUEUED, Status.RUNNING]
    ).update(status=Status.RUNNING, started_at=now, first_token_at=None, output="", error="")
    if not updated:
        return None
    return Generation.objects.select_related("model").get(pk=generation_id)


def mark_first_token(generation_id: int) -> None:
    Generation.objects.filter(pk=generation_id).update(first_token_at=timezone.now())


def finish(
    generation_id: int,
    *,
    status: Status,
    output: str = "",
    error: str = "",
    finish_reason: str = "",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> None:
    Generation.objects.filter(pk=generation_id).update(
        status=status,
        output=output,
        error=error,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finished_at=timezone.now(),
    )


def stop(generation_id: int) -> None:
    """Stop a generation: a running one stops at the worker's next decoding step (the stop
    flag); one that no worker has claimed yet is marked stopped here and its stream ended,
    and the worker that later receives it finds nothing to claim."""
    streams.request_stop(generation_id)
    stopped_in_queue = Generation.objects.filter(pk=generation_id, status=Status.QUEUED).update(
        status=Status.STOPPED, finish_reason="stopped", finished_at=timezone.now()
    )
    if stopped_in_queue:
        streams.StreamWriter(generation_id).done(Status.STOPPED, finish_reason="stopped")


def delete_generations(generation_ids: list[int]) -> None:
    """Delete generations for good: running ones are told to stop, their stream data
    is removed from Redis, and the rows go."""
    if not generation_ids:
        return
    running = Generation.objects.filter(
        pk__in=generation_ids, status__in=[Status.QUEUED, Status.RUNNING]
    )
    for generation_id in running.values_list("pk", flat=True):
        streams.request_stop(generation_id)
    Generation.objects.filter(pk__in=generation_ids).delete()
    streams.delete_streams(generation_ids)
