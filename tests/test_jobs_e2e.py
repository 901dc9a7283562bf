"""Batch jobs end to end with real Celery worker processes and Redis: a job runs to the
end; a worker killed with SIGKILL mid-job is replaced and every item is processed exactly
once; pause, resume and cancel while a worker is busy with the job."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from tests.processes import celery_worker
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Generation, Status
from webapp.jobs import engine, inputs, services
from webapp.jobs.models import ItemStatus, Job, JobStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

IN_FLIGHT = 2
# Beat every second; a worker silent for 3 s is dead (as in tests/test_faults.py).
FAST_RECOVERY = {"ATELIER_WORKER_HEARTBEAT_SECONDS": "1", "ATELIER_WORKER_TIMEOUT_SECONDS": "3"}
DOCS = [
    f"Report {i}: the river rose by {i} centimetres on day {i}; the dam held." for i in range(6)
]
# Enough that a batching worker is still at it when the test pauses the job.
MANY_DOCS = DOCS * 5


@pytest.fixture(autouse=True)
def fan_out() -> Iterator[None]:
    with override_settings(ATELIER_JOB_MAX_IN_FLIGHT=IN_FLIGHT):
        yield


@pytest.fixture
def env(test_db_env: dict[str, str]) -> dict[str, str]:
    return {**test_db_env, **FAST_RECOVERY, "ATELIER_JOB_MAX_IN_FLIGHT": str(IN_FLIGHT)}


@pytest.fixture
def summarizer(db: Any, endless_llama_dir: Path) -> ModelEntry:
    """A summarize model on a queue of this test's own; without an end-of-sequence token
    every summary runs to the preset's length, so an item takes a while."""
    return ModelEntry.objects.create(
        name="tiny-summarizer",
        task="summarize",
        source=str(endless_llama_dir),
        queue=f"jobs-{uuid.uuid4().hex[:8]}",
    )


def start_job(user: Any, model: ModelEntry, docs: list[str]) -> Job:
    parsed = inputs.parse("docs.txt", "\n".join(docs).encode(), limits=services.limits())
    return services.create_job(
        user=user,
        model=model,
        task="summarize",
        options={"length": "short"},
        source_name="docs.txt",
        parsed=parsed,
    )


def wait_for(job: Job, condition: Callable[[Job], bool], timeout: float = 240) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if condition(job):
            return job
        time.sleep(0.2)
    statuses = list(job.items.values_list("index", "status", "error"))
    raise AssertionError(f"job #{job.pk} is {job.status} after {timeout}s: {statuses}")


def running_items(job: Job) -> int:
    return job.items.filter(status=ItemStatus.RUNNING).count()


def assert_each_item_once(job: Job) -> None:
    """Every item done with the output of its one generation; no generation of the job
    beyond one per item."""
    items = list(job.items.order_by("index").select_related("generation"))
    assert [i.status for i in items] == [ItemStatus.DONE] * len(items)
    for item in items:
        assert item.generation is not None and item.generation.status == Status.DONE
        assert item.output == item.generation.output and item.output
    generations = Generation.objects.filter(user=job.user, task="summarize")
    assert generations.count() == len(items)
    assert job.done_count == job.total == len(items)


def test_a_job_runs_to_the_end_on_a_real_worker(
    alice: Any, summarizer: ModelEntry, env: dict[str, str], tmp_path: Path
) -> None:
    with celery_worker(env, [summarizer.queue], tmp_path / "worker.log"):
        job = start_job(alice, summarizer, DOCS)
        wait_for(job, lambda j: j.status == JobStatus.DONE)
    assert_each_item_once(job)
    assert list(job.items.order_by("index").values_list("text", flat=True)) == DOCS
    assert job.finished_at is not None and job.started_at is not None


def test_a_worker_killed_mid_job_is_replaced_and_every_item_runs_once(
    alice: Any, summarizer: ModelEntry, env: dict[str, str], tmp_path: Path
) -> None:
    with celery_worker(env, [summarizer.queue], tmp_path / "worker1.log") as doomed:
        job = start_job(alice, summarizer, DOCS)
        wait_for(job, lambda j: j.done_count >= 1)
        # Kill it while it runs an item (it always has one while the job lasts).
        victim = wait_for_running_generation(job)
        doomed.kill()  # SIGKILL: no clean-up, no acknowledgement
        doomed.wait()
    with celery_worker(env, [summarizer.queue], tmp_path / "worker2.log"):
        wait_for(job, lambda j: j.status == JobStatus.DONE and not running_items(j))
    assert_each_item_once(job)
    killed = Generation.objects.get(pk=victim)
    assert killed.attempts == 2 and killed.status == Status.DONE  # requeued, run again


def wait_for_running_generation(job: Job, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = (
            job.items.filter(generation__status=Status.RUNNING)
            .values_list("generation_id", flat=True)
            .first()
        )
        if found is not None:
            return int(found)
        time.sleep(0.05)
    raise AssertionError("no item of the job was running")


def test_pause_resume_and_cancel_while_a_worker_runs_the_job(
    alice: Any, summarizer: ModelEntry, env: dict[str, str], tmp_path: Path
) -> None:
    with celery_worker(env, [summarizer.queue], tmp_path / "worker.log"):
        job = start_job(alice, summarizer, MANY_DOCS)
        wait_for(job, lambda j: j.done_count >= 1)
        engine.pause(job)
        # What was running finishes; what waited was withdrawn; nothing new starts.
        paused = wait_for(job, lambda j: not running_items(j))
        assert paused.status == JobStatus.PAUSED
        done_when_paused = paused.done_count
        assert 1 <= done_when_paused < len(MANY_DOCS)
        assert not Generation.objects.filter(
            user=alice, status__in=[Status.QUEUED, Status.RUNNING]
        ).exists()

        engine.resume(job)
        wait_for(job, lambda j: j.done_count > done_when_paused)
        engine.cancel(job)
        cancelled = wait_for(job, lambda j: not running_items(j))
    assert cancelled.status == JobStatus.CANCELLED
    assert cancelled.done_count + cancelled.cancelled_count == len(MANY_DOCS)
    assert cancelled.done_count > done_when_paused and cancelled.cancelled_count >= 1
    for item in job.items.filter(status=ItemStatus.DONE).select_related("generation"):
        assert item.generation is not None and item.output == item.generation.output
    # Every generation the job made ended; the withdrawn and cancelled ones as stopped.
    statuses = set(Generation.objects.filter(user=alice).values_list("status", flat=True))
    assert statuses <= {Status.DONE, Status.STOPPED}
