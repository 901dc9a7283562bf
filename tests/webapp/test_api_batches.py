"""The Files and Batch APIs over the batch engine, with a real tiny model run in this
process (`workers.runner.run_next`, the worker's own code): a file's requests become a
job's items, run in the background a few at a time, exactly once; pause and resume; the
output and error files keyed by custom_id, written once; bad files refused naming the
line; and every object answers 404 to anyone but its owner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from tests.conftest import DIRECT_QUEUE
from webapp.api import batches, keys
from webapp.api.errors import ApiError
from webapp.api.models import ApiBatch, ApiFile
from webapp.catalog.models import ModelEntry
from webapp.inference import front_door
from webapp.inference.models import Generation, Priority, Source, Status
from webapp.jobs import engine
from webapp.jobs.models import ItemStatus, JobStatus
from workers.runner import run_next

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fan_out() -> Iterator[None]:
    with override_settings(ATELIER_JOB_MAX_IN_FLIGHT=2):
        yield


@pytest.fixture
def embedder(db: Any, tmp_path_factory: pytest.TempPathFactory) -> ModelEntry:
    from tests.tiny.models import build_tiny_bert

    folder = build_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")
    return ModelEntry.objects.create(
        name="tiny-embed", task="embed", source=str(folder), queue=DIRECT_QUEUE
    )


def chat_line(custom_id: str, content: str, **body: Any) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "tiny-llama",
                "max_tokens": 4,
                "temperature": 0,
                "messages": [{"role": "user", "content": content}],
                **body,
            },
        }
    )


def upload(user: Any, lines: list[str]) -> ApiFile:
    return batches.upload(
        user, filename="in.jsonl", purpose="batch", data="\n".join(lines).encode()
    )


def run_all() -> None:
    for _ in range(50):
        if run_next(DIRECT_QUEUE) is None:
            return


def test_a_chat_batch_runs_in_the_background_once_per_request(
    alice: Any, chat_model: ModelEntry
) -> None:
    source = upload(alice, [chat_line(f"q{i}", f"Question {i}") for i in range(3)])
    key = keys.create_key(alice, "tool").key
    with front_door.origin(Source.API, key.pk):  # as the API's views run
        batch = batches.create(
            alice, input_file_id=source.public_id, endpoint="/v1/chat/completions"
        )
    queued = Generation.objects.filter(user=alice)
    assert queued.count() == 2  # bounded in flight
    assert set(queued.values_list("priority", flat=True)) == {Priority.BACKGROUND}
    assert batches.batch_object(batches.refreshed(batch))["status"] == "in_progress"
    run_all()
    answer = batches.batch_object(batches.refreshed(batch))
    assert answer["status"] == "completed"
    assert answer["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert answer["error_file_id"] is None
    output = ApiFile.objects.get(public_id=answer["output_file_id"])
    lines = [json.loads(line) for line in bytes(output.data).decode().splitlines()]
    assert [line["custom_id"] for line in lines] == ["q0", "q1", "q2"]
    generations = list(Generation.objects.filter(user=alice).order_by("pk"))
    assert len(generations) == 3 and all(g.status == Status.DONE for g in generations)
    # In the ledger, each is the key's, through a batch: the first two dispatched in the
    # API's request, the third later by the engine.
    assert {(g.source, g.api_key_id) for g in generations} == {(Source.BATCH, key.pk)}
    for line, generation in zip(lines, generations, strict=True):
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and line["response"]["status_code"] == 200
        assert body["choices"][0]["message"]["content"] == generation.output
        assert body["usage"]["completion_tokens"] == generation.completion_tokens
    batches.write_results(batch.pk)  # once: a second call writes nothing
    assert ApiFile.objects.filter(user=alice, purpose="batch_output").count() == 1


def test_an_embeddings_batch_gives_vectors_by_custom_id(alice: Any, embedder: ModelEntry) -> None:
    line = {
        "custom_id": "e1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "tiny-embed", "input": ["a cat", "a dog"]},
    }
    source = upload(alice, [json.dumps(line)])
    batch = batches.create(alice, input_file_id=source.public_id, endpoint="/v1/embeddings")
    run_all()
    answer = batches.batch_object(batches.refreshed(batch))
    output = ApiFile.objects.get(public_id=answer["output_file_id"])
    (result,) = [json.loads(x) for x in bytes(output.data).decode().splitlines()]
    vectors = [item["embedding"] for item in result["response"]["body"]["data"]]
    assert result["custom_id"] == "e1" and len(vectors) == 2 and len(vectors[0]) > 1


def test_pause_resume_and_a_blocked_request_in_the_error_file(
    alice: Any, chat_model: ModelEntry
) -> None:
    lines = [
        chat_line("ok-1", "Hello"),
        chat_line("bad", "I will kill you"),
        chat_line("ok-2", "Hi again"),
    ]
    batch = batches.create(
        alice, input_file_id=upload(alice, lines).public_id, endpoint="/v1/chat/completions"
    )
    engine.pause(batch.job)
    assert not Generation.objects.filter(status=Status.QUEUED).exists()  # withdrawn
    assert batches.batch_object(batches.refreshed(batch))["atelier"]["job_status"] == "paused"
    engine.resume(batch.job)
    run_all()
    answer = batches.batch_object(batches.refreshed(batch))
    assert answer["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    errors = ApiFile.objects.get(public_id=answer["error_file_id"])
    (error,) = [json.loads(x) for x in bytes(errors.data).decode().splitlines()]
    assert error["custom_id"] == "bad" and "content policy" in error["error"]["message"]
    done = batch.job.items.filter(status=ItemStatus.DONE)
    assert sorted(done.values_list("external_id", flat=True)) == ["ok-1", "ok-2"]


def test_a_cancelled_batch_lists_what_did_not_run(alice: Any, chat_model: ModelEntry) -> None:
    lines = [chat_line(f"c{i}", f"Item {i}") for i in range(4)]
    batch = batches.create(
        alice, input_file_id=upload(alice, lines).public_id, endpoint="/v1/chat/completions"
    )
    answer = batches.batch_object(batches.cancel(batch))
    assert answer["status"] == "cancelled" and answer["cancelling_at"] is not None
    assert batch.job.__class__.objects.get(pk=batch.job_id).status == JobStatus.CANCELLED
    errors = ApiFile.objects.get(public_id=answer["error_file_id"])
    codes = [json.loads(x)["error"]["code"] for x in bytes(errors.data).decode().splitlines()]
    assert codes == ["batch_cancelled"] * 4
    with pytest.raises(ApiError) as again:
        batches.cancel(batches.batch_for(alice, batch.public_id))
    assert again.value.status == 409


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["not json"], "Line 1 is not valid JSON"),
        ([chat_line("a", "x"), "[" * 100_000 + "]" * 100_000], "Line 2 is not valid JSON"),
        (
            [json.dumps({"method": "POST", "url": "/v1/embeddings", "body": {}})],
            "Line 1 has no 'custom_id'",
        ),
        ([chat_line("a", "x"), chat_line("a", "y")], "Line 2 repeats the custom_id 'a'"),
        (
            [json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/images", "body": {}})],
            "'url' must be one of",
        ),
        ([], "holds no requests"),
    ],
)
def test_a_file_that_cannot_be_a_batch_is_refused_naming_the_line(
    alice: Any, lines: list[str], message: str
) -> None:
    with pytest.raises(ApiError, match=message) as refused:
        upload(alice, lines)
    assert refused.value.status == 400 and not ApiFile.objects.exists()


def test_requests_a_batch_cannot_run_are_refused_before_anything_is_queued(
    alice: Any, chat_model: ModelEntry, embedder: ModelEntry
) -> None:
    cases = [
        ([chat_line("a", "x", temperature=9)], "Line 1: 'temperature'"),
        ([chat_line("a", "x", n=2)], "one choice"),
        ([chat_line("a", "x"), chat_line("b", "y", model="tiny-embed")], "same model"),
        ([chat_line("a", "x", model="nope")], "does not exist"),
    ]
    for lines, message in cases:
        source = upload(alice, lines)
        with pytest.raises(ApiError, match=message):
            batches.create(alice, input_file_id=source.public_id, endpoint="/v1/chat/completions")
    with pytest.raises(ApiError, match="not the batch's endpoint"):
        batches.create(
            alice,
            input_file_id=upload(alice, [chat_line("a", "x")]).public_id,
            endpoint="/v1/embeddings",
        )
    assert not ApiBatch.objects.exists() and not Generation.objects.exists()


def test_files_and_batches_are_their_owners_only(
    alice: Any, bob: Any, chat_model: ModelEntry
) -> None:
    alice_key, bob_key = (keys.create_key(u, "k").secret for u in (alice, bob))
    client = Client()
    data = (chat_line("a", "Hello") + "\n").encode()
    uploaded = client.post(
        "/v1/files",
        {"purpose": "batch", "file": SimpleUploadedFile("in.jsonl", data)},
        HTTP_AUTHORIZATION=f"Bearer {alice_key}",
    )
    assert uploaded.status_code == 200, uploaded.content
    file_id = uploaded.json()["id"]
    created = client.post(
        "/v1/batches",
        json.dumps(
            {
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {alice_key}",
    )
    assert created.status_code == 200, created.content
    batch_id = created.json()["id"]
    as_bob = {"HTTP_AUTHORIZATION": f"Bearer {bob_key}"}
    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content", f"/v1/batches/{batch_id}"):
        assert client.get(path, **as_bob).status_code == 404
        assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {alice_key}").status_code == 200
    assert client.post(f"/v1/batches/{batch_id}/cancel", **as_bob).status_code == 404
    assert client.get("/v1/batches", **as_bob).json()["data"] == []
    assert client.get("/v1/files", **as_bob).json()["data"] == []
    bob_batch = client.post(
        "/v1/batches",
        json.dumps({"input_file_id": file_id, "endpoint": "/v1/chat/completions"}),
        content_type="application/json",
        **as_bob,
    )
    assert bob_batch.status_code == 404  # alice's file is not bob's to run
    content = client.get(f"/v1/files/{file_id}/content", HTTP_AUTHORIZATION=f"Bearer {alice_key}")
    assert content.content == data
    listed = client.get("/v1/batches?limit=1", HTTP_AUTHORIZATION=f"Bearer {alice_key}").json()
    assert [b["id"] for b in listed["data"]] == [batch_id] and listed["has_more"] is False
    wrong = client.post(
        "/v1/files",
        {"purpose": "fine-tune", "file": SimpleUploadedFile("x.jsonl", data)},
        HTTP_AUTHORIZATION=f"Bearer {alice_key}",
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "purpose"
    with override_settings(ATELIER_JOB_MAX_UPLOAD_BYTES=10):
        big = client.post(
            "/v1/files",
            {"purpose": "batch", "file": SimpleUploadedFile("x.jsonl", data)},
            HTTP_AUTHORIZATION=f"Bearer {alice_key}",
        )
    assert big.status_code == 413


def test_the_batch_shows_on_the_owners_jobs_page(alice: Any, chat_model: ModelEntry) -> None:
    batch = batches.create(
        alice,
        input_file_id=upload(alice, [chat_line("a", "Hi")]).public_id,
        endpoint="/v1/chat/completions",
    )
    client = Client()
    client.force_login(alice)
    page = client.get("/jobs/")
    assert page.status_code == 200 and f"/jobs/{batch.job_id}/" in page.content.decode()
    assert client.get(f"/jobs/{batch.job_id}/").status_code == 200
