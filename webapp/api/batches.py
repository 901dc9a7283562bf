"""The Files and Batch APIs: a JSONL file of /v1/chat/completions or /v1/embeddings
requests, each with a `custom_id`, becomes an Atelier batch job (`jobs`), one item per
request; when the job ends its results are written once as an output file and an error
file, keyed by `custom_id`. Every object is its owner's: another user's answers 404."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.specs import Task
from webapp.accounts.models import User
from webapp.api import schemas, services, shapes
from webapp.api.errors import ApiError, bad_field
from webapp.api.models import ApiBatch, ApiFile, FilePurpose
from webapp.jobs import engine
from webapp.jobs import services as jobs
from webapp.jobs.models import ItemStatus, JobStatus

ENDPOINTS = {"/v1/chat/completions": Task.CHAT, "/v1/embeddings": Task.EMBED}
COMPLETION_WINDOW = "24h"
MAX_CUSTOM_ID = 500


def _public_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


# --- Files ------------------------------------------------------------------------------


def upload(user: User, *, filename: str, purpose: str, data: bytes) -> ApiFile:
    if purpose != FilePurpose.BATCH:
        raise bad_field("purpose", "Atelier takes files of purpose 'batch' only.")
    if len(data) > settings.ATELIER_JOB_MAX_UPLOAD_BYTES:
        raise ApiError(
            413,
            f"The file is larger than {settings.ATELIER_JOB_MAX_UPLOAD_BYTES} bytes.",
            code="file_too_large",
            param="file",
        )
    read_lines(data)  # refuse a file that cannot be a batch now, not at batch time
    return ApiFile.objects.create(
        public_id=_public_id("file-"),
        user=user,
        purpose=purpose,
        filename=(filename or "batch.jsonl")[:255],
        data=data,
        size=len(data),
    )


def file_for(user: User, file_id: str) -> ApiFile:
    found = ApiFile.objects.filter(public_id=file_id, user=user).first()
    if found is None:
        raise ApiError(404, f"No such file: '{file_id}'.", code="file_not_found")
    return found


def file_object(found: ApiFile) -> dict[str, Any]:
    return {
        "id": found.public_id,
        "object": "file",
        "bytes": found.size,
        "created_at": int(found.created_at.timestamp()),
        "filename": found.filename,
        "purpose": found.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def read_lines(data: bytes) -> list[dict[str, Any]]:
    """The requests of a batch file: each line a JSON object with a unique `custom_id`,
    `method` POST, a `url` and a `body` object. ApiError (400) naming the line otherwise."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad_field("file", "The file is not UTF-8 text (JSON Lines).") from None
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to read
            raise bad_field("file", f"Line {number} is not valid JSON.") from None
        if not isinstance(item, dict):
            raise bad_field("file", f"Line {number} is not a JSON object.")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            raise bad_field("file", f"Line {number} has no 'custom_id' (a string).")
        if custom_id in seen:
            raise bad_field("file", f"Line {number} repeats the custom_id {custom_id!r}.")
        seen.add(custom_id)
        if item.get("method", "POST") != "POST" or not isinstance(item.get("body"), dict):
            raise bad_field("file", f"Line {number} must be a POST with a 'body' object.")
        if item.get("url") not in ENDPOINTS:
            raise bad_field("file", f"Line {number}: 'url' must be one of {', '.join(ENDPOINTS)}.")
        lines.append(item)
        if len(lines) > settings.ATELIER_JOB_MAX_ITEMS:
            raise bad_field(
                "file", f"A batch holds at most {settings.ATELIER_JOB_MAX_ITEMS} requests."
            )
    if not lines:
        raise bad_field("file", "The file holds no requests.")
    return lines


# --- Batches ----------------------------------------------------------------------------


def _request(endpoint: str, line: dict[str, Any], number: int) -> tuple[str, jobs.Request]:
    """A line's model and its job item."""
    body = line["body"]
    try:
        if endpoint == "/v1/embeddings":
            embed = schemas.parse_embeddings(body, max_chars=settings.ATELIER_JOB_MAX_ITEM_CHARS)
            return embed.model, jobs.Request(
                external_id=line["custom_id"],
                text="\n".join(embed.texts)[:2000],
                input={"texts": embed.texts},
                params={},
                screened=embed.texts,
            )
        chat = schemas.parse_chat(
            body,
            max_chars=settings.ATELIER_MAX_MESSAGE_CHARS,
            max_system_chars=settings.ATELIER_MAX_SYSTEM_PROMPT_CHARS,
            default_max_tokens=settings.ATELIER_DEFAULT_MAX_TOKENS,
        )
    except ApiError as error:
        raise bad_field("input_file_id", f"Line {number}: {error.message}") from None
    if chat.stream or chat.sampling.n != 1:
        raise bad_field(
            "input_file_id",
            f"Line {number}: a batch request has no 'stream' and one choice ('n': 1).",
        )
    screened = [text for text, _task, _context in chat.screened_texts()]
    return chat.model, jobs.Request(
        external_id=line["custom_id"],
        text=screened[0] if screened else "",
        input=chat.input(),
        params=chat.sampling.params(0),
        screened=screened,
    )


def create(
    user: User,
    *,
    input_file_id: str,
    endpoint: str,
    completion_window: str = COMPLETION_WINDOW,
    metadata: dict[str, Any] | None = None,
) -> ApiBatch:
    if endpoint not in ENDPOINTS:
        raise bad_field("endpoint", f"'endpoint' must be one of {', '.join(ENDPOINTS)}.")
    if completion_window != COMPLETION_WINDOW:
        raise bad_field("completion_window", "'completion_window' must be '24h'.")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_field("metadata", "'metadata' must be an object.")
    source = file_for(user, input_file_id)
    if source.purpose != FilePurpose.BATCH:
        raise bad_field("input_file_id", "The input file must be of purpose 'batch'.")
    requests: list[jobs.Request] = []
    models: set[str] = set()
    for number, line in enumerate(read_lines(bytes(source.data)), start=1):
        if line["url"] != endpoint:
            raise bad_field(
                "input_file_id",
                f"Line {number} is for {line['url']}, not the batch's endpoint {endpoint}.",
            )
        model, request = _request(endpoint, line, number)
        models.add(model)
        requests.append(request)
    if len(models) != 1:
        raise bad_field("input_file_id", "Every request of a batch names the same model.")
    entry = services.model_named(user, models.pop(), ENDPOINTS[endpoint], endpoint)
    with transaction.atomic():
        job = jobs.create_request_job(
            user=user,
            model=entry,
            task=ENDPOINTS[endpoint],
            source_name=source.filename,
            requests=requests,
        )
        return ApiBatch.objects.create(
            public_id=_public_id("batch_"),
            user=user,
            job=job,
            endpoint=endpoint,
            input_file=source,
            input_file_public_id=source.public_id,
            completion_window=completion_window,
            metadata=metadata,
        )


def batch_for(user: User, batch_id: str) -> ApiBatch:
    found = (
        ApiBatch.objects.filter(public_id=batch_id, user=user)
        .select_related("job", "output_file", "error_file")
        .first()
    )
    if found is None:
        raise ApiError(404, f"No such batch: '{batch_id}'.", code="batch_not_found")
    return found


def batches_of(user: User, *, after: str | None, limit: int) -> tuple[list[ApiBatch], bool]:
    rows = ApiBatch.objects.filter(user=user).select_related("job", "output_file", "error_file")
    if after:
        cursor = ApiBatch.objects.filter(public_id=after, user=user).first()
        if cursor is None:
            raise bad_field("after", f"No such batch: '{after}'.")
        rows = rows.filter(created_at__lt=cursor.created_at) | rows.filter(
            created_at=cursor.created_at, pk__lt=cursor.pk
        )
    found = list(rows.order_by("-created_at", "-pk")[: limit + 1])
    return found[:limit], len(found) > limit


def cancel(batch: ApiBatch) -> ApiBatch:
    try:
        engine.cancel(batch.job)
    except engine.JobStateError as exc:
        raise ApiError(
            409, f"The batch cannot be cancelled: {exc}", code="batch_not_cancellable"
        ) from None
    ApiBatch.objects.filter(pk=batch.pk).update(cancelling_at=timezone.now())
    return refreshed(batch)


def refreshed(batch: ApiBatch) -> ApiBatch:
    """The batch as it stands, its files written if its job has just ended."""
    engine.reconcile(batch.job_id)
    batch = ApiBatch.objects.select_related("job", "output_file", "error_file").get(pk=batch.pk)
    if _ended(batch) and batch.output_file_id is None and batch.error_file_id is None:
        write_results(batch.pk)
        batch = ApiBatch.objects.select_related("job", "output_file", "error_file").get(pk=batch.pk)
    return batch


def _ended(batch: ApiBatch) -> bool:
    job = batch.job
    if job.status == JobStatus.DONE:
        return True
    return (
        job.status == JobStatus.CANCELLED
        and not job.items.filter(status__in=[ItemStatus.PENDING, ItemStatus.RUNNING]).exists()
    )


def write_results(batch_id: int) -> None:
    """The output and error files of an ended batch, once (under the batch's row lock)."""
    with transaction.atomic():
        batch = ApiBatch.objects.select_for_update().select_related("job").get(pk=batch_id)
        if batch.output_file_id is not None or batch.error_file_id is not None:
            return
        outputs: list[str] = []
        errors: list[str] = []
        for item in batch.job.items.order_by("index"):
            line = _result_line(batch, item)
            (outputs if line["error"] is None else errors).append(json.dumps(line))
        stem = batch.public_id
        if outputs:
            batch.output_file = _result_file(batch.user, f"{stem}_output.jsonl", outputs)
        if errors:
            batch.error_file = _result_file(batch.user, f"{stem}_error.jsonl", errors)
        batch.save(update_fields=["output_file", "error_file"])


def _result_file(user: User, name: str, lines: list[str]) -> ApiFile:
    data = ("\n".join(lines) + "\n").encode()
    return ApiFile.objects.create(
        public_id=_public_id("file-"),
        user=user,
        purpose=FilePurpose.BATCH_OUTPUT,
        filename=name,
        data=data,
        size=len(data),
    )


def _result_line(batch: ApiBatch, item: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": f"batch_req_{item.pk}",
        "custom_id": item.external_id,
        "response": None,
        "error": None,
    }
    if item.status != ItemStatus.DONE:
        code = "batch_cancelled" if item.status == ItemStatus.CANCELLED else "request_failed"
        message = item.error or ("Cancelled before it ran." if code == "batch_cancelled" else "")
        line["error"] = {"code": code, "message": message or "The request failed."}
        return line
    found = item.result or {}
    usage = {
        "prompt_tokens": found.get("prompt_tokens", 0),
        "completion_tokens": found.get("completion_tokens", 0),
    }
    if batch.endpoint == "/v1/embeddings":
        vectors = (found.get("result") or {}).get("embeddings") or []
        body = shapes.embedding_list(
            vectors,
            model=batch.job.model_name,
            encoding="float",
            prompt_tokens=usage["prompt_tokens"],
        )
    else:
        done = {
            "text": item.output,
            "status": "done",
            "finish_reason": found.get("finish_reason", ""),
            "usage": usage,
        }
        body = shapes.completion(
            kind=shapes.CHAT,
            id=f"chatcmpl-{item.generation_id}",
            model=batch.job.model_name,
            dones=[done],
        )
    line["response"] = {"status_code": 200, "request_id": f"req_{item.pk}", "body": body}
    return line


def _status(batch: ApiBatch) -> str:
    job = batch.job
    if job.status == JobStatus.CANCELLED:
        return "cancelled" if _ended(batch) else "cancelling"
    if job.status == JobStatus.DONE:
        return "completed"
    return "in_progress"


def _stamp(moment: Any) -> int | None:
    return None if moment is None else int(moment.timestamp())


def batch_object(batch: ApiBatch) -> dict[str, Any]:
    job = batch.job
    status = _status(batch)
    return {
        "id": batch.public_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": None,
        "input_file_id": batch.input_file_public_id,
        "completion_window": batch.completion_window,
        "status": status,
        "output_file_id": batch.output_file.public_id if batch.output_file else None,
        "error_file_id": batch.error_file.public_id if batch.error_file else None,
        "created_at": _stamp(batch.created_at),
        "in_progress_at": _stamp(job.started_at or batch.created_at),
        "expires_at": _stamp(batch.created_at + timedelta(hours=24)),
        "finalizing_at": _stamp(job.finished_at) if status == "completed" else None,
        "completed_at": _stamp(job.finished_at) if status == "completed" else None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": _stamp(batch.cancelling_at),
        "cancelled_at": _stamp(job.finished_at) if status == "cancelled" else None,
        "request_counts": {
            "total": job.total,
            "completed": job.done_count,
            "failed": job.failed_count,
        },
        "metadata": batch.metadata,
        "atelier": {"job": job.pk, "job_status": job.status, "model": job.model_name},
    }
