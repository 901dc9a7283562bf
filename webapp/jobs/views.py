"""Job pages: the list and the new-job form (upload, then choices), a job's page, its
actions (pause, resume, cancel, retry) and its results. Only the owner sees a job."""

from __future__ import annotations

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils.text import get_valid_filename
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.models import User
from webapp.catalog.services import usable_models
from webapp.inference import front_door, uploads
from webapp.inference.models import Priority
from webapp.inference.refusals import Refused
from webapp.jobs import engine, inputs, results, services
from webapp.jobs.forms import TARGET_LANGUAGES, ConfigureForm, UploadForm
from webapp.jobs.models import ItemStatus, Job, JobTask

ITEMS_PER_PAGE = 100
PREVIEW_ITEMS = 3


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _own_job(request: HttpRequest, job_id: int) -> Job:
    job = services.job_for(_user(request), job_id)
    if job is None:
        raise Http404("No such job.")
    return job


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """The user's jobs, newest first, and the first step of a new one (the file)."""
    user = _user(request)
    form = UploadForm()
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            task = form.cleaned_data["task"]
            try:
                front_door.check_can_generate(user, Priority.BACKGROUND)
                # One byte past the limit is enough for inspect() to refuse it by size.
                data = upload.read(services.limits().max_upload_bytes + 1)
                inputs.inspect(upload.name, data, services.limits())
            except (inputs.InputError, Refused) as exc:
                form.add_error("file", str(exc))
            else:
                try:
                    kept = services.keep_upload(user, upload.name, task, data)
                except DatabaseError as exc:
                    if not uploads.out_of_space(exc):
                        raise
                    form.add_error("file", f"{upload.name!r}: {uploads.NO_ROOM_MESSAGE}.")
                else:
                    return redirect("jobs:configure", upload_id=kept.pk)
    jobs = Job.objects.filter(user=user)[:200]
    return render(request, "jobs/list.html", {"jobs": jobs, "form": form})


@login_required
def configure(request: HttpRequest, upload_id: int) -> HttpResponse:
    """The second step: column or field, id, text mode, model, length or language; with
    a preview of what the file gives. Creating the job dispatches its first items."""
    user = _user(request)
    upload = services.upload_for(user, upload_id)
    if upload is None:
        raise Http404("No such upload (it may have expired; upload the file again).")
    limits = services.limits()
    data = bytes(upload.data)
    try:
        inspection = inputs.inspect(upload.name, data, limits)
    except inputs.InputError as exc:
        flash.error(request, str(exc))
        return redirect("jobs:list")
    models = usable_models(user, upload.task)
    form = ConfigureForm(
        request.POST or None, inspection=inspection, task=upload.task, models=models
    )
    parsed: inputs.Parsed | None = None
    problem = ""
    choices = form.data if form.is_bound else {k: f.initial for k, f in form.fields.items()}
    try:
        parsed = inputs.parse(
            upload.name,
            data,
            column=str(choices.get("column") or ""),
            id_column=str(choices.get("id_column") or ""),
            text_mode=str(choices.get("text_mode") or inputs.TextMode.LINES),
            limits=limits,
        )
    except inputs.InputError as exc:
        problem = str(exc)
    if form.is_bound and form.is_valid() and parsed is not None and "preview" not in request.POST:
        options = services.options_for(
            upload.task,
            length=form.cleaned_data.get("length") or "short",
            target=form.cleaned_data.get("target") or "",
            source=form.cleaned_data.get("source") or "",
        )
        try:
            job = services.create_job(
                user=user,
                model=form.cleaned_data["model"],
                task=upload.task,
                options=options,
                source_name=upload.name,
                parsed=parsed,
            )
        except Refused as exc:
            problem = exc.message
        except DatabaseError as exc:  # the job and its items are rolled back together
            if not uploads.out_of_space(exc):
                raise
            problem = f"The job could not be created: {uploads.NO_ROOM_MESSAGE}."
        else:
            upload.delete()
            return redirect("jobs:job", job_id=job.pk)
    return render(
        request,
        "jobs/configure.html",
        {
            "upload": upload,
            "form": form,
            "parsed": parsed,
            "problem": problem,
            "preview": parsed.documents[:PREVIEW_ITEMS] if parsed else [],
            "no_models": not models.exists(),
        },
    )


@login_required
@require_GET
def job_page(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _own_job(request, job_id)
    engine.reconcile(job.pk)
    job.refresh_from_db()
    items = Paginator(job.items.order_by("index").select_related(None), ITEMS_PER_PAGE)
    page = items.get_page(request.GET.get("page"))
    return render(
        request,
        "jobs/job.html",
        {
            "job": job,
            "progress": engine.progress(job.pk),
            "page": page,
            "target_name": TARGET_LANGUAGES.get(job.options.get("target", ""), ""),
            "is_translate": job.task == JobTask.TRANSLATE,
            "is_api": job.task in (JobTask.CHAT, JobTask.EMBED),
            "retryable": job.items.filter(status=ItemStatus.FAILED).exists(),
        },
    )


ACTIONS = {
    "pause": engine.pause,
    "resume": engine.resume,
    "cancel": engine.cancel,
    "retry": engine.retry_failed,
}


@login_required
@require_POST
def action(request: HttpRequest, job_id: int, name: str) -> HttpResponse:
    job = _own_job(request, job_id)
    act = ACTIONS.get(name)
    if act is None:
        raise Http404("No such action.")
    try:
        act(job)
    except engine.JobStateError as exc:
        flash.error(request, str(exc))
    return redirect("jobs:job", job_id=job.pk)


@login_required
@require_GET
def download(request: HttpRequest, job_id: int, kind: str) -> StreamingHttpResponse:
    """Every item in input order with its id, status, output and error."""
    job = _own_job(request, job_id)
    stem = get_valid_filename(job.source_name.rsplit(".", 1)[0]) or "job"
    content_type = {"csv": "text/csv", "jsonl": "application/x-ndjson"}[kind]
    response = StreamingHttpResponse(
        results.chunks(job, kind), content_type=f"{content_type}; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{stem}-job{job.pk}-results.{kind}"'
    return response
