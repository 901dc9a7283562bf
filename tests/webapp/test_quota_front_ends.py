"""A used-up quota refused the same way at every front end: the chat socket's error frame,
the studio page's message, the API's 429 with OpenAI's codes and rate-limit headers, and a
batch job that pauses with the reason and resumes by itself when the quota allows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings
from django.utils import timezone

from tests.conftest import DIRECT_QUEUE
from webapp.accounts.models import UserLimits
from webapp.api import keys
from webapp.catalog.models import ModelEntry
from webapp.chat.consumers import ChatConsumer
from webapp.inference import liveness
from webapp.inference import services as inference
from webapp.inference.models import Generation, Source, Status
from webapp.jobs import engine, inputs, services
from webapp.jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}]}


def spend(user: Any, model: ModelEntry, tokens: int) -> None:
    """A finished generation of `tokens` tokens in the user's ledger, today but before the
    last minute (so it takes none of the minute's requests)."""
    generation = Generation.objects.create(
        user=user,
        model=model,
        model_name=model.name,
        task="chat",
        input={},
        status=Status.DONE,
        prompt_tokens=tokens // 2,
        completion_tokens=tokens - tokens // 2,
    )
    now = timezone.localtime()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    earlier = max(today + timedelta(seconds=1), now - timedelta(minutes=2))
    Generation.objects.filter(pk=generation.pk).update(queued_at=earlier)


@pytest.fixture
def worker_alive() -> Iterator[None]:
    name = f"quota-test-{DIRECT_QUEUE}"
    liveness.beat(name, [DIRECT_QUEUE])
    yield
    liveness.forget(name)


def post_api(secret: str, path: str, body: dict[str, Any]) -> Any:
    return Client().post(
        path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_the_chat_socket_says_which_quota_and_when_it_resets(
    alice: Any, chat_model: ModelEntry
) -> None:
    await UserLimits.objects.acreate(user=alice, tokens_per_day=100)
    await sync_to_async(spend)(alice, chat_model, 100)
    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = alice
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "message", "content": "hi"})
    error = await communicator.receive_json_from(timeout=10)
    assert error["type"] == "error" and error["code"] == "insufficient_quota"
    assert "your 100 tokens for today" in error["message"] and "resets at 00:00" in error["message"]
    assert await Generation.objects.acount() == 1  # only the spent one
    await communicator.disconnect()


def test_a_studio_page_shows_the_refusal_and_keeps_the_text(
    alice: Any, chat_model: ModelEntry, tiny_llama_dir: Any
) -> None:
    ModelEntry.objects.create(
        name="tiny-sum", task="summarize", source=str(tiny_llama_dir), queue=DIRECT_QUEUE
    )
    UserLimits.objects.create(user=alice, requests_per_minute=1)
    client = Client()
    client.force_login(alice)
    text = "The quarterly report says sales grew. " * 5
    assert client.post("/studio/summarize/", {"text": text, "length": "short"}).status_code == 302
    response = client.post("/studio/summarize/", {"text": text, "length": "short"})
    page = response.content.decode()
    assert response.status_code == 400
    assert "your limit of 1 request a minute" in page and text.strip() in page


@pytest.mark.usefixtures("worker_alive")
def test_the_api_answers_429_with_openais_codes_and_rate_limit_headers(
    alice: Any, chat_model: ModelEntry
) -> None:
    secret = keys.create_key(alice, "tool").secret
    UserLimits.objects.create(user=alice, requests_per_minute=1, tokens_per_day=1000)
    spend(alice, chat_model, 400)
    # Every answer carries the standing of the user's limits.
    listed = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert listed.status_code == 200
    assert listed["x-ratelimit-limit-requests"] == "1"
    assert listed["x-ratelimit-remaining-requests"] == "1"
    assert listed["x-ratelimit-limit-tokens"] == "1000"
    assert listed["x-ratelimit-remaining-tokens"] == "600"
    assert listed["x-ratelimit-reset-tokens"].endswith("s")
    # The minute's one request, then the rate limit.
    Generation.objects.create(
        user=alice, model=chat_model, model_name=chat_model.name, task="chat", input={}
    )
    refused = post_api(secret, "/v1/chat/completions", CHAT)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")
    assert 55 <= int(refused["Retry-After"]) <= 60 and refused["x-should-retry"] == "true"
    assert refused["x-ratelimit-remaining-requests"] == "0"
    # The day's tokens used up: insufficient_quota, which no SDK should retry in seconds.
    Generation.objects.filter(user=alice, status=Status.QUEUED).delete()
    spend(alice, chat_model, 600)
    refused = post_api(secret, "/v1/chat/completions", CHAT)
    error = refused.json()["error"]
    assert refused.status_code == 429
    assert (error["code"], error["type"]) == ("insufficient_quota", "insufficient_quota")
    assert refused["x-should-retry"] == "false" and int(refused["Retry-After"]) > 0
    assert refused["x-ratelimit-remaining-tokens"] == "0"
    assert "tokens for today" in error["message"]


@override_settings(ATELIER_JOB_MAX_IN_FLIGHT=1)
def test_a_batch_job_pauses_with_the_reason_and_resumes_when_the_quota_allows(
    alice: Any, tiny_llama_dir: Any
) -> None:
    model = ModelEntry.objects.create(
        name="tiny-sum", task="summarize", source=str(tiny_llama_dir), queue=DIRECT_QUEUE
    )
    UserLimits.objects.create(user=alice, tokens_per_day=500)
    parsed = inputs.parse(
        "docs.txt", b"First document.\nSecond document.", limits=services.limits()
    )
    job = services.create_job(
        user=alice,
        model=model,
        task="summarize",
        options=services.options_for("summarize", length="short"),
        source_name="docs.txt",
        parsed=parsed,
    )
    engine.dispatch(job.pk)  # one item in flight at a time here
    first = Generation.objects.get(source=Source.BATCH)
    spend(alice, model, 500)  # meanwhile the day's tokens run out
    inference.finish(first.pk, status=Status.DONE, output="A summary.")
    engine.on_generation_finished(first.pk)  # heard of: the next item is refused: paused
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED and "tokens for today" in job.paused_reason
    assert job.resume_at is not None and job.resume_at > timezone.now()
    assert engine.progress(job.pk).paused_reason == job.paused_reason
    assert Generation.objects.filter(source=Source.BATCH).count() == 1
    assert engine.resume_due() == 0  # not yet
    # The day passes: yesterday's tokens no longer count, and the job goes on by itself.
    Generation.objects.filter(user=alice).update(queued_at=timezone.now() - timedelta(days=1))
    assert engine.resume_due(now=job.resume_at) == 1
    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.RUNNING and job.paused_reason == "" and job.resume_at is None
    assert Generation.objects.filter(source=Source.BATCH, user=alice).count() == 2


@override_settings(ATELIER_REQUESTS_PER_MINUTE=1)
def test_a_paused_jobs_own_resume_is_refused_while_the_quota_is_used_up(
    alice: Any, tiny_llama_dir: Any
) -> None:
    model = ModelEntry.objects.create(
        name="tiny-sum", task="summarize", source=str(tiny_llama_dir), queue=DIRECT_QUEUE
    )
    parsed = inputs.parse("docs.txt", b"One.\nTwo.", limits=services.limits())
    job = services.create_job(
        user=alice,
        model=model,
        task="summarize",
        options=services.options_for("summarize", length="short"),
        source_name="docs.txt",
        parsed=parsed,
    )
    engine.dispatch(job.pk)  # the first item takes the minute's one request
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED and "1 request a minute" in job.paused_reason
    with pytest.raises(engine.JobStateError, match="1 request a minute"):
        engine.resume(job)
    assert Job.objects.get(pk=job.pk).status == JobStatus.PAUSED
