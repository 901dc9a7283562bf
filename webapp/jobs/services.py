"""Writes of the jobs app: keep an upload between the form's two steps, create a job from
a parsed file (or from ready-made requests, for the API's batches), find a user's own
jobs. The engine (engine.py) runs them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.specs import SummaryLength
from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.inference import front_door
from webapp.inference.models import Priority
from webapp.jobs import engine, inputs
from webapp.jobs.models import ItemStatus, Job, JobItem, JobTask, Upload

UPLOAD_RETENTION = timedelta(days=1)


def limits() -> inputs.Limits:
    return inputs.Limits(
        max_upload_bytes=settings.ATELIER_JOB_MAX_UPLOAD_BYTES,
        max_items=settings.ATELIER_JOB_MAX_ITEMS,
        max_item_chars=settings.ATELIER_JOB_MAX_ITEM_CHARS,
        zip_max_uncompressed_bytes=settings.ATELIER_JOB_ZIP_MAX_UNCOMPRESSED_BYTES,
        zip_max_ratio=settings.ATELIER_JOB_ZIP_MAX_RATIO,
    )


def job_for(user: User, job_id: int) -> Job | None:
    """The job if it is this user's; None otherwise (never another user's)."""
    return Job.objects.filter(pk=job_id, user=user).select_related("model").first()


def keep_upload(user: User, name: str, task: str, data: bytes) -> Upload:
    """Store a checked upload for the form's second step; forget old ones."""
    Upload.objects.filter(created_at__lt=timezone.now() - UPLOAD_RETENTION).delete()
    return Upload.objects.create(user=user, name=name, task=task, data=data)


def upload_for(user: User, upload_id: int) -> Upload | None:
    return Upload.objects.filter(pk=upload_id, user=user).first()


def options_for(
    task: str, *, length: str = "short", target: str = "", source: str = ""
) -> dict[str, Any]:
    if task == JobTask.TRANSLATE:
        if not target:
            raise ValueError("Choose the language to translate into.")
        return {"target": target, "source": source}
    if length not in set(SummaryLength):
        raise ValueError(
            f"Unknown summary length {length!r}; choose one of {', '.join(SummaryLength)}."
        )
    return {"length": length}


def create_job(
    *,
    user: User,
    model: ModelEntry,
    task: str,
    options: dict[str, Any],
    source_name: str,
    parsed: inputs.Parsed,
) -> Job:
    """Store the job and its items (unreadable inputs as invalid items, with their error)
    and dispatch the first ones. Refused (refusals) when the owner may not generate."""
    front_door.check_can_generate(user, Priority.BACKGROUND)  # background: no limit
    if model.task != task:
        raise ValueError(f"{model.name} is a {model.task} model, not a {task} model.")
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.create(
            user=user,
            model=model,
            model_name=model.name,
            task=task,
            options=options,
            source_name=source_name[:255],
            source_format=parsed.format,
            total=len(parsed.documents),
            skipped_empty=parsed.skipped_empty,
        )
        JobItem.objects.bulk_create(
            [
                JobItem(
                    job=job,
                    index=document.index,
                    external_id=document.external_id[:500],
                    text=document.text,
                    status=ItemStatus.INVALID if document.error else ItemStatus.PENDING,
                    error=document.error,
                    finished_at=now if document.error else None,
                )
                for document in parsed.documents
            ],
            batch_size=1000,
        )
        engine.refresh_counts(job.pk)
        engine.dispatch(job.pk)
    job.refresh_from_db()
    return job


@dataclass(frozen=True)
class Request:
    """One item of a job whose items carry their own request (an API batch): its id, the
    text shown for it, and the generation's input, params and screened texts."""

    external_id: str
    text: str
    input: dict[str, Any]
    params: dict[str, Any]
    screened: list[str]


def create_request_job(
    *, user: User, model: ModelEntry, task: str, source_name: str, requests: list[Request]
) -> Job:
    """Store a job of ready-made requests (the Batch API's) and dispatch the first ones:
    the same engine, bounds, exactly-once results and controls as a job of documents."""
    front_door.check_can_generate(user, Priority.BACKGROUND)
    if task not in (JobTask.CHAT, JobTask.EMBED):
        raise ValueError(f"A job of requests is a chat or embed job, not {task!r}.")
    if model.task != task:
        raise ValueError(f"{model.name} is a {model.task} model, not a {task} model.")
    with transaction.atomic():
        job = Job.objects.create(
            user=user,
            model=model,
            model_name=model.name,
            task=task,
            options={},
            source_name=source_name[:255],
            source_format="jsonl",
            total=len(requests),
            api_key_id=front_door.current_origin().api_key_id,
        )
        JobItem.objects.bulk_create(
            [
                JobItem(
                    job=job,
                    index=index,
                    external_id=request.external_id[:500],
                    text=request.text,
                    request={
                        "input": request.input,
                        "params": request.params,
                        "screened": request.screened,
                    },
                )
                for index, request in enumerate(requests)
            ],
            batch_size=1000,
        )
        engine.dispatch(job.pk)
    job.refresh_from_db()
    return job
