"""Regenerate and edit branch a conversation; the page shows one branch and moves between
siblings. Replies are run by the worker's task body in-process."""

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from webapp.chat import services
from webapp.chat.models import Message, Role
from webapp.inference.models import Generation, Status
from workers.runner import run_next

pytestmark = pytest.mark.django_db

GREEDY = SamplingParams(temperature=0, max_new_tokens=6)


def post(user: Any, content: str, conversation_id: int | None = None) -> services.Posted:
    posted = services.post_message(
        user, content=content, conversation_id=conversation_id, model_id=None, system=None,
        params=GREEDY,
    )  # fmt: skip
    assert run_next(DIRECT_QUEUE) == posted.assistant_message.generation_id
    return posted


def texts(conversation: Any) -> list[str]:
    conversation.refresh_from_db()
    return [f"{m.role}:{m.content}" for m in services.visible_path(conversation)]


def test_regenerate_adds_a_sibling_reply_from_the_same_history(alice: Any, chat_model: Any) -> None:
    first = post(alice, "Hello")
    second = post(alice, "Tell me more", first.conversation.pk)
    again = services.regenerate(
        alice,
        message_id=second.assistant_message.pk,
        model_id=None,
        params=SamplingParams(temperature=1.0, seed=3, max_new_tokens=6),
    )
    assert again.assistant_message.parent_id == second.user_message.pk
    assert run_next(DIRECT_QUEUE) == again.assistant_message.generation_id
    generation = Generation.objects.get(pk=again.assistant_message.generation_id)
    # The same history as the first reply got: both user turns, one assistant turn.
    assert [t["role"] for t in generation.input["messages"]] == ["user", "assistant", "user"]
    path = services.visible_path(again.conversation)
    assert path[-1].pk == again.assistant_message.pk and len(path) == 4
    places = services.branches(again.conversation, path)
    assert (places[path[-1].pk].index, places[path[-1].pk].count) == (2, 2)
    assert places[path[-1].pk].previous == second.assistant_message.pk
    assert places[path[-2].pk].count == 1  # the user message has no siblings


def test_edit_branches_and_the_original_stays_one_branch_away(alice: Any, chat_model: Any) -> None:
    first = post(alice, "Hello")
    post(alice, "Second question", first.conversation.pk)
    conversation = first.conversation
    edited = services.edit(
        alice,
        message_id=first.user_message.pk,
        content="Hello, edited",
        model_id=None,
        system=None,
        params=GREEDY,
    )
    assert run_next(DIRECT_QUEUE) == edited.assistant_message.generation_id
    assert texts(conversation) == ["user:Hello, edited", "assistant:"]
    generation = Generation.objects.get(pk=edited.assistant_message.generation_id)
    assert generation.input["messages"] == [{"role": "user", "content": "Hello, edited"}]
    # Back to the original: its whole branch, down to the newest leaf, comes back.
    services.select_branch(alice, first.user_message.pk)
    assert texts(conversation) == ["user:Hello", "assistant:", "user:Second question", "assistant:"]
    # A message posted now continues the visible branch.
    third = post(alice, "Third", conversation.pk)
    assert third.user_message.parent.parent.content == "Second question"  # type: ignore[union-attr]


def test_select_view_switches_branch_and_refuses_other_ids(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    first = post(alice, "Hello")
    again = services.regenerate(
        alice, message_id=first.assistant_message.pk, model_id=None, params=GREEDY
    )
    run_next(DIRECT_QUEUE)
    client = Client()
    client.force_login(alice)
    url = reverse("chat:select", args=[first.conversation.pk])
    page = client.get(reverse("chat:conversation", args=[first.conversation.pk])).content.decode()
    assert "2/2" in page and f'value="{first.assistant_message.pk}"' in page
    response = client.post(url, {"message": first.assistant_message.pk})
    assert response.status_code == 302
    first.conversation.refresh_from_db()
    assert first.conversation.current_leaf_id == first.assistant_message.pk
    assert "1/2" in client.get(response["Location"]).content.decode()
    # Another user's message, another conversation's message, garbage: 404, nothing moves.
    other = post(alice, "Elsewhere")
    bobs = Client()
    bobs.force_login(bob)
    assert bobs.post(url, {"message": again.assistant_message.pk}).status_code == 404
    assert client.post(url, {"message": other.user_message.pk}).status_code == 404
    assert client.post(url, {"message": "x"}).status_code == 404
    first.conversation.refresh_from_db()
    assert first.conversation.current_leaf_id == first.assistant_message.pk


def test_regenerate_and_edit_refuse_the_wrong_kind_of_message(alice: Any, chat_model: Any) -> None:
    first = post(alice, "Hello")
    before = Message.objects.count()
    with pytest.raises(services.BadRequest):
        services.regenerate(alice, message_id=first.user_message.pk, model_id=None, params=GREEDY)
    with pytest.raises(services.BadRequest):
        services.edit(
            alice,
            message_id=first.assistant_message.pk,
            content="x",
            model_id=None,
            system=None,
            params=GREEDY,
        )
    assert Message.objects.count() == before
    assert not Generation.objects.filter(status=Status.QUEUED, task="chat").exists()
    assert first.assistant_message.role == Role.ASSISTANT
