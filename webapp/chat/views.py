from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from generation.specs import SamplingParams, Task
from webapp.accounts.models import User
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_models
from webapp.chat import history, services
from webapp.chat.models import Role
from webapp.inference.relay import timings_of
from webapp.inference.rendering import code_css, render_markdown
from webapp.moderation import services as moderation
from webapp.studio import services as studio

RECENT_RESULTS = 8  # one-shot results listed in the chat sidebar


def blocked_category(message: services.Message) -> str:
    """What the content policy blocked a user message for ("" when it was not blocked)."""
    if message.blocked_by_id is None:
        return ""
    return (message.blocked_by.category if message.blocked_by else "") or "content"


def _page(request: HttpRequest, conversation: services.Conversation | None) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    messages = services.visible_path(conversation) if conversation else []
    branches = services.branches(conversation, messages) if conversation else {}
    shown = [
        {
            "message": m,
            "html": render_markdown(m.text) if m.role == "assistant" else "",
            "generation": m.generation,
            "timings": timings_of(m.generation) if m.generation else None,
            "branch": branches.get(m.pk),
            "blocked": blocked_category(m),
            "notice": moderation.input_notice(blocked_category(m)) if m.blocked_by_id else "",
        }
        for m in messages
    ]
    models = list(usable_models(user, Task.CHAT))
    selected = (
        conversation.model_id
        if conversation and conversation.model_id
        else next((m.pk for m in models if m.is_default), models[0].pk if models else None)
    )
    return render(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "conversations": history.search(user, request.GET.get("q", ""))[:200],
            "results": _recent_results(user, request.GET.get("q", "")),
            "query": request.GET.get("q", ""),
            "shown": shown,
            "models": models,
            "selected_model": selected,
            "model_settings": {str(m.pk): model_settings(m) for m in models},
            "remembered": remembered_settings(conversation) if conversation else None,
        },
    )


def model_settings(entry: ModelEntry) -> dict[str, Any]:
    """What the picker tells about a model: its description and the settings a request
    that sets none gets (its defaults, else Atelier's)."""
    defaults = SamplingParams.from_dict(
        {"max_new_tokens": settings.ATELIER_DEFAULT_MAX_TOKENS, **entry.sampling_defaults()}
    )
    return {
        "description": entry.description,
        "temperature": defaults.temperature,
        "top_p": defaults.top_p,
        "max_tokens": defaults.max_new_tokens,
        "repetition_penalty": defaults.repetition_penalty,
        "system_prompt": entry.takes_system_prompt,
    }


def remembered_settings(conversation: services.Conversation) -> dict[str, Any] | None:
    """The settings of the conversation's latest reply, which the page starts from."""
    latest = (
        conversation.messages.filter(role=Role.ASSISTANT, generation__isnull=False)
        .select_related("generation")
        .order_by("-pk")
        .first()
    )
    params = latest.generation.params if latest and latest.generation else {}
    if not params:
        return None
    names = {"temperature": "temperature", "top_p": "top_p", "max_new_tokens": "max_tokens"}
    names["repetition_penalty"] = "repetition_penalty"
    return {shown: params[name] for name, shown in names.items() if name in params}


def _recent_results(user: User, query: str) -> list[Any]:
    """The user's latest one-shot results (summaries, translations, image labels), shown
    beside their chats; a search narrows them by title too."""
    results = studio.results_for(user)
    if query.strip():
        results = results.filter(title__icontains=query.strip())
    return list(results[:RECENT_RESULTS])


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return _page(request, None)


def _own_conversation(request: HttpRequest, conversation_id: int) -> services.Conversation:
    user = request.user
    assert isinstance(user, User)
    try:
        return services.conversation_for(user, conversation_id)
    except services.NotFound:
        raise Http404("No such conversation.") from None


@login_required
def conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    return _page(request, _own_conversation(request, conversation_id))


@login_required
@require_GET
def title(request: HttpRequest, conversation_id: int) -> JsonResponse:
    """The conversation's title now, and who wrote it (the page waits for the model's)."""
    found = _own_conversation(request, conversation_id)
    return JsonResponse({"title": found.title, "source": found.title_source})


@require_GET
@cache_control(max_age=3600, public=True)
def code_stylesheet(request: HttpRequest) -> HttpResponse:
    """The colours of highlighted code, from Pygments' style (no file to keep in step)."""
    return HttpResponse(code_css(), content_type="text/css; charset=utf-8")


@login_required
@require_POST
def rename(request: HttpRequest, conversation_id: int) -> HttpResponse:
    found = _own_conversation(request, conversation_id)
    try:
        history.rename(found, request.POST.get("title", ""))
    except history.HistoryError as exc:
        flash.error(request, str(exc))
    return redirect("chat:conversation", found.pk)


@login_required
@require_POST
def select(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """Show another version of a message (the previous/next controls): its branch is shown."""
    found = _own_conversation(request, conversation_id)
    user = request.user
    assert isinstance(user, User)
    raw = request.POST.get("message", "")
    try:
        message = services.message_for(user, int(raw))
    except (ValueError, services.NotFound):
        raise Http404("No such message.") from None
    if message.conversation_id != found.pk:
        raise Http404("No such message.")
    services.select_branch(user, message.pk)
    return redirect("chat:conversation", found.pk)


@login_required
@require_POST
def delete(request: HttpRequest, conversation_id: int) -> HttpResponse:
    found = _own_conversation(request, conversation_id)
    history.delete(found)
    flash.success(request, f"Deleted “{found.title}”.")
    return redirect("chat:home")


@login_required
@require_GET
def export(request: HttpRequest, conversation_id: str, kind: str) -> HttpResponse:
    found = _own_conversation(request, int(conversation_id))
    if kind == "json":
        body, content_type = history.export_json(found), "application/json"
    else:
        body, content_type = history.export_markdown(found), "text/markdown"
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    name = slugify(found.title)[:60] or f"conversation-{found.pk}"
    response["Content-Disposition"] = (
        f'attachment; filename="{name}.{"json" if kind == "json" else "md"}"'
    )
    return response


@login_required
@require_POST
def import_conversation(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    upload = request.FILES.get("file")
    if upload is None:
        flash.error(request, "Choose a JSON file exported from Atelier.")
        return redirect("chat:home")
    if upload.size is not None and upload.size > history.MAX_IMPORT_BYTES:
        flash.error(request, "The file is too large to import.")
        return redirect("chat:home")
    try:
        imported = history.import_json(user, upload.read(history.MAX_IMPORT_BYTES + 1))
    except history.HistoryError as exc:
        flash.error(request, f"Import failed: {exc}")
        return redirect("chat:home")
    flash.success(request, f"Imported “{imported.title}”.")
    return redirect("chat:conversation", imported.pk)
