"""The OpenAI-compatible API driven by the official `openai` package against a real Daphne
and a real Celery worker (one of each for the module): chat streamed and not, with usage,
n, stop and seed; completions; embeddings; moderations under the user's policy and its
moderation model; every error status as the SDK's exception; a client that leaves stops its
generation; and a whole batch from file upload to output file, and a cancelled one."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import openai
import pytest

from tests.conftest import RUN_ID
from tests.processes import celery_worker, web_server
from webapp.api import keys
from webapp.api.models import ApiKey
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Generation, Source, Status
from webapp.jobs.models import Job
from webapp.moderation.models import Policy
from webapp.studio.models import Result

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUEUE = f"api-live-{RUN_ID}"
MAX_BODY = 100_000  # the web process's ATELIER_API_MAX_BODY_BYTES here


@pytest.fixture(scope="module")
def stack(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A worker serving QUEUE and a Daphne web server; yields the API's base URL."""
    logs = tmp_path_factory.mktemp("api-live")
    env = {
        **test_db_env,
        "ATELIER_API_MAX_BODY_BYTES": str(MAX_BODY),
        "ATELIER_API_KEEPALIVE_SECONDS": "1",
        "ATELIER_JOB_MAX_IN_FLIGHT": "2",
    }
    with celery_worker(env, [QUEUE], logs / "worker.log"), web_server(env, logs / "web.log") as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny.models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("api-bert") / "bert")


@pytest.fixture
def models(db: Any, endless_llama_dir: Path, bert_dir: Path, tiny_toxicity_dir: Path) -> Any:
    """A chat model that always runs to its length limit, an embeddings model, and a
    moderation model that the default policy names, all served by the worker."""
    chat = ModelEntry.objects.create(
        name="tiny-chat", task="chat", source=str(endless_llama_dir), queue=QUEUE, is_default=True
    )
    ModelEntry.objects.create(name="tiny-embed", task="embed", source=str(bert_dir), queue=QUEUE)
    toxic = ModelEntry.objects.create(
        name="tiny-toxic", task="moderation", source=str(tiny_toxicity_dir), queue=QUEUE
    )
    policy = Policy.objects.create(name="house", use_classifier=True)
    policy.classifier_models.set([toxic])
    return chat


def client_for(user: Any, stack: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack, api_key=keys.create_key(user, "tests").secret, max_retries=0, timeout=120
    )


def hello(**fields: Any) -> dict[str, Any]:
    return {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": "Hello there"}],
        **fields,
    }


def test_chat_and_completions_with_usage_n_stop_and_seed(
    alice: Any, models: Any, stack: str
) -> None:
    client = client_for(alice, stack)
    first = client.chat.completions.create(**hello(n=2, seed=11, max_tokens=8, temperature=1.0))
    assert [c.index for c in first.choices] == [0, 1]
    assert all(c.finish_reason == "length" and c.message.content for c in first.choices)
    assert first.usage is not None and first.usage.completion_tokens == 16
    assert first.usage.total_tokens == first.usage.prompt_tokens + 16
    again = client.chat.completions.create(**hello(n=2, seed=11, max_tokens=8, temperature=1.0))
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]
    # A stop sequence from the middle of the greedy reply ends the reply before it.
    greedy = client.chat.completions.create(**hello(temperature=0, max_tokens=12))
    text = greedy.choices[0].message.content or ""
    cut = text[len(text) // 2 :][:3]
    stopped = client.chat.completions.create(**hello(temperature=0, max_tokens=12, stop=[cut]))
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(cut)]
    # Streamed: the role, the pieces, the finish, and the usage chunk last.
    chunks = list(
        client.chat.completions.create(
            **hello(
                temperature=0, max_tokens=12, stream=True, stream_options={"include_usage": True}
            )
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    completion = client.completions.create(model="tiny-chat", prompt="Once upon", max_tokens=5)
    assert completion.choices[0].finish_reason == "length" and completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    generations = Generation.objects.filter(user=alice, task="chat")
    assert generations.count() == 8 and not generations.exclude(status=Status.DONE).exists()
    # The usage ledger: every one through the API, with the key that asked.
    key = ApiKey.objects.get(user=alice)
    assert set(generations.values_list("source", "api_key")) == {(Source.API, key.pk)}


def test_embeddings_and_moderations_under_the_users_policy(
    alice: Any, models: Any, stack: str
) -> None:
    client = client_for(alice, stack)
    embedded = client.embeddings.create(model="tiny-embed", input=["a cat", "a dog", "a cat"])
    vectors = [item.embedding for item in embedded.data]
    assert len(vectors) == 3 and vectors[0] == pytest.approx(vectors[2])
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-3)
    # The tokens the model read, reported and in the ledger.
    ledger = Generation.objects.get(user=alice, task="embed")
    assert embedded.usage.prompt_tokens == ledger.prompt_tokens > 0
    found = client.moderations.create(
        input=["I will kill you", "you grumbleflax", "what a fine day"]
    )
    threat, insult, fine = found.results
    assert threat.flagged and threat.categories.violence  # a shipped rule
    assert insult.flagged and insult.categories.harassment  # the policy's moderation model
    assert insult.category_scores.harassment > 0.5
    assert not fine.flagged
    moderated = Generation.objects.get(user=alice, task="moderation")
    assert moderated.model_name == "tiny-toxic" and moderated.status == Status.DONE


def test_every_error_status_is_the_sdks_exception(
    alice: Any, make_user: Any, models: Any, stack: str
) -> None:
    client = client_for(alice, stack)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack, api_key="atl-nope", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(**hello(temperature=5))
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]
    private = ModelEntry.objects.create(name="private", task="chat", source="x", queue=QUEUE)
    private.allowed_groups.add(
        __import__("django.contrib.auth.models").contrib.auth.models.Group.objects.create(
            name="staff"
        )
    )
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(**hello(model="private"))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**hello(model="no-such-model"))
    with pytest.raises(openai.APIStatusError) as large:
        client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "x" * (MAX_BODY + 1)}]
        )
    assert large.value.status_code == 413
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(**hello(n=3, max_tokens=2))
    assert int(limited.value.response.headers["Retry-After"]) > 0
    ModelEntry.objects.create(name="unserved", task="chat", source="x", queue="nobody-serves")
    with pytest.raises(openai.InternalServerError) as unserved:
        client.chat.completions.create(**hello(model="unserved"))
    assert unserved.value.status_code == 503
    # Revoked and expired keys.
    revoked = client_for(alice, stack)
    keys.revoke(ApiKey.objects.get(hashed=keys.hash_key(revoked.api_key)), alice)
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        revoked.models.list()
    expired = client_for(alice, stack)
    ApiKey.objects.filter(hashed=keys.hash_key(expired.api_key)).update(
        expires_at="2000-01-01T00:00:00Z"
    )
    with pytest.raises(openai.AuthenticationError, match="expired"):
        expired.models.list()
    with pytest.raises(openai.PermissionDeniedError, match="approval"):
        client_for(make_user("pat", role="pending"), stack).models.list()


def test_a_client_that_leaves_stops_its_generation(alice: Any, models: Any, stack: str) -> None:
    client = client_for(alice, stack)
    stream = client.chat.completions.create(**hello(max_tokens=4000, stream=True))
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    generation = Generation.objects.get(user=alice)
    deadline = time.monotonic() + 30
    while generation.status != Status.STOPPED and time.monotonic() < deadline:
        time.sleep(0.2)
        generation.refresh_from_db()
    assert generation.status == Status.STOPPED and generation.completion_tokens < 4000
    # Not streamed: the client hangs up while it waits for the whole answer.
    address = urlparse(stack)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(hello(max_tokens=4000)),
        headers={"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"},
    )
    waiting = Generation.objects.filter(user=alice).exclude(pk=generation.pk)
    deadline = time.monotonic() + 30
    while not waiting.filter(status=Status.RUNNING).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    connection.close()
    left = waiting.get()
    while left.status != Status.STOPPED and time.monotonic() < deadline + 30:
        time.sleep(0.2)
        left.refresh_from_db()
    assert left.status == Status.STOPPED and left.completion_tokens < 4000


def batch_file(client: openai.OpenAI, count: int, max_tokens: int) -> str:
    lines = [
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": hello(
                    max_tokens=max_tokens,
                    temperature=0,
                    messages=[{"role": "user", "content": f"Item {i}"}],
                ),
            }
        )
        for i in range(count)
    ]
    uploaded = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    return uploaded.id


def wait_batch(client: openai.OpenAI, batch_id: str, statuses: set[str]) -> Any:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} is {batch.status}")


def test_a_batch_runs_from_file_to_output_and_another_is_cancelled(
    alice: Any, bob: Any, models: Any, stack: str
) -> None:
    client = client_for(alice, stack)
    batch = client.batches.create(
        input_file_id=batch_file(client, 3, 4),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    assert batch.status == "in_progress" and batch.request_counts.total == 3
    done = wait_batch(client, batch.id, {"completed"})
    assert done.request_counts.completed == 3 and done.error_file_id is None
    assert done.output_file_id is not None
    lines = [
        json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()
    ]
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    bodies = [line["response"]["body"] for line in lines]
    assert all(b["choices"][0]["finish_reason"] == "length" for b in bodies)
    assert all(b["usage"]["completion_tokens"] == 4 for b in bodies)
    job = Job.objects.get(api_batch__public_id=batch.id)
    assert job.user == alice and job.task == "chat"  # on alice's Jobs page
    # Another user sees none of it.
    other = client_for(bob, stack)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id)
    assert other.batches.list().data == []
    # A long batch, cancelled while it runs.
    long = client.batches.create(
        input_file_id=batch_file(client, 6, 4000),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    cancelled = client.batches.cancel(long.id)
    assert cancelled.status in ("cancelling", "cancelled")
    ended = wait_batch(client, long.id, {"cancelled"})
    assert ended.error_file_id is not None
    errors = [
        json.loads(line) for line in client.files.content(ended.error_file_id).text.splitlines()
    ]
    assert {e["error"]["code"] for e in errors} <= {"batch_cancelled", "request_failed"}
    assert len(errors) + ended.request_counts.completed == 6
    assert [b.id for b in client.batches.list().data] == [long.id, batch.id]


def test_the_studio_endpoints_summarize_and_classify_with_the_pages_refusals(
    alice: Any,
    models: Any,
    stack: str,
    endless_llama_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import io

    from PIL import Image

    from tests.tiny.models import build_tiny_vit

    ModelEntry.objects.create(
        name="tiny-summarizer", task="summarize", source=str(endless_llama_dir), queue=QUEUE
    )
    vit = build_tiny_vit(tmp_path_factory.mktemp("api-vit") / "vit")
    ModelEntry.objects.create(name="tiny-vit", task="classify_image", source=str(vit), queue=QUEUE)
    client = client_for(alice, stack)
    text = "The river rose. The dam held. Everyone went home."
    summary: Any = client.post(
        "/atelier/summarize", body={"text": text, "length": "short"}, cast_to=object
    )
    assert summary["object"] == "atelier.summary" and summary["text"]
    assert summary["model"] == "tiny-summarizer"
    picture = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(picture, format="PNG")
    multipart: Any = {"headers": {"Content-Type": "multipart/form-data"}}
    labels: Any = client.post(
        "/atelier/classify",
        body={},
        files=[("image", ("red.png", picture.getvalue()))],
        cast_to=object,
        options=multipart,
    )
    assert labels["result"]["labels"] and labels["object"] == "atelier.classification"
    with pytest.raises(openai.BadRequestError, match=r"x\.png"):
        client.post(
            "/atelier/classify",
            body={},
            files=[("image", ("x.png", b"%PDF-1.7"))],
            cast_to=object,
            options=multipart,
        )
    with pytest.raises(openai.BadRequestError) as empty:
        client.post("/atelier/summarize", body={"text": " "}, cast_to=object)
    assert empty.value.body["param"] == "text"  # type: ignore[index]
    assert Result.objects.filter(user=alice).count() == 2  # in alice's Results
