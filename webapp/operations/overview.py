"""The Operations page's figures: live workers and what they hold, each model's queue,
recent failures, and the last hour per model from the Generation rows (requests by
outcome, tokens, time to first token p50/p95, tokens/s)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from webapp.inference.models import Generation, Status
from webapp.operations import state

HOUR = timedelta(hours=1)
FAILURES_SHOWN = 20
PERCENTILE_SAMPLE = 20_000  # the latest first-token times of the hour that p50/p95 read
OUTCOMES = (Status.DONE, Status.STOPPED, Status.FAILED, Status.BLOCKED)


@dataclass(frozen=True)
class HourFigures:
    model: str
    requests: int
    done: int
    stopped: int
    failed: int
    blocked: int
    unfinished: int  # still queued or running
    prompt_tokens: int
    completion_tokens: int
    first_token_p50: float | None  # seconds from queued to the first token
    first_token_p95: float | None
    tokens_per_second: float | None  # tokens after the first / time after the first


@dataclass(frozen=True)
class Failure:
    id: int
    finished_at: str | None
    model: str
    task: str
    user: str
    error: str


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Continuous percentile (linear between ranks, as PostgreSQL's PERCENTILE_CONT)."""
    if not ordered:
        return None
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def last_hour(now: datetime | None = None) -> list[HourFigures]:
    """Per model, the generations queued in the hour before `now`."""
    since = (now or timezone.now()) - HOUR
    hour = Generation.objects.filter(queued_at__gte=since).order_by()
    totals = hour.values("model_name").annotate(
        requests=Count("pk"),
        **{outcome: Count("pk", filter=Q(status=outcome)) for outcome in OUTCOMES},
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
    )
    timings = _timings(hour)
    figures = []
    for row in totals.order_by("model_name"):
        model = row["model_name"]
        found = timings.get(model, _Timings())
        waits, tokens, seconds = sorted(found.waits), found.tokens, found.seconds
        figures.append(
            HourFigures(
                model=model,
                requests=row["requests"],
                done=row[Status.DONE],
                stopped=row[Status.STOPPED],
                failed=row[Status.FAILED],
                blocked=row[Status.BLOCKED],
                unfinished=row["requests"] - sum(row[outcome] for outcome in OUTCOMES),
                prompt_tokens=row["prompt"] or 0,
                completion_tokens=row["completion"] or 0,
                first_token_p50=percentile(waits, 0.5),
                first_token_p95=percentile(waits, 0.95),
                tokens_per_second=tokens / seconds if seconds > 0 else None,
            )
        )
    return figures


@dataclass
class _Timings:
    waits: list[float] = field(default_factory=list)  # queued to first token, seconds
    tokens: int = 0  # of done replies, after their first
    seconds: float = 0.0  # ... and the time they took


def _timings(hour: QuerySet[Generation]) -> dict[str, _Timings]:
    """First-token times and decoding speed per model, from the latest rows of the hour
    (at most PERCENTILE_SAMPLE; the same reading on SQLite and PostgreSQL)."""
    rows = (
        hour.filter(first_token_at__isnull=False)
        .order_by("-queued_at")
        .values_list(
            "model_name",
            "status",
            "queued_at",
            "first_token_at",
            "finished_at",
            "completion_tokens",
        )[:PERCENTILE_SAMPLE]
    )
    found: dict[str, _Timings] = {}
    for model, status, queued, first, finished, tokens in rows:
        if first is None:  # filtered out above; for the type checker
            continue
        timings = found.setdefault(model, _Timings())
        timings.waits.append((first - queued).total_seconds())
        if status == Status.DONE and tokens > 1 and finished is not None:
            timings.tokens += tokens - 1
            timings.seconds += (finished - first).total_seconds()
    return found


def recent_failures(limit: int = FAILURES_SHOWN) -> list[Failure]:
    rows = (
        Generation.objects.filter(status=Status.FAILED)
        .order_by("-finished_at", "-pk")
        .values_list("pk", "finished_at", "model_name", "task", "user__username", "error")[:limit]
    )
    return [
        Failure(pk, finished.isoformat() if finished else None, model, task, user, error)
        for pk, finished, model, task, user, error in rows
    ]


def snapshot(now: datetime | None = None) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (the page's script polls it)."""
    now = now or timezone.now()
    workers = state.live_workers()
    return {
        "at": now.isoformat(),
        "workers": [_worker(worker) for worker in workers],
        "queues": [asdict(row) for row in state.model_queues(workers)],
        "last_hour": [asdict(row) for row in last_hour(now)],
        "failures": [asdict(failure) for failure in recent_failures()],
    }


def _worker(worker: state.LiveWorker) -> dict[str, Any]:
    report = worker.report
    return {
        "name": worker.name,
        "queues": list(worker.queues),
        "running": worker.running,
        "slots": worker.slots,
        "models": [asdict(model) for model in report.models] if report else [],
        "rss_bytes": report.rss_bytes if report else None,
        "cuda_allocated_bytes": report.cuda_allocated_bytes if report else None,
    }
