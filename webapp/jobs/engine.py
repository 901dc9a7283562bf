"""The batch engine: a job's items become background Generations, a few at a time.

At most ATELIER_JOB_MAX_IN_FLIGHT generations of a job are queued or running at once; each
finished one is recorded on its item and the next items are dispatched. That happens when
the generation's outcome is committed (the `generation_finished` signal, in the worker or
web process that recorded it) and again on a reconcile pass (the job page and its
WebSocket, the batch command), which also catches a signal lost to a crash.

Exactly once: an item has at most one live generation, and a result is written with a
conditional UPDATE (item still running, still on that generation), so a generation that
is recorded twice (signal and reconcile, two processes) or requeued after its worker died
(same Generation, run again) yields one result. Dispatching holds the job's row lock, so
two processes never fan out past the bound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.utils import timezone

from webapp.catalog.models import ModelEntry
from webapp.inference import front_door
from webapp.inference import services as inference
from webapp.inference.models import FINISHED, Generation, Priority, Source, Status
from webapp.inference.refusals import InputBlocked, ModelUnavailable, NotAllowed, QuotaExceeded
from webapp.jobs.models import ItemStatus, Job, JobItem, JobStatus, JobTask

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
THROUGHPUT_WINDOW = timedelta(seconds=60)


class JobStateError(Exception):
    """The action does not apply to the job as it stands (e.g. resume a running job)."""


def item_input(job: Job, item: JobItem) -> dict[str, Any]:
    """A generation's input for one item (the worker's contract for each task): an API
    item carries its own."""
    if item.request is not None:
        return dict(item.request["input"])
    if job.task == JobTask.TRANSLATE:
        payload: dict[str, Any] = {"text": item.text, "target": job.options["target"]}
        if job.options.get("source"):
            payload["source"] = job.options["source"]
        return payload
    return {"text": item.text, "length": job.options.get("length", "short")}


def _locked(job_id: int) -> Job | None:
    """The job, its row locked until the transaction ends: one process at a time records
    and dispatches for a job."""
    jobs = Job.objects.select_for_update(of=("self",)).select_related("model", "user")
    return jobs.filter(pk=job_id).first()


def dispatch(job_id: int) -> int:
    """Top up the job's generations in flight to the bound; mark the job done when
    nothing is left. Returns how many generations were created."""
    with transaction.atomic():
        job = _locked(job_id)
        return 0 if job is None else _top_up_locked(job)


def _top_up_locked(job: Job) -> int:
    if job.status in ACTIVE:
        return _dispatch_locked(job)
    if job.status == JobStatus.PAUSED:
        _finish_if_empty(job)
    return 0


def _dispatch_locked(job: Job) -> int:
    entry = job.model
    pending = job.items.filter(status=ItemStatus.PENDING)
    if entry is None:  # deleted mid-job
        _model_gone(job)
        return 0
    in_flight = job.items.filter(status=ItemStatus.RUNNING).count()
    free = settings.ATELIER_JOB_MAX_IN_FLIGHT - in_flight
    started = 0
    while started < free:
        batch = list(pending.order_by("index")[: free - started])
        if not batch:
            break
        for item in batch:
            try:
                generation = _submit(job, entry, item)
            except InputBlocked as blocked:
                _fail_item(job, item, blocked.message)
                continue
            except NotAllowed as refused:
                # An account that may not generate (suspended, say) generates nothing: the
                # job waits, paused (resuming is refused until it may again).
                _pause_for(job, refused.message)
                return started
            except QuotaExceeded as exceeded:
                # A quota used up: the job waits, paused with the reason, and resumes by
                # itself when the quota allows (`resume_due`, on every worker's heartbeat).
                _pause_for(job, exceeded.message, resume_at=exceeded.resets_at)
                return started
            except ModelUnavailable:  # disabled mid-job, or no longer the owner's to use
                _model_gone(job)
                return started
            JobItem.objects.filter(pk=item.pk, status=ItemStatus.PENDING).update(
                status=ItemStatus.RUNNING,
                generation=generation,
                attempts=F("attempts") + 1,
                output="",
                error="",
                updated_at=timezone.now(),
            )
            started += 1
    if started and job.status == JobStatus.QUEUED:
        Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, started_at=timezone.now())
        job.status = JobStatus.RUNNING
    if not started:
        _finish_if_empty(job)
    return started


def _submit(job: Job, entry: ModelEntry, item: JobItem) -> Generation:
    """The item's generation, through the front door like any request: background priority,
    the document checked under the owner's content policy (recorded for review like a chat
    message). A retry checks it again: a reviewer may have allowed it meanwhile."""
    request = item.request or {}
    texts = request.get("screened", [item.text])
    with front_door.origin(Source.BATCH, job.api_key_id):  # whoever dispatches it
        return front_door.submit(
            job.user,
            model=entry,
            task=job.task,
            input=item_input(job, item),
            params=request.get("params") or {},
            screened=[front_door.Screened(text, job.task) for text in texts],
            priority=Priority.BACKGROUND,
        )


def _pause_for(job: Job, reason: str, resume_at: datetime | None = None) -> None:
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.PAUSED, paused_reason=reason, resume_at=resume_at
    )
    job.status = JobStatus.PAUSED
    job.paused_reason = reason
    job.resume_at = resume_at


def _model_gone(job: Job) -> None:
    """The model went away mid-job: the remaining items fail with the reason (retry is
    possible once an admin enables it again)."""
    now = timezone.now()
    job.items.filter(status=ItemStatus.PENDING).update(
        status=ItemStatus.FAILED,
        error=f"The model {job.model_name!r} is no longer available.",
        finished_at=now,
        updated_at=now,
    )
    refresh_counts(job.pk)
    _finish_if_empty(job)


def _fail_item(job: Job, item: JobItem, error: str) -> None:
    """The item fails with the reason, unsent."""
    now = timezone.now()
    failed = JobItem.objects.filter(pk=item.pk, status=ItemStatus.PENDING).update(
        status=ItemStatus.FAILED, error=error, finished_at=now, updated_at=now
    )
    if failed:
        Job.objects.filter(pk=job.pk).update(failed_count=F("failed_count") + 1)


def _finish_if_empty(job: Job) -> None:
    left = job.items.filter(status__in=[ItemStatus.PENDING, ItemStatus.RUNNING]).exists()
    if not left and job.status in (*ACTIVE, JobStatus.PAUSED):
        Job.objects.filter(pk=job.pk, status=job.status).update(
            status=JobStatus.DONE, finished_at=timezone.now()
        )


def _job_of(generation_id: int) -> int | None:
    job_id = (
        JobItem.objects.filter(generation_id=generation_id).values_list("job_id", flat=True).first()
    )
    return None if job_id is None else int(job_id)


def record(generation_id: int) -> int | None:
    """Write a finished generation's outcome on its item, once. Returns the item's job
    id (None if the generation is not a job's)."""
    job_id = _job_of(generation_id)
    if job_id is not None:
        with transaction.atomic():
            job = _locked(job_id)
            if job is not None:
                _record_locked(job, generation_id)
    return job_id


COUNTERS = {
    ItemStatus.DONE: "done_count",
    ItemStatus.FAILED: "failed_count",
    ItemStatus.CANCELLED: "cancelled_count",
}


def _record_locked(job: Job, generation_id: int) -> bool:
    generation = (
        Generation.objects.filter(pk=generation_id)
        .values(
            "status",
            "output",
            "error",
            "finish_reason",
            "result",
            "prompt_tokens",
            "completion_tokens",
        )
        .first()
    )
    if generation is None or generation["status"] not in FINISHED:
        return False
    changes = _outcome(dict(generation), job_status=job.status)
    recorded = JobItem.objects.filter(
        job_id=job.pk, generation_id=generation_id, status=ItemStatus.RUNNING
    ).update(updated_at=timezone.now(), **changes)
    counter = COUNTERS.get(changes["status"])
    if recorded and counter:  # exact: the item changed under the job's lock
        Job.objects.filter(pk=job.pk).update(**{counter: F(counter) + 1})
    return bool(recorded)


def _outcome(generation: dict[str, Any], job_status: str) -> dict[str, Any]:
    """The item's new fields for a finished generation."""
    status = generation["status"]
    now = timezone.now()
    if status == Status.DONE:
        return {
            "status": ItemStatus.DONE,
            "output": generation["output"],
            "result": _item_result(generation),
            "error": "",
            "finished_at": now,
        }
    if status == Status.STOPPED:
        if job_status == JobStatus.PAUSED:  # withdrawn by pause: runs again on resume
            return {"status": ItemStatus.PENDING, "generation": None, "finished_at": None}
        if job_status == JobStatus.CANCELLED:
            return {"status": ItemStatus.CANCELLED, "finished_at": now}
        return {
            "status": ItemStatus.FAILED,
            "error": "It was stopped before it finished.",
            "finished_at": now,
        }
    if status == Status.BLOCKED:
        message = generation["error"] or "The safety policy blocked it."
    else:
        message = generation["error"] or "The generation failed."
    return {
        "status": ItemStatus.FAILED,
        "error": message,
        "result": _item_result(generation),
        "finished_at": now,
    }


def _item_result(generation: dict[str, Any]) -> dict[str, Any]:
    """What a done item keeps of its generation beyond the text (the API's batch output
    reads it): why it ended, its token counts, its structured output."""
    return {
        "finish_reason": generation["finish_reason"],
        "prompt_tokens": generation["prompt_tokens"],
        "completion_tokens": generation["completion_tokens"],
        "result": generation["result"],
    }


def refresh_counts(job_id: int) -> None:
    """Count the items afresh (after changes to many at once), under the job's lock so
    that no concurrent record's increment is lost."""
    with transaction.atomic():
        if _locked(job_id) is None:
            return
        counts = dict(
            JobItem.objects.filter(job_id=job_id)
            .values("status")
            .annotate(n=Count("pk"))
            .values_list("status", "n")
        )
        Job.objects.filter(pk=job_id).update(
            done_count=counts.get(ItemStatus.DONE, 0),
            failed_count=counts.get(ItemStatus.FAILED, 0) + counts.get(ItemStatus.INVALID, 0),
            cancelled_count=counts.get(ItemStatus.CANCELLED, 0),
        )


def on_generation_finished(generation_id: int, **_: Any) -> None:
    """Receiver of `generation_finished`: record the item and top its job up, in one
    transaction under the job's lock. In a worker this runs between two generations
    (the next one of the job is already queued); see docs/benchmarks.md for its cost."""
    job_id = _job_of(generation_id)
    if job_id is None:  # not a job's (a chat reply, ...)
        return
    with transaction.atomic():
        job = _locked(job_id)
        if job is not None:
            _record_locked(job, generation_id)
            _top_up_locked(job)


def reconcile(job_id: int) -> None:
    """Record every finished generation whose signal was missed, give items whose
    generation was deleted another run, and top the job up."""
    running = JobItem.objects.filter(job_id=job_id, status=ItemStatus.RUNNING)
    orphans = running.filter(generation__isnull=True)
    if orphans.exists():
        orphans.update(status=ItemStatus.PENDING, updated_at=timezone.now())
    finished = running.filter(generation__status__in=FINISHED).values_list(
        "generation_id", flat=True
    )
    for generation_id in list(finished):
        record(generation_id)
    dispatch(job_id)


def reconcile_stalled() -> int:
    """Reconcile every job with an item still running whose generation has finished: its
    signal was lost (say, its worker was killed between recording the outcome and the
    job hearing of it), and resume the jobs a quota paused whose reset has come. Workers
    call this on their heartbeat, so such a job goes on even when nobody has its page
    open. Returns how many jobs were reconciled or resumed."""
    job_ids = set(
        JobItem.objects.filter(
            status=ItemStatus.RUNNING, generation__status__in=FINISHED
        ).values_list("job_id", flat=True)
    )
    for job_id in job_ids:
        reconcile(job_id)
    return len(job_ids) + resume_due()


def resume_due(now: datetime | None = None) -> int:
    """Resume the jobs Atelier paused for a quota whose reset has come (a job that still
    does not fit is paused again, with the new reset). Returns how many it resumed."""
    due = Job.objects.filter(
        status=JobStatus.PAUSED, resume_at__isnull=False, resume_at__lte=now or timezone.now()
    )
    resumed = 0
    for job in list(due):
        try:
            resume(job)
        except JobStateError:
            continue  # resumed or cancelled meanwhile, or the account may not generate
        resumed += 1
    return resumed


def pause(job: Job) -> None:
    """No new items are dispatched; generations still waiting in the queue are withdrawn
    (their items run again on resume); running ones finish and are recorded."""
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status__in=ACTIVE).update(
            status=JobStatus.PAUSED, paused_reason="", resume_at=None
        )
    if not updated:
        raise JobStateError("Only a queued or running job can be paused.")
    waiting = JobItem.objects.filter(
        job_id=job.pk, status=ItemStatus.RUNNING, generation__status=Status.QUEUED
    ).values_list("generation_id", flat=True)
    for generation_id in list(waiting):
        inference.stop(generation_id)


def resume(job: Job) -> None:
    """Dispatch the job's items again. A quota still used up leaves it paused with the
    reason and the reset (nothing is lost: it resumes by itself then)."""
    try:
        front_door.check_can_generate(job.user, Priority.BACKGROUND)
    except NotAllowed as exc:
        raise JobStateError(exc.message) from None
    except QuotaExceeded as exceeded:
        Job.objects.filter(pk=job.pk, status=JobStatus.PAUSED).update(
            paused_reason=exceeded.message, resume_at=exceeded.resets_at
        )
        raise JobStateError(exceeded.message) from None
    cleared = {"paused_reason": "", "resume_at": None}
    started = Job.objects.filter(pk=job.pk, started_at__isnull=False)
    resumed = started.filter(status=JobStatus.PAUSED).update(status=JobStatus.RUNNING, **cleared)
    resumed += Job.objects.filter(
        pk=job.pk, status=JobStatus.PAUSED, started_at__isnull=True
    ).update(status=JobStatus.QUEUED, **cleared)
    if not resumed:
        raise JobStateError("Only a paused job can be resumed.")
    reconcile(job.pk)


def cancel(job: Job) -> None:
    """Items not yet finished are cancelled: pending ones at once, queued and running
    generations are stopped (results that finish meanwhile are kept)."""
    now = timezone.now()
    updated = Job.objects.filter(pk=job.pk, status__in=[*ACTIVE, JobStatus.PAUSED]).update(
        status=JobStatus.CANCELLED, finished_at=now
    )
    if not updated:
        raise JobStateError("This job has already ended.")
    JobItem.objects.filter(job_id=job.pk, status=ItemStatus.PENDING).update(
        status=ItemStatus.CANCELLED, finished_at=now, updated_at=now
    )
    live = JobItem.objects.filter(job_id=job.pk, status=ItemStatus.RUNNING).values_list(
        "generation_id", flat=True
    )
    for generation_id in list(live):
        if generation_id is not None:
            inference.stop(generation_id)
    reconcile(job.pk)
    refresh_counts(job.pk)


def retry_failed(job: Job) -> int:
    """Failed items (not unreadable inputs) run again with a new generation. Returns
    how many."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status == JobStatus.CANCELLED:
            raise JobStateError("A cancelled job cannot be retried.")
        count = JobItem.objects.filter(job_id=job.pk, status=ItemStatus.FAILED).update(
            status=ItemStatus.PENDING,
            generation=None,
            error="",
            output="",
            result=None,
            finished_at=None,
            updated_at=timezone.now(),
        )
        if count and locked.status == JobStatus.DONE:
            Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, finished_at=None)
    refresh_counts(job.pk)
    dispatch(job.pk)
    return count


@dataclass(frozen=True)
class Progress:
    job: int
    status: str
    total: int
    done: int
    failed: int
    cancelled: int
    running: int
    retryable: int  # failed items that can run again (unreadable inputs cannot)
    percent: int
    per_minute: float | None  # items finished per minute, recently
    eta_seconds: float | None
    paused_reason: str = ""  # why Atelier paused it (a quota used up: until when)

    def as_event(self) -> dict[str, Any]:
        return {"type": "progress", **self.__dict__}


def progress(job_id: int) -> Progress:
    job = Job.objects.get(pk=job_id)
    running = job.items.filter(status=ItemStatus.RUNNING).count()
    retryable = job.items.filter(status=ItemStatus.FAILED).count()
    finished = job.finished_items
    now = timezone.now()
    per_second: float | None = None
    if job.started_at is not None:
        if job.status in ACTIVE:
            since = max(job.started_at, now - THROUGHPUT_WINDOW)
            recent = job.items.filter(finished_at__gte=since).exclude(status=ItemStatus.CANCELLED)
            seconds = (now - since).total_seconds()
            per_second = recent.count() / seconds if seconds >= 1 else None
        else:
            end = job.finished_at or now
            seconds = (end - job.started_at).total_seconds()
            per_second = (job.done_count + job.failed_count) / seconds if seconds > 0 else None
    remaining = job.total - finished
    eta = None
    if job.status in ACTIVE and per_second:
        eta = round(remaining / per_second, 1)
    return Progress(
        job=job.pk,
        status=job.status,
        total=job.total,
        done=job.done_count,
        failed=job.failed_count,
        cancelled=job.cancelled_count,
        running=running,
        retryable=retryable,
        percent=job.percent,
        paused_reason=job.paused_reason if job.status == JobStatus.PAUSED else "",
        per_minute=round(per_second * 60, 1) if per_second else None,
        eta_seconds=eta,
    )
