"""History: search, rename, delete (with generations and stream data), export, import."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from generation.specs import SamplingParams
from webapp.chat import history, services
from webapp.chat.models import Conversation, Message
from webapp.inference.models import Generation, Status
from webapp.inference.streams import StreamWriter, stream_key, sync_redis

pytestmark = pytest.mark.django_db(transaction=True)


def chat(user: Any, *turns: tuple[str, str], title: str | None = None) -> Conversation:
    """A conversation of (user text, assistant reply) turns, replies stored as finished."""
    conversation_id = None
    for question, answer in turns:
        posted = services.post_message(
            user, content=question, conversation_id=conversation_id, model_id=None,
            system="Be kind.", params=SamplingParams(),
        )  # fmt: skip
        generation = posted.assistant_message.generation
        assert generation is not None
        Generation.objects.filter(pk=generation.pk).update(output=answer, status=Status.DONE)
        conversation_id = posted.conversation.pk
    conversation = Conversation.objects.get(pk=conversation_id)
    if title:
        history.rename(conversation, title)
    return conversation


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_search_finds_titles_questions_and_answers_of_own_conversations_only(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    otters = chat(alice, ("Tell me about otters", "Otters hold hands while sleeping."))
    bread = chat(alice, ("How do I bake bread?", "Knead the dough, then wait."), title="Baking")
    chat(bob, ("Otters are my secret", "Noted."))
    assert set(history.search(alice, "otter")) == {otters}
    assert set(history.search(alice, "KNEAD")) == {bread}  # the answer's text, any case
    assert set(history.search(alice, "baking")) == {bread}  # the title
    assert set(history.search(alice, "")) == {otters, bread}
    page = client_for(alice).get(reverse("chat:home"), {"q": "otter"}).content.decode()
    assert "Tell me about otters" in page and "Baking" not in page and "secret" not in page


def test_rename_validates_and_only_the_owner_may(alice: Any, bob: Any, chat_model: Any) -> None:
    conversation = chat(alice, ("Hi", "Hello"))
    response = client_for(alice).post(
        reverse("chat:rename", args=[conversation.pk]), {"title": "  Greetings  "}
    )
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "Greetings"
    with pytest.raises(history.HistoryError, match="empty"):
        history.rename(conversation, "   ")
    with pytest.raises(history.HistoryError, match="200"):
        history.rename(conversation, "x" * 201)
    assert (
        client_for(bob)
        .post(reverse("chat:rename", args=[conversation.pk]), {"title": "Mine"})
        .status_code
        == 404
    )
    conversation.refresh_from_db()
    assert conversation.title == "Greetings"


def test_delete_removes_messages_generations_and_stream_data(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    conversation = chat(alice, ("One", "Uno"), ("Two", "Dos"))
    generation_ids = list(Generation.objects.filter(user=alice).values_list("pk", flat=True))
    for generation_id in generation_ids:
        StreamWriter(generation_id).done(Status.DONE)
    assert all(sync_redis().exists(stream_key(g)) for g in generation_ids)

    assert client_for(bob).post(reverse("chat:delete", args=[conversation.pk])).status_code == 404
    assert Conversation.objects.filter(pk=conversation.pk).exists()

    response = client_for(alice).post(reverse("chat:delete", args=[conversation.pk]))
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert not Generation.objects.filter(pk__in=generation_ids).exists()
    assert not any(sync_redis().exists(stream_key(g)) for g in generation_ids)


def test_deleting_a_conversation_stops_its_running_generation(alice: Any, chat_model: Any) -> None:
    from webapp.inference.streams import stop_requested

    posted = services.post_message(
        alice,
        content="Long story",
        conversation_id=None,
        model_id=None,
        system=None,
        params=SamplingParams(),
    )
    generation_id = posted.assistant_message.generation_id
    assert generation_id is not None
    history.delete(posted.conversation)
    assert stop_requested(generation_id)  # a worker already running it stops at its next step


def test_export_markdown_and_json_then_import_round_trips(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    conversation = chat(alice, ("What is **2+2**?", "It is `4`."), ("And 3+3?", "6"), title="Sums")
    client = client_for(alice)
    markdown = client.get(reverse("chat:export", args=[conversation.pk, "md"]))
    assert markdown["Content-Disposition"] == 'attachment; filename="sums.md"'
    text = markdown.content.decode()
    assert text.startswith("# Sums") and "Be kind." in text
    assert text.index("What is **2+2**?") < text.index("It is `4`.") < text.index("And 3+3?")
    exported = client.get(reverse("chat:export", args=[conversation.pk, "json"]))
    data = json.loads(exported.content)
    assert data["format"] == "atelier.conversation" and data["title"] == "Sums"
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "What is **2+2**?"),
        ("assistant", "It is `4`."),
        ("user", "And 3+3?"),
        ("assistant", "6"),
    ]
    assert (
        client_for(bob).get(reverse("chat:export", args=[conversation.pk, "json"])).status_code
        == 404
    )

    upload = SimpleUploadedFile("sums.json", exported.content, content_type="application/json")
    response = client_for(bob).post(reverse("chat:import"), {"file": upload})
    imported = Conversation.objects.get(user=bob)
    assert response.status_code == 302 and response["Location"] == reverse(
        "chat:conversation", args=[imported.pk]
    )
    assert imported.title == "Sums" and imported.system_prompt == "Be kind."
    assert [(m.role, m.text) for m in services.visible_path(imported)] == [
        (m["role"], m["content"]) for m in data["messages"]
    ]
    assert json.loads(history.export_json(imported))["messages"][1]["content"] == "It is `4`."


HEADER = b'{"format": "atelier.conversation", "version": 1, "messages": '


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"\xff\xfe not utf-8", "not JSON"),
        (b"{not json", "not JSON"),
        (b'{"format": "other"}', "not a conversation exported from Atelier"),
        (b'{"format": "atelier.conversation", "version": 99, "messages": []}', "version"),
        (b'{"format": "atelier.conversation", "version": 1, "messages": []}', "no messages"),
        (HEADER + b'[{"role": "system", "content": "x"}]}', "Message 1 needs a role"),
        (HEADER + b'[{"role": "user", "content": 5}]}', "Message 1 needs text"),
    ],
)  # fmt: skip
def test_bad_import_files_get_a_clear_error_and_store_nothing(
    alice: Any, content: bytes, error: str
) -> None:
    response = client_for(alice).post(
        reverse("chat:import"), {"file": SimpleUploadedFile("x.json", content)}, follow=True
    )
    assert error in response.content.decode()
    assert not Conversation.objects.exists()


def test_oversized_import_is_refused(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "MAX_IMPORT_BYTES", 100)
    upload = SimpleUploadedFile("big.json", b" " * 200)
    response = client_for(alice).post(reverse("chat:import"), {"file": upload}, follow=True)
    assert "too large" in response.content.decode() and not Conversation.objects.exists()


def test_an_import_with_a_blocked_message_is_refused_and_the_verdict_recorded(
    alice: Any,
) -> None:
    from webapp.moderation.models import ModerationEvent

    content = HEADER + (
        b'[{"role": "user", "content": "Hello there"},'
        b' {"role": "assistant", "content": "Hi!"},'
        b' {"role": "user", "content": "I will kill you"}]}'
    )
    response = client_for(alice).post(
        reverse("chat:import"), {"file": SimpleUploadedFile("x.json", content)}, follow=True
    )
    assert "Message 3 was blocked by the content policy (violence)" in response.content.decode()
    assert not Conversation.objects.exists()
    event = ModerationEvent.objects.get(user=alice)
    assert (event.action, event.task, event.text) == ("block", "chat_import", "I will kill you")
