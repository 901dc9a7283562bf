"""Every write to a Generation after the front door (`front_door.submit`) has queued it:
claim fairly, first token, finish, stop, requeue after a dead worker; and what a waiting
client is told about the queue."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.inference import dispatch, liveness, streams
from webapp.inference.models import Generation, Priority, Status
from webapp.inference.signals import generation_finished

log = logging.getLogger(__name__)


def create_generation(
    *,
    user: User,
    model: ModelEntry,
    task: str,
    input: dict[str, Any],
    params: dict[str, Any],
    priority: Priority = Priority.INTERACTIVE,
    source: str = "web",
    api_key_id: int | None = None,
    reserved_tokens: int = 0,
) -> Generation:
    """Store a queued Generation and wake a worker of its model's queue once the
    transaction commits. No check is made here: requests come through
    `front_door.submit`, which makes them first."""
    generation = Generation.objects.create(
        user=user,
        model=model,
        model_name=model.name,
        task=task,
        input=input,
        params=params,
        queue=model.queue,
        priority=priority,
        source=source,
        api_key_id=api_key_id,
        reserved_tokens=reserved_tokens,
    )
    queue = model.queue
    transaction.on_commit(lambda: dispatch.wake_worker(queue))
    return generation


def generation_for_user(user: User, generation_id: int) -> Generation | None:
    """The generation if it belongs to this user; None otherwise (never another user's)."""
    return Generation.objects.filter(pk=generation_id, user=user).first()


def fair_order(queue: str, limit: int = 5000) -> list[int]:
    """The queued generations of a queue in the order workers take them: by priority,
    then round-robin between users, the user served least recently first, each user's
    own requests oldest first. So one user's many requests delay another user's single
    request by at most one request."""
    rows = list(
        Generation.objects.filter(queue=queue, status=Status.QUEUED)
        .order_by("queued_at", "pk")
        .values_list("pk", "user_id", "priority")[:limit]
    )
    if not rows:
        return []
    users = {user_id for _pk, user_id, _priority in rows}
    last_served = dict(
        Generation.objects.filter(queue=queue, user_id__in=users, started_at__isnull=False)
        .values("user_id")
        .annotate(last=Max("started_at"))
        .values_list("user_id", "last")
    )
    order: list[int] = []
    never = timezone.now() - timedelta(days=365 * 100)  # users not served yet go first
    for priority in sorted({p for _pk, _user, p in rows}):
        per_user: dict[int, list[int]] = {}
        for pk, user_id, p in rows:
            if p == priority:
                per_user.setdefault(user_id, []).append(pk)
        turn = sorted(per_user, key=lambda u: (last_served.get(u) or never, per_user[u][0]))
        depth = max(len(ids) for ids in per_user.values())
        for round_ in range(depth):
            order += [per_user[u][round_] for u in turn if round_ < len(per_user[u])]
    return order


def claim_next(
    queue: str,
    worker: str,
    *,
    skip_models: Collection[int | None] = (),
    skip_background: Collection[int | None] = (),
) -> Generation | None:
    """Move the next generation of the queue (in fair order) to running for this worker;
    None when nothing is queued. A conditional UPDATE, so two workers never take one.

    A worker with no room left for a model passes it in `skip_models` (its generations
    stay queued, and the next one in fair order for another model is taken), and one
    keeping its last slots for interactive work passes the model in `skip_background`."""
    order = fair_order(queue, limit=50)
    if skip_models or skip_background:
        facts = dict(
            (pk, (model_id, priority))
            for pk, model_id, priority in Generation.objects.filter(pk__in=order).values_list(
                "pk", "model_id", "priority"
            )
        )
        skipped_background = set(skip_background)
        order = [
            pk
            for pk in order
            if pk in facts
            and facts[pk][0] not in skip_models
            and not (facts[pk][1] != Priority.INTERACTIVE and facts[pk][0] in skipped_background)
        ]
    for generation_id in order:
        updated = Generation.objects.filter(pk=generation_id, status=Status.QUEUED).update(
            status=Status.RUNNING,
            started_at=timezone.now(),
            first_token_at=None,
            output="",
            error="",
            worker=worker,
            attempts=F("attempts") + 1,
        )
        if updated:
            return Generation.objects.select_related("model").get(pk=generation_id)
    return None


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
    images: int = 0,
    worker: str | None = None,
    result: Any = None,
) -> bool:
    """Record the outcome. With `worker`, only if that worker still holds the generation
    (not if it was requeued after the worker was taken for dead). True if recorded."""
    rows = Generation.objects.filter(pk=generation_id)
    if worker is not None:
        rows = rows.filter(worker=worker, status=Status.RUNNING)
    fields: dict[str, Any] = {} if result is None else {"result": result}
    recorded = bool(
        rows.update(
            status=status,
            output=output,
            error=error,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            images=images,
            finished_at=timezone.now(),
            **fields,
        )
    )
    if recorded:
        _announce_finished(generation_id, status, finish_reason)
    return recorded


def _announce_finished(generation_id: int, status: str, finish_reason: str) -> None:
    """Tell listeners (batch jobs, chat) once the outcome is committed."""

    def send() -> None:
        replies = generation_finished.send_robust(
            sender=Generation,
            generation_id=generation_id,
            status=str(status),
            finish_reason=finish_reason,
        )
        for receiver, reply in replies:
            if isinstance(reply, Exception):
                log.error("generation %s: %r failed: %r", generation_id, receiver, reply)

    transaction.on_commit(send)


def stop(generation_id: int) -> None:
    """Stop a generation: a running one stops at the worker's next decoding step (the stop
    flag); a queued one leaves the queue at once: it is marked stopped and its stream ended,
    and no worker will pick it."""
    streams.request_stop(generation_id)
    stopped_in_queue = Generation.objects.filter(pk=generation_id, status=Status.QUEUED).update(
        status=Status.STOPPED, finish_reason="stopped", finished_at=timezone.now()
    )
    if stopped_in_queue:
        _announce_finished(generation_id, Status.STOPPED, "stopped")
        writer = streams.StreamWriter(generation_id)
        writer.resume()
        writer.done(Status.STOPPED, finish_reason="stopped")


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


DEAD_WORKER_ERROR = (
    "The worker running this reply stopped unexpectedly {attempts} times; it was not retried."
)


def recover_orphan(generation_id: int, dead_worker: str) -> str:
    """A running generation whose worker is gone: queue it again (its stream gets a
    `requeued` status, then the new run's events), or fail it once it has had
    ATELIER_GENERATION_MAX_ATTEMPTS. Returns what was done: requeued, failed or nothing."""
    generation = Generation.objects.filter(
        pk=generation_id, status=Status.RUNNING, worker=dead_worker
    ).first()
    if generation is None:
        return "nothing"
    writer = streams.StreamWriter(generation_id)
    writer.resume()
    if generation.attempts < settings.ATELIER_GENERATION_MAX_ATTEMPTS:
        requeued = Generation.objects.filter(
            pk=generation_id, status=Status.RUNNING, worker=dead_worker
        ).update(status=Status.QUEUED, worker="", output="", first_token_at=None)
        if not requeued:
            return "nothing"
        writer.status("requeued")
        dispatch.wake_worker(generation.queue)
        log.warning("generation %s: worker %s is gone; requeued", generation_id, dead_worker)
        return "requeued"
    message = DEAD_WORKER_ERROR.format(attempts=generation.attempts)
    if not finish(
        generation_id,
        status=Status.FAILED,
        error=message,
        finish_reason="error",
        worker=dead_worker,
    ):
        return "nothing"
    writer.done(Status.FAILED, finish_reason="error", error=message)
    log.warning("generation %s: worker %s is gone; failed", generation_id, dead_worker)
    return "failed"


def running_without_worker(live: set[str]) -> list[tuple[int, str]]:
    """(generation, worker) for running generations whose worker has no heartbeat."""
    return list(
        Generation.objects.filter(status=Status.RUNNING)
        .exclude(worker__in=live)
        .values_list("pk", "worker")
    )


def top_up(queue: str) -> int:
    """Make sure every queued generation of the queue has a wake-up message in the broker
    (messages are lost when Redis restarts without persistence). Extra messages are
    harmless: a worker woken with nothing queued does nothing. Returns how many were sent."""
    queued = Generation.objects.filter(queue=queue, status=Status.QUEUED).count()
    missing = queued - dispatch.waiting_messages(queue)
    for _ in range(max(0, missing)):
        dispatch.wake_worker(queue)
    return max(0, missing)


@dataclass(frozen=True)
class QueueInfo:
    position: int  # 1 = next to run
    running: int  # generations running on the queue now
    workers: int  # live workers serving the queue
    eta_seconds: float | None  # None: no finished generation to estimate from yet
    slots: int = 0  # how many the live workers run at once (batched), all together


@dataclass(frozen=True)
class _Snapshot:
    taken: float
    positions: dict[int, int]
    running: int
    workers: int
    slots: int
    mean_seconds: float | None


SNAPSHOT_SECONDS = 1.0
_snapshots: dict[str, _Snapshot] = {}
_live: tuple[float, list[liveness.WorkerInfo]] = (-SNAPSHOT_SECONDS, [])


def _live_workers(fresh: bool = False) -> list[liveness.WorkerInfo]:
    """The live workers, read from Redis at most once a second per process (unless fresh)."""
    global _live
    if fresh or time.monotonic() - _live[0] >= SNAPSHOT_SECONDS:
        _live = (time.monotonic(), liveness.live_workers())
    return _live[1]


def live_worker_names() -> set[str]:
    return {worker.name for worker in _live_workers()}


def _snapshot(queue: str, fresh: bool) -> _Snapshot:
    """The queue's state, computed at most once a second per process: every waiting
    client's position comes from it, so a thousand waiting clients cost one computation."""
    found = _snapshots.get(queue)
    if not fresh and found is not None and time.monotonic() - found.taken < SNAPSHOT_SECONDS:
        return found
    order = fair_order(queue)
    running = Generation.objects.filter(queue=queue, status=Status.RUNNING).count()
    serving = [worker for worker in _live_workers(fresh) if queue in worker.queues]
    recent = list(
        Generation.objects.filter(
            queue=queue, status=Status.DONE, started_at__isnull=False, finished_at__isnull=False
        )
        .order_by("-finished_at")
        .values_list("started_at", "finished_at")[:20]
    )
    seconds = [(end - start).total_seconds() for start, end in recent if start and end]
    snapshot = _Snapshot(
        taken=time.monotonic(),
        positions={pk: at + 1 for at, pk in enumerate(order)},
        running=running,
        workers=len(serving),
        slots=sum(worker.slots for worker in serving),
        mean_seconds=sum(seconds) / len(seconds) if seconds else None,
    )
    _snapshots[queue] = snapshot
    return snapshot


def queue_info(generation: Generation, fresh: bool = False) -> QueueInfo | None:
    """Where a queued generation stands (from a snapshot up to a second old, unless
    fresh); None once it is no longer queued."""
    snapshot = _snapshot(generation.queue, fresh)
    position = snapshot.positions.get(generation.pk)
    if position is None:
        if generation.status == Status.QUEUED and not fresh:  # queued after the snapshot
            return queue_info(generation, fresh=True)
        return None
    eta = None
    slots = snapshot.slots
    if snapshot.mean_seconds is not None and slots:
        # Those ahead in the queue and those running, less the slots free for it: each of
        # those must end first, and the slots end one every mean_seconds / slots.
        ahead = max(0, position + snapshot.running - slots)
        eta = round(snapshot.mean_seconds * ahead / slots, 1)
    return QueueInfo(
        position=position,
        running=snapshot.running,
        workers=snapshot.workers,
        eta_seconds=eta,
        slots=slots,
    )
