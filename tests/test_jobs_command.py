"""`manage.py batch_summarize`: a local file through the batch engine, run in this process
(the worker's own runner) or by a real worker process, with the results file written."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tests.processes import celery_worker
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Generation, Priority
from webapp.jobs.models import Job, JobStatus
from workers import model_cache

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin(make_user: Any) -> Any:
    return make_user("root", role="admin")


@pytest.fixture
def summarizer(db: Any, tiny_llama_dir: Path) -> ModelEntry:
    yield ModelEntry.objects.create(
        name="tiny-summarizer",
        task="summarize",
        source=str(tiny_llama_dir),
        queue=f"cmd-{uuid.uuid4().hex[:8]}",
        is_default=True,
    )
    model_cache.clear()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("batch_summarize", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_summarizes_a_jsonl_file_in_process_and_writes_results_in_order(
    admin: Any, summarizer: ModelEntry, tmp_path: Path
) -> None:
    source = tmp_path / "docs.jsonl"
    rows = [{"key": f"doc-{i}", "text": f"Report {i}: the river rose."} for i in range(3)]
    source.write_text("".join(json.dumps(r) + "\n" for r in [*rows[:1], {"text": ""}, *rows[1:]]))
    out = tmp_path / "out.jsonl"
    printed = run(str(source), "--field", "text", "--id-field", "key", "--out", str(out))
    assert "3 documents, 1 empty skipped; model tiny-summarizer" in printed
    job = Job.objects.get()
    assert job.status == JobStatus.DONE and job.user == admin and job.done_count == 3
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["index"], r["id"], r["status"]) for r in results] == [
        (0, "doc-0", "done"),
        (1, "doc-1", "done"),
        (2, "doc-2", "done"),
    ]
    outputs = dict(job.items.values_list("external_id", "generation__output"))
    assert all(r["output"] == outputs[r["id"]] for r in results)
    assert set(Generation.objects.values_list("priority", flat=True)) == {Priority.BACKGROUND}


def test_csv_with_a_column_and_csv_results(
    admin: Any, summarizer: ModelEntry, tmp_path: Path
) -> None:
    source = tmp_path / "docs.csv"
    source.write_text("id,body\n7,First report.\n9,Second report.\n")
    out = tmp_path / "out.csv"
    run(
        str(source), "--column", "body", "--id-column", "id", "--length", "short", "--out", str(out)
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert [(r["id"], r["status"]) for r in rows] == [("7", "done"), ("9", "done")]


def test_with_use_workers_a_running_worker_does_the_work(
    admin: Any, summarizer: ModelEntry, test_db_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("First line.\nSecond line.\n")
    out = tmp_path / "out.jsonl"
    with celery_worker(test_db_env, [summarizer.queue], tmp_path / "worker.log"):
        run(str(source), "--use-workers", "--out", str(out))
    job = Job.objects.get()
    assert job.done_count == 2
    workers = set(Generation.objects.values_list("worker", flat=True))
    assert len(workers) == 1 and workers != {""}  # the worker process ran them
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["1", "2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl", "--out", "o.jsonl"], "is not a file"),
        (["{docs}", "--out", "o.txt"], "--out must end in .jsonl or .csv"),
        (["{docs}", "--out", "o.jsonl", "--field", "body"], "no field 'body' on any line"),
        (["{docs}", "--out", "o.jsonl", "--model", "nope"], "no model named 'nope'"),
        (["{docs}", "--out", "o.jsonl", "--user", "ghost"], "no user 'ghost'"),
        (["{docs}", "--out", "o.jsonl", "--field", "a", "--column", "b"], "not both"),
    ],
)
def test_bad_arguments_get_clear_errors(
    admin: Any, summarizer: ModelEntry, tmp_path: Path, args: list[str], message: str
) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "hello"}\n')
    args = [a.replace("{docs}", str(docs)) for a in args]
    args = [str(tmp_path / a) if a.startswith("o.") else a for a in args]
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not Job.objects.exists()
