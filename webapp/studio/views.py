"""The one-shot pages: summarize, translate, classify an image; the user's results (list,
one, its image, its text as a file, delete). A refused request re-renders its form with
the user's input kept and the reason shown; an accepted one opens its result page, where
the output streams in. Only the owner sees a result."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from generation.images import sniff_format
from generation.languages import language_name
from generation.specs import SummaryLength, Task
from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_models
from webapp.inference import uploads
from webapp.inference.refusals import InputBlocked, Refused
from webapp.studio import documents, languages, services
from webapp.studio.models import Kind, Result

RECENT_RESULTS = 15
HISTORY_LIMIT = 500


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _models(user: User, task: str) -> tuple[list[ModelEntry], int | None]:
    models = list(usable_models(user, task))
    default = next((m.pk for m in models if m.is_default), models[0].pk if models else None)
    return models, default


def _model_id(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """Render a studio page with the user's latest results beside it."""
    recent = services.results_for(_user(request))[:RECENT_RESULTS]
    return render(request, template, {"recent": recent, **context}, status=status)


def _refused(exc: Exception) -> dict[str, Any]:
    return {"error": str(exc), "blocked": isinstance(exc, InputBlocked)}


@login_required
def summarize(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    models, default = _models(user, Task.SUMMARIZE)
    values = {"text": "", "length": "medium", "model": default}
    problem: dict[str, Any] = {}
    if request.method == "POST":
        values = {
            "text": request.POST.get("text", ""),
            "length": request.POST.get("length", "medium"),
            "model": _model_id(request.POST.get("model")),
        }
        upload = request.FILES.get("file")
        try:
            text, file_name = str(values["text"]), ""
            if upload is not None:  # a chosen file is summarized rather than the box
                limit = settings.ATELIER_STUDIO_MAX_UPLOAD_BYTES
                file_name = upload.name or "document"
                text = documents.read_document(
                    file_name,
                    upload.read(limit + 1),
                    max_bytes=limit,
                    max_chars=services.max_text_chars(),
                )
            result = services.summarize(
                user,
                text=text,
                length=str(values["length"]),
                model_id=_model_id(request.POST.get("model")),
                file_name=file_name,
            )
        except (documents.DocumentError, Refused) as exc:
            problem = _refused(exc)
        else:
            return redirect("studio:result", result.generation_id)
    return _page(
        request,
        "studio/summarize.html",
        {
            "page": "summarize",
            "models": models,
            "values": values,
            "lengths": list(SummaryLength),
            "max_chars": services.max_text_chars(),
            "max_upload": settings.ATELIER_STUDIO_MAX_UPLOAD_BYTES,
            **problem,
        },
        status=400 if problem else 200,
    )


@login_required
def translate(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    models, default = _models(user, Task.TRANSLATE)
    values: dict[str, Any] = {"text": "", "source": "", "target": "", "model": default}
    problem: dict[str, Any] = {}
    if request.method == "POST":
        values = {
            "text": request.POST.get("text", ""),
            "source": request.POST.get("source", ""),
            "target": request.POST.get("target", ""),
            "model": _model_id(request.POST.get("model")),
        }
        try:
            result = services.translate(
                user,
                text=values["text"],
                source=values["source"],
                target=values["target"],
                model_id=values["model"],
            )
        except Refused as exc:
            problem = _refused(exc)
        else:
            return redirect("studio:result", result.generation_id)
    return _page(
        request,
        "studio/translate.html",
        {
            "page": "translate",
            "models": models,
            "values": values,
            "languages": languages.language_choices(),
            "offers": languages.offers(models),
            "max_chars": services.max_text_chars(),
            **problem,
        },
        status=400 if problem else 200,
    )


@login_required
def classify(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    models, default = _models(user, Task.CLASSIFY_IMAGE)
    values: dict[str, Any] = {"model": default}
    problem: dict[str, Any] = {}
    if request.method == "POST":
        values = {"model": _model_id(request.POST.get("model"))}
        upload = request.FILES.get("image")
        try:
            if upload is None:
                raise Refused("Choose an image, or drop one on the box.")
            limit = settings.ATELIER_MAX_IMAGE_BYTES
            result = services.classify(
                user,
                image=upload.read(limit + 1),
                file_name=upload.name or "image",
                model_id=values["model"],
            )
        except Refused as exc:
            problem = _refused(exc)
        else:
            return redirect("studio:result", result.generation_id)
    return _page(
        request,
        "studio/classify.html",
        {
            "page": "classify",
            "models": models,
            "values": values,
            "max_image": settings.ATELIER_MAX_IMAGE_BYTES,
            **problem,
        },
        status=400 if problem else 200,
    )


@login_required
def history(request: HttpRequest) -> HttpResponse:
    """Every result, newest first; narrowed by kind and by words in its title or text."""
    results = services.results_for(_user(request))
    kind = request.GET.get("kind", "")
    if kind in Kind.values:
        results = results.filter(kind=kind)
    query = request.GET.get("q", "").strip()[:200]
    if query:
        results = results.filter(
            Q(title__icontains=query)
            | Q(generation__output__icontains=query)
            | Q(file_name__icontains=query)
        )
    return _page(
        request,
        "studio/history.html",
        {
            "results": results[:HISTORY_LIMIT],
            "kind": kind,
            "kinds": Kind.choices,
            "query": query,
        },
    )


def _own_result(request: HttpRequest, generation_id: int) -> Result:
    result = services.result_for(_user(request), generation_id)
    if result is None:  # someone else's result looks like no result at all
        raise Http404("No such result.")
    return result


def _labels(result: Result) -> list[dict[str, Any]]:
    found = (result.generation.result or {}).get("labels") or []
    return [
        {**item, "percent": round(float(item.get("score", 0)) * 100, 1)}
        for item in found
        if isinstance(item, dict)
    ]


@login_required
@require_GET
def result(request: HttpRequest, generation_id: int) -> HttpResponse:
    found = _own_result(request, generation_id)
    generation = found.generation
    task_input = generation.input if isinstance(generation.input, dict) else {}
    outcome = generation.result if isinstance(generation.result, dict) else {}
    source = outcome.get("source") or task_input.get("source") or ""
    target = outcome.get("target") or task_input.get("target") or ""
    return _page(
        request,
        "studio/result.html",
        {
            "result": found,
            "generation": generation,
            "text": task_input.get("text", ""),
            "length": task_input.get("length", ""),
            "source": language_name(source) if source else "",
            "detected": not task_input.get("source"),
            "target": language_name(target) if target else "",
            "labels": _labels(found),
            "is_image": found.kind == Kind.CLASSIFY_IMAGE,
            "doubtful": services.doubtful_translation(found),
            "unchanged_notice": services.unchanged_notice(str(task_input.get("target", ""))),
            "same_language_notice": services.same_language_notice(
                str(task_input.get("target", ""))
            ),
            # For the script, to name the language detected while the page is open.
            "language_names": dict(languages.language_choices())
            if found.kind == Kind.TRANSLATE
            else None,
        },
    )


@login_required
@require_GET
def image(request: HttpRequest, generation_id: int) -> HttpResponse:
    found = _own_result(request, generation_id)
    path = services.image_path(found)
    try:
        data = uploads.read(path) if path else b""
    except uploads.UploadError:
        data = b""
    kind = sniff_format(data) if data else None
    if kind is None:
        raise Http404("The image is no longer there.")
    response = HttpResponse(data, content_type=f"image/{kind.lower()}")
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def download(request: HttpRequest, generation_id: int) -> HttpResponse:
    found = _own_result(request, generation_id)
    response = HttpResponse(found.generation.output, content_type="text/plain; charset=utf-8")
    kind = {Kind.SUMMARIZE: "summary", Kind.TRANSLATE: "translation"}.get(
        Kind(found.kind), "labels"
    )
    name = slugify(found.file_name.rsplit(".", 1)[0] if found.file_name else found.title)[:50]
    response["Content-Disposition"] = (
        f'attachment; filename="{kind}-{name or found.generation_id}.txt"'
    )
    return response


@login_required
@require_POST
def delete(request: HttpRequest, generation_id: int) -> HttpResponse:
    found = _own_result(request, generation_id)
    services.delete_result(found)
    flash.success(request, f"Deleted “{found.title}”.")
    return redirect("studio:history")
