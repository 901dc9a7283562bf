"""Titles written by the chat model after the first exchange, as background requests."""

from pathlib import Path
from typing import Any

import pytest

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from webapp.chat import history, services, titles
from webapp.chat.models import Conversation, TitleSource
from webapp.inference.models import Generation, Priority, Status
from workers.runner import run_next

pytestmark = pytest.mark.django_db


@pytest.fixture
def wordy_model(chat_model: Any, endless_llama_dir: Path) -> Any:
    """Never ends early, so a title request always has text to use."""
    chat_model.source = str(endless_llama_dir)
    chat_model.save()
    return chat_model


def ask(user: Any, content: str, conversation_id: int | None = None) -> services.Posted:
    return services.post_message(
        user, content=content, conversation_id=conversation_id, model_id=None, system=None,
        params=SamplingParams(temperature=0, max_new_tokens=6),
    )  # fmt: skip


def title_requests() -> list[Generation]:
    return list(Generation.objects.filter(task=titles.TITLE_TASK))


def test_the_first_reply_asks_for_a_title_that_replaces_the_provisional_one(
    alice: Any, wordy_model: Any
) -> None:
    first = ask(alice, "How do otters keep warm in cold water?")
    assert first.conversation.title == "How do otters keep warm in cold water?"
    run_next(DIRECT_QUEUE)
    [request] = title_requests()
    assert request.priority == Priority.BACKGROUND and request.status == Status.QUEUED
    assert "How do otters keep warm" in request.input["messages"][0]["content"]
    # The user asks again before the title runs: the reply goes first.
    second = ask(alice, "And sea lions?", first.conversation.pk)
    assert run_next(DIRECT_QUEUE) == second.assistant_message.generation_id
    assert run_next(DIRECT_QUEUE) == request.pk
    request.refresh_from_db()
    assert request.status == Status.DONE
    conversation = Conversation.objects.get(pk=first.conversation.pk)
    written = titles.clean_title(request.output)  # a random tiny model may write only spaces
    assert conversation.title == (written or "How do otters keep warm in cold water?")
    assert conversation.title_source == (TitleSource.MODEL if written else TitleSource.AUTO)
    assert len(title_requests()) == 1  # only after the first exchange
    # What a real model writes becomes the title.
    request.output = '"Otters in Cold Water"'
    if not written:
        assert titles.apply_title(request)
        conversation.refresh_from_db()
        assert conversation.title == "Otters in Cold Water"


def test_a_title_the_user_chose_is_kept(alice: Any, wordy_model: Any) -> None:
    first = ask(alice, "Hello")
    run_next(DIRECT_QUEUE)
    history.rename(first.conversation, "My own title")
    run_next(DIRECT_QUEUE)  # the title request
    assert Conversation.objects.get(pk=first.conversation.pk).title == "My own title"


def test_title_requests_do_not_count_against_the_limit_and_go_with_the_conversation(
    alice: Any, wordy_model: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.ATELIER_MAX_CONCURRENT_GENERATIONS = 1
    first = ask(alice, "Hello")
    run_next(DIRECT_QUEUE)
    assert title_requests()  # queued, yet alice may ask again
    ask(alice, "Again", first.conversation.pk)
    with django_capture_on_commit_callbacks(execute=True):
        history.delete(Conversation.objects.get(pk=first.conversation.pk))
    assert not Generation.objects.filter(user=alice).exists()


def test_a_used_up_quota_still_gets_the_conversation_its_title(
    alice: Any, wordy_model: Any, settings: Any
) -> None:
    settings.ATELIER_REQUESTS_PER_MINUTE = 1
    ask(alice, "Hello")  # the minute's one request
    run_next(DIRECT_QUEUE)  # the reply: its title request is queued all the same
    [request] = title_requests()
    assert request.status == Status.QUEUED


@pytest.mark.parametrize(
    ("written", "title"),
    [
        ('"Otters and the Cold"', "Otters and the Cold"),
        ("Title: **Warm otters**.\nMore text", "Warm otters"),
        ("\n\n  Sea   lions  \n", "Sea lions"),
        ("   ", ""),
    ],
)
def test_clean_title(written: str, title: str) -> None:
    assert titles.clean_title(written) == title
