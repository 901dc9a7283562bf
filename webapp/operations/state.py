"""What is true now, read from the database and the workers' heartbeats: each model's
queue (waiting and running requests, the live workers serving it) and the live workers
with what they hold. /metrics and the Operations page both read it."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count

from webapp.catalog.models import ModelEntry
from webapp.inference import liveness
from webapp.inference.models import Generation, Status
from webapp.operations import worker_status


@dataclass(frozen=True)
class ModelQueue:
    model: str
    queue: str
    waiting: int
    running: int
    workers: int  # live workers consuming the queue
    slots: int  # generations they run at once, all together


@dataclass(frozen=True)
class LiveWorker:
    name: str
    queues: tuple[str, ...]
    running: int
    slots: int
    report: worker_status.WorkerReport | None  # None until its first report


def live_workers() -> list[LiveWorker]:
    reports = worker_status.reports()
    return [
        LiveWorker(w.name, w.queues, len(w.generations), w.slots, reports.get(w.name))
        for w in sorted(liveness.live_workers(), key=lambda w: w.name)
    ]


def model_queues(workers: list[LiveWorker] | None = None) -> list[ModelQueue]:
    """Every enabled model, and any other with requests waiting or running, by name."""
    workers = live_workers() if workers is None else workers
    counts: dict[tuple[str, str], dict[str, int]] = {
        (name, queue): {}
        for name, queue in ModelEntry.objects.filter(enabled=True).values_list("name", "queue")
    }
    rows = (
        Generation.objects.filter(status__in=[Status.QUEUED, Status.RUNNING])
        .order_by()
        .values_list("model_name", "queue", "status")
        .annotate(n=Count("pk"))
    )
    for model, queue, status, n in rows:
        counts.setdefault((model, queue), {})[status] = n
    return [
        ModelQueue(
            model=model,
            queue=queue,
            waiting=found.get(Status.QUEUED, 0),
            running=found.get(Status.RUNNING, 0),
            workers=sum(1 for w in workers if queue in w.queues),
            slots=sum(w.slots for w in workers if queue in w.queues),
        )
        for (model, queue), found in sorted(counts.items())
    ]
