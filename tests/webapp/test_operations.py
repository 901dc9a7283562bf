"""The Operations page: staff only; its figures are the database's rows and the workers'
heartbeats (real database and Redis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import DIRECT_QUEUE, RUN_ID
from webapp.inference import liveness
from webapp.inference.models import Generation, Status
from webapp.operations import overview, worker_status

pytestmark = pytest.mark.django_db


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ended(
    user: Any, model: Any, status: str, *, ago: float, ttft: float, took: float, **fields: Any
) -> Generation:
    """A generation queued `ago` seconds before now, its first token `ttft` seconds after,
    ended `took` seconds after it was queued."""
    generation = Generation.objects.create(
        user=user, model=model, model_name=model.name, task="chat", input={}, queue=model.queue,
        status=status, **fields,
    )  # fmt: skip
    queued = timezone.now() - timedelta(seconds=ago)
    Generation.objects.filter(pk=generation.pk).update(
        queued_at=queued,
        started_at=queued,
        first_token_at=queued + timedelta(seconds=ttft),
        finished_at=queued + timedelta(seconds=took),
    )
    return generation


def test_the_page_is_for_staff_only(client: Client, alice: Any, make_user: Any) -> None:
    assert client.get("/operations/").status_code == 302  # to the login page
    assert logged_in(alice).get("/operations/").status_code == 403
    assert logged_in(alice).get("/operations/state.json").status_code == 403
    admin = make_user("root", role="admin")
    page = logged_in(admin).get("/operations/")
    assert page.status_code == 200
    assert b'href="/operations/"' in page.content  # the top bar's link, for staff
    assert b'href="/operations/"' not in logged_in(alice).get("/chat/").content


def test_the_page_shows_workers_queues_and_failures(
    make_user: Any, alice: Any, chat_model: Any
) -> None:
    failed = ended(
        alice,
        chat_model,
        Status.FAILED,
        ago=30,
        ttft=0.5,
        took=1,
        error="model 'x' ran out of memory",
    )
    Generation.objects.create(
        user=alice, model=chat_model, model_name=chat_model.name, task="chat", input={},
        queue=chat_model.queue,
    )  # fmt: skip
    name = f"ops-test-{RUN_ID}"
    liveness.beat(name, [DIRECT_QUEUE], set(), slots=4)
    worker_status.publish(name, [])
    try:
        page = logged_in(make_user("root", role="admin")).get("/operations/")
        state = logged_in(make_user("staffer", role="admin")).get("/operations/state.json").json()
    finally:
        liveness.forget(name)
    html = page.content.decode()
    assert name in html and "ran out of memory" in html and "tiny-llama" in html
    worker = next(w for w in state["workers"] if w["name"] == name)
    assert worker["queues"] == [DIRECT_QUEUE] and worker["slots"] == 4
    assert worker["rss_bytes"] > 0 and worker["models"] == []
    queue = next(q for q in state["queues"] if q["model"] == "tiny-llama")
    assert (queue["waiting"], queue["running"], queue["workers"], queue["slots"]) == (1, 0, 1, 4)
    assert state["failures"][0]["id"] == failed.pk
    assert state["failures"][0]["error"] == "model 'x' ran out of memory"


def test_the_last_hour_figures_are_those_of_the_rows(alice: Any, chat_model: Any) -> None:
    # Five replies with known times, one stopped, one failed, one blocked; one too old.
    for ttft, took, tokens in (
        (0.1, 1.1, 11),
        (0.2, 2.2, 21),
        (0.3, 1.3, 6),
        (0.4, 3.4, 31),
        (1.0, 2.0, 1),
    ):
        ended(
            alice,
            chat_model,
            Status.DONE,
            ago=600,
            ttft=ttft,
            took=took,
            prompt_tokens=5,
            completion_tokens=tokens,
        )
    ended(alice, chat_model, Status.STOPPED, ago=60, ttft=0.5, took=0.9, completion_tokens=3)
    ended(alice, chat_model, Status.FAILED, ago=60, ttft=0.6, took=0.7, error="boom")
    blocked = ended(alice, chat_model, Status.BLOCKED, ago=60, ttft=0, took=0.1)
    Generation.objects.filter(pk=blocked.pk).update(first_token_at=None)
    ended(alice, chat_model, Status.DONE, ago=4000, ttft=9, took=10, completion_tokens=50)

    (figures,) = overview.last_hour()
    assert figures.model == "tiny-llama"
    assert (figures.requests, figures.done, figures.stopped, figures.failed, figures.blocked) == (
        8,
        5,
        1,
        1,
        1,
    )
    assert figures.unfinished == 0
    assert figures.prompt_tokens == 25 and figures.completion_tokens == 11 + 21 + 6 + 31 + 1 + 3
    # First tokens: 0.1 0.2 0.3 0.4 0.5 0.6 1.0 (the blocked one had none).
    assert figures.first_token_p50 == pytest.approx(0.4)
    assert figures.first_token_p95 == pytest.approx(0.6 + 0.4 * 0.7)
    # Done replies with more than one token: 10+20+5+30 tokens after the first in 1+2+1+3 s.
    assert figures.tokens_per_second == pytest.approx(65 / 7)
