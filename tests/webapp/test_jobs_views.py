"""The job pages through Django's test client: upload, choose, start, watch, act, download;
bad files get clear errors; nobody sees another user's job. And the progress WebSocket."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from tests.conftest import DIRECT_QUEUE
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Generation, Priority
from webapp.jobs.forms import TARGET_LANGUAGES
from webapp.jobs.models import ItemStatus, Job, JobStatus, Upload
from webapp.jobs.routing import websocket_urlpatterns

CSV_DOCS = b"id,title,body\nA-7,First,The river rose.\nB-3,Second,\nC-1,Third,The dam held.\n"


@pytest.fixture
def summarizer(db: Any, tiny_llama_dir: Path) -> ModelEntry:
    return ModelEntry.objects.create(
        name="tiny-summarizer",
        task="summarize",
        source=str(tiny_llama_dir),
        queue=DIRECT_QUEUE,
        is_default=True,
    )


@pytest.fixture
def translator(db: Any, tiny_llama_dir: Path) -> ModelEntry:
    return ModelEntry.objects.create(
        name="tiny-translator", task="translate", source=str(tiny_llama_dir), queue=DIRECT_QUEUE
    )


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def upload(client: Client, name: str, data: bytes, task: str = "summarize") -> Any:
    return client.post(
        "/jobs/", {"task": task, "file": SimpleUploadedFile(name, data)}, follow=False
    )


def start_csv_job(client: Client, model: ModelEntry) -> Job:
    response = upload(client, "docs.csv", CSV_DOCS)
    assert response.status_code == 302, response.content.decode()[:2000]
    configure_url = response["Location"]
    page = client.get(configure_url).content.decode()
    assert "First" not in page  # the title column is not the text
    response = client.post(
        configure_url,
        {"column": "body", "id_column": "id", "model": model.pk, "length": "medium"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    return Job.objects.get()


def test_upload_choose_a_column_and_start_a_job(alice: Any, summarizer: ModelEntry) -> None:
    client = logged_in(alice)
    response = upload(client, "docs.csv", CSV_DOCS)
    page = client.get(response["Location"]).content.decode()
    # No 'text' column: the one with the longest values is suggested and previewed.
    assert '<option value="body" selected>body</option>' in page
    assert '<option value="id" selected>id</option>' in page  # and 'id' as the id column
    assert "<strong>2</strong> documents" in page and "1 empty skipped" in page
    assert "The river rose." in page
    job = start_csv_job(client, summarizer)
    assert Upload.objects.count() == 1  # the first, abandoned; the one used went with its job
    assert (job.total, job.skipped_empty, job.options) == (2, 1, {"length": "medium"})
    items = list(job.items.order_by("index").values_list("external_id", "text", "status"))
    assert items == [
        ("A-7", "The river rose.", ItemStatus.RUNNING),
        ("C-1", "The dam held.", ItemStatus.RUNNING),
    ]
    generation = Generation.objects.get(pk=job.items.get(index=0).generation_id)
    assert generation.priority == Priority.BACKGROUND and generation.task == "summarize"
    assert generation.input == {"text": "The river rose.", "length": "medium"}

    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "The dam held." not in page  # inputs are not echoed, results are
    assert "A-7" in page and "C-1" in page and 'id="bar"' in page
    assert f"/ws/jobs/{job.pk}/" not in page  # the script builds it
    listing = client.get("/jobs/").content.decode()
    assert f'href="/jobs/{job.pk}/"' in listing and "docs.csv" in listing


def test_a_translation_job_sends_the_target_language(alice: Any, translator: ModelEntry) -> None:
    client = logged_in(alice)
    response = upload(client, "docs.txt", b"Hello world\nGood night\n", task="translate")
    configure_url = response["Location"]
    page = client.get(configure_url).content.decode()
    assert "Translate into" in page and "One document per line" in page
    response = client.post(
        configure_url, {"text_mode": "lines", "model": translator.pk, "target": "de", "source": ""}
    )
    assert response.status_code == 302
    job = Job.objects.get()
    first = Generation.objects.get(pk=job.items.get(index=0).generation_id)
    assert first.task == "translate" and first.input == {"text": "Hello world", "target": "de"}
    assert "Translate into German" in client.get(f"/jobs/{job.pk}/").content.decode()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("docs.csv", b"%PDF-1.7 binary", "named .csv but is a PDF document"),
        ("docs.docx", b"anything", "is not a file type jobs accept"),
        ("docs.jsonl", b"plain text\n", "line 1 is not JSON"),
        ("docs.txt", b"", "The submitted file is empty"),
    ],
)
def test_a_bad_file_is_refused_with_a_clear_message(
    alice: Any, summarizer: ModelEntry, name: str, data: bytes, message: str
) -> None:
    response = upload(logged_in(alice), name, data)
    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Upload.objects.exists() and not Job.objects.exists()


def test_a_field_that_does_not_exist_is_named_in_the_preview(
    alice: Any, summarizer: ModelEntry
) -> None:
    client = logged_in(alice)
    data = b'{"body": "a", "key": 1}\n{"body": "b", "key": 2}\n'
    configure_url = upload(client, "docs.jsonl", data)["Location"]
    asked = {"column": "text", "model": summarizer.pk, "length": "short", "preview": "1"}
    page = client.post(configure_url, asked).content.decode().replace("&#x27;", "'")
    assert "no field 'text' on any line; its fields are 'body', 'key'" in page
    assert 'id="start" disabled' in page and not Job.objects.exists()
    chosen = {"column": "body", "id_column": "key", "model": summarizer.pk, "length": "short"}
    response = client.post(configure_url, chosen)
    assert response.status_code == 302
    assert list(Job.objects.get().items.values_list("external_id", flat=True)) == ["1", "2"]


def test_upload_size_limit_is_enforced(alice: Any, summarizer: ModelEntry, settings: Any) -> None:
    settings.ATELIER_JOB_MAX_UPLOAD_BYTES = 100
    response = upload(logged_in(alice), "docs.txt", b"line\n" * 40)
    assert "the largest file accepted is 100 bytes" in response.content.decode()


def test_a_pending_user_cannot_upload(make_user: Any, summarizer: ModelEntry) -> None:
    response = upload(logged_in(make_user("paula", role="pending")), "docs.txt", b"hi\n")
    assert "waiting for an administrator" in response.content.decode()
    assert not Upload.objects.exists()


def test_no_usable_model_is_said_plainly(alice: Any, db: Any) -> None:
    client = logged_in(alice)
    page = client.get(upload(client, "docs.txt", b"hi\n")["Location"]).content.decode()
    assert "No summarize model is available to you" in page


def test_pause_resume_cancel_and_retry_buttons(alice: Any, summarizer: ModelEntry) -> None:
    client = logged_in(alice)
    job = start_csv_job(client, summarizer)
    assert client.post(f"/jobs/{job.pk}/pause/").status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    response = client.post(f"/jobs/{job.pk}/pause/", follow=True)
    assert "Only a queued or running job can be paused." in response.content.decode()
    client.post(f"/jobs/{job.pk}/resume/")
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    client.post(f"/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    response = client.post(f"/jobs/{job.pk}/retry/", follow=True)
    assert "A cancelled job cannot be retried." in response.content.decode()
    assert client.get(f"/jobs/{job.pk}/pause/").status_code == 405


def test_results_keep_each_inputs_id_and_order(alice: Any, summarizer: ModelEntry) -> None:
    client = logged_in(alice)
    job = start_csv_job(client, summarizer)
    now = timezone.now()
    job.items.filter(index=0).update(status=ItemStatus.DONE, output='Risen, "a lot"\nyes')
    job.items.filter(index=1).update(status=ItemStatus.FAILED, error="broke", finished_at=now)

    response = client.get(f"/jobs/{job.pk}/results.csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f'filename="docs-job{job.pk}-results.csv"' in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode("utf-8")  # type: ignore[attr-defined]
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert [(r["index"], r["id"], r["status"], r["output"], r["error"]) for r in rows] == [
        ("0", "A-7", "done", 'Risen, "a lot"\nyes', ""),
        ("1", "C-1", "failed", "", "broke"),
    ]
    response = client.get(f"/jobs/{job.pk}/results.jsonl")
    lines = b"".join(response.streaming_content).decode().splitlines()  # type: ignore[attr-defined]
    assert [json.loads(line)["id"] for line in lines] == ["A-7", "C-1"]
    assert json.loads(lines[0])["output"] == 'Risen, "a lot"\nyes'


def test_nobody_sees_another_users_job(alice: Any, bob: Any, summarizer: ModelEntry) -> None:
    job = start_csv_job(logged_in(alice), summarizer)
    stored = Upload.objects.create(user=alice, name="x.txt", task="summarize", data=b"hi\n")
    other = logged_in(bob)
    for url in [
        f"/jobs/{job.pk}/",
        f"/jobs/{job.pk}/results.csv",
        f"/jobs/{job.pk}/results.jsonl",
        f"/jobs/new/{stored.pk}/",
    ]:
        assert other.get(url).status_code == 404, url
    for name in ["pause", "resume", "cancel", "retry"]:
        assert other.post(f"/jobs/{job.pk}/{name}/").status_code == 404
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    assert "docs.csv" not in other.get("/jobs/").content.decode()
    anonymous = Client().get(f"/jobs/{job.pk}/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_target_languages_are_ones_the_library_knows() -> None:
    from generation.languages import LANGUAGES

    assert set(TARGET_LANGUAGES) <= set(LANGUAGES)
    assert all(TARGET_LANGUAGES[code] == LANGUAGES[code][0] for code in TARGET_LANGUAGES)


# --- the progress WebSocket ---------------------------------------------------------------


def socket(user: Any, job_id: int) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/jobs/{job_id}/")
    communicator.scope["user"] = user
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_the_owner_gets_progress_and_item_changes_live(
    alice: Any, summarizer: ModelEntry
) -> None:
    from asgiref.sync import sync_to_async

    job = await sync_to_async(lambda: start_csv_job(logged_in(alice), summarizer))()
    communicator = socket(alice, job.pk)
    assert (await communicator.connect())[0]
    first = await communicator.receive_json_from(timeout=10)
    assert first["type"] == "progress"
    assert (first["total"], first["done"], first["running"], first["percent"]) == (2, 0, 2, 0)

    def finish_first() -> None:
        job.items.filter(index=0).update(
            status=ItemStatus.DONE,
            output="A summary",
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
        from webapp.jobs import engine

        engine.refresh_counts(job.pk)

    await sync_to_async(finish_first)()
    seen: dict[str, Any] = {"progress": first}
    changed: dict[int, dict[str, Any]] = {}
    while 0 not in changed or seen["progress"]["done"] != 1:
        event = await communicator.receive_json_from(timeout=10)
        seen[event["type"]] = event
        # Items changed shortly before the last look may come again: rows are replaced.
        changed.update({row["index"]: row for row in event.get("items", [])})
    assert changed[0] == {"index": 0, "status": "done", "error": "", "output": "A summary"}
    assert seen["progress"]["percent"] == 50
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_another_user_or_nobody_gets_no_progress(
    alice: Any, bob: Any, summarizer: ModelEntry
) -> None:
    from asgiref.sync import sync_to_async
    from django.contrib.auth.models import AnonymousUser

    job = await sync_to_async(lambda: start_csv_job(logged_in(alice), summarizer))()
    connected, code = await socket(bob, job.pk).connect()
    assert (connected, code) == (False, 4404)
    connected, code = await socket(AnonymousUser(), job.pk).connect()
    assert (connected, code) == (False, 4401)
    connected, code = await socket(alice, job.pk + 1000).connect()
    assert (connected, code) == (False, 4404)
