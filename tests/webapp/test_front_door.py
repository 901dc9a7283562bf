"""The front door (`inference.front_door.submit`): every way a request is refused, with its
code, and what a refused or accepted request leaves behind."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from webapp.catalog.models import ModelEntry
from webapp.inference import dispatch, front_door
from webapp.inference import services as inference
from webapp.inference.models import Generation, Priority, Status
from webapp.inference.refusals import (
    InputBlocked,
    LimitReached,
    ModelUnavailable,
    NotAllowed,
    Refused,
    Suspended,
)
from webapp.moderation import services as moderation
from webapp.moderation.models import ModerationEvent, Policy, Rule

pytestmark = pytest.mark.django_db

THREAT = "I will kill you"  # blocked (violence) by the shipped rules


def submit(user: Any, text: str = "Hello there", **kwargs: Any) -> Generation:
    request: dict[str, Any] = {
        "task": "chat",
        "model": None,
        "input": {"system": "", "messages": [{"role": "user", "content": text}]},
        "screened": [front_door.Screened(text, "chat", context="the reply before")],
        **kwargs,
    }
    return front_door.submit(user, **request)


@pytest.mark.django_db(transaction=True)  # the wake-up is sent on commit
def test_an_accepted_request_is_queued_on_its_models_queue_and_wakes_a_worker(
    alice: Any, chat_model: ModelEntry
) -> None:
    waiting = dispatch.waiting_messages(DIRECT_QUEUE)
    generation = submit(alice, params={"temperature": 0})
    assert generation.status == Status.QUEUED and generation.queue == DIRECT_QUEUE
    assert generation.model == chat_model and generation.model_name == chat_model.name
    # Complete: what the request set, then the model's defaults (none here), then Atelier's.
    full = SamplingParams(temperature=0, max_new_tokens=settings.ATELIER_DEFAULT_MAX_TOKENS)
    assert generation.params == full.to_dict()
    assert generation.priority == Priority.INTERACTIVE
    assert dispatch.waiting_messages(DIRECT_QUEUE) == waiting + 1  # woken on commit


@pytest.mark.parametrize(
    ("case", "refusal", "code"),
    [
        ("pending", NotAllowed, "not_allowed"),
        ("disabled", NotAllowed, "not_allowed"),
        ("suspended", Suspended, "suspended"),
        ("no model", ModelUnavailable, "model_unavailable"),
        ("another group's model", ModelUnavailable, "model_unavailable"),
        ("blocked", InputBlocked, "input_blocked"),
    ],
)
def test_each_refusal_has_its_code_a_message_and_stores_no_generation(
    case: str, refusal: type[Refused], code: str, make_user: Any, admin_group_model: Any
) -> None:
    user = make_user("carol", role="pending" if case == "pending" else "user")
    model: Any = None
    text = "Hello there"
    if case == "disabled":
        user.is_active = False
        user.save()
    elif case == "suspended":
        moderation.suspend(user, "Too many strikes.")
    elif case == "no model":
        model = 999_999
    elif case == "another group's model":
        model = admin_group_model
    elif case == "blocked":
        text = THREAT
    with pytest.raises(refusal) as caught:
        submit(user, text, model=model)
    assert caught.value.code == code and caught.value.message
    assert not Generation.objects.exists()


@pytest.fixture
def admin_group_model(chat_model: ModelEntry) -> ModelEntry:
    """A second chat model only the 'staff' group may use (the default stays open)."""
    staff_only = ModelEntry.objects.create(
        name="staff-only", task="chat", source=chat_model.source, queue=DIRECT_QUEUE
    )
    staff_only.allowed_groups.add(Group.objects.create(name="staff"))
    return staff_only


def test_a_blocked_input_keeps_its_verdict_for_review_with_the_context(
    alice: Any, chat_model: ModelEntry
) -> None:
    with pytest.raises(InputBlocked) as caught:
        submit(alice, THREAT)
    blocked = caught.value
    assert blocked.category == "violence" and "Blocked by the content policy" in blocked.message
    [event] = blocked.checked.events
    stored = ModerationEvent.objects.get()
    assert stored.pk == event.pk and stored.generation_id is None
    assert stored.text == THREAT and stored.context == "the reply before"


def test_the_most_severe_of_the_screened_texts_decides_and_every_check_is_recorded(
    alice: Any, chat_model: ModelEntry
) -> None:
    Policy.objects.create(name="flag threats", flag_categories="violence")
    generation = front_door.submit(
        alice,
        task="chat",
        model=None,
        input={"system": THREAT, "messages": [{"role": "user", "content": "hi"}]},
        screened=[front_door.Screened("hi", "chat"), front_door.Screened(THREAT, "chat:system")],
    )
    [event] = ModerationEvent.objects.all()  # the flagged one; "hi" was only audited
    assert event.action == "flag" and event.task == "chat:system"
    assert event.generation_id == generation.pk  # linked to what it let through


def test_the_limit_counts_interactive_requests_only(
    alice: Any, chat_model: ModelEntry, settings: Any
) -> None:
    settings.ATELIER_MAX_CONCURRENT_GENERATIONS = 1
    first = submit(alice)
    with pytest.raises(LimitReached, match="1 reply in progress"):
        submit(alice)
    # Background work (batch items, titles) waits in the queue instead.
    assert submit(alice, priority=Priority.BACKGROUND).priority == Priority.BACKGROUND
    inference.stop(first.pk)
    submit(alice)


def test_a_task_run_by_another_tasks_model_names_that_catalog_task(
    alice: Any, chat_model: ModelEntry
) -> None:
    with pytest.raises(ModelUnavailable):
        submit(alice, task="chat_title", model=chat_model)
    titled = submit(alice, task="chat_title", model=chat_model, model_task="chat")
    assert titled.task == "chat_title" and titled.model == chat_model


def test_the_deciding_verdicts_event_comes_first(alice: Any, chat_model: ModelEntry) -> None:
    Policy.objects.create(name="flag spam", flag_categories="spam")
    Rule.objects.create(rule_id="glitter", category="spam", kind="regex", patterns=r"glitter\w*")
    spam = "bring the glitterbomb tomorrow"  # flagged: it alone would proceed
    screened = [front_door.Screened(spam, "chat"), front_door.Screened(THREAT, "chat:system")]
    with pytest.raises(InputBlocked) as caught:
        submit(alice, spam, screened=screened)
    flagged, blocked = ModerationEvent.objects.order_by("pk")
    assert (flagged.action, blocked.action) == ("flag", "block")
    assert caught.value.checked.events == (blocked, flagged)  # checked.event decided
