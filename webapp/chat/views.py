from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from generation.specs import Task
from webapp.accounts.models import User
from webapp.catalog.services import usable_models
from webapp.chat import services
from webapp.chat.rendering import render_markdown


def _page(request: HttpRequest, conversation: services.Conversation | None) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    messages = services.visible_path(conversation) if conversation else []
    shown = [
        {
            "message": m,
            "html": render_markdown(m.text) if m.role == "assistant" else "",
            "generation": m.generation,
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
            "conversations": services.conversations_for(user)[:200],
            "shown": shown,
            "models": models,
            "selected_model": selected,
        },
    )


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return _page(request, None)


@login_required
def conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    try:
        found = services.conversation_for(user, conversation_id)
    except services.NotFound:
        raise Http404("No such conversation.") from None
    return _page(request, found)
