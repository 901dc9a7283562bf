"""The batch engine with a real tiny model run in this process (`workers.runner.run_next`,
the worker's own code) and real Redis: bounded fan-out, background priority, exactly-once
results, pause, resume, cancel, retry, and items whose input could not be read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from tests.conftest import DIRECT_QUEUE
from webapp.catalog.models import ModelEntry
from webapp.inference import services as inference
from webapp.inference.models import Generation, Priority, Status
from webapp.inference.refusals import NotAllowed
from webapp.jobs import engine, inputs, services
from webapp.jobs.models import ItemStatus, Job, JobItem, JobStatus
from webapp.moderation import services as moderation
from webapp.moderation.models import ModerationEvent
from workers import model_cache
from workers.runner import run_next

# Transactional: outcomes are announced on commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

IN_FLIGHT = 2


@pytest.fixture(autouse=True)
def small_fan_out() -> Iterator[None]:
    with override_settings(ATELIER_JOB_MAX_IN_FLIGHT=IN_FLIGHT):
        yield
    model_cache.clear()


@pytest.fixture
def summarizer(db: Any, tiny_llama_dir: Path) -> ModelEntry:
    return ModelEntry.objects.create(
        name="tiny-summarizer", task="summarize", source=str(tiny_llama_dir), queue=DIRECT_QUEUE
    )


def make_job(user: Any, model: ModelEntry, lines: list[str], **options: Any) -> Job:
    data = "\n".join(lines).encode()
    parsed = inputs.parse("docs.txt", data, limits=services.limits())
    return services.create_job(
        user=user,
        model=model,
        task="summarize",
        options=services.options_for("summarize", **options),
        source_name="docs.txt",
        parsed=parsed,
    )


def job_generations(job: Job) -> Any:
    return Generation.objects.filter(task="summarize", user=job.user).order_by("pk")


def in_flight(job: Job) -> int:
    return job_generations(job).filter(status__in=[Status.QUEUED, Status.RUNNING]).count()


def run_job(job: Job) -> list[int]:
    """Run the queue in this process until nothing is left; returns the in-flight count
    seen before each run."""
    seen = []
    for _ in range(100):
        seen.append(in_flight(job))
        if run_next(DIRECT_QUEUE) is None:
            break
    job.refresh_from_db()
    return seen


DOCS = [f"Document {i}: the river rose by {i} centimetres on day {i}." for i in range(5)]


def test_a_job_runs_every_item_once_in_order_with_a_bounded_fan_out(
    alice: Any, summarizer: ModelEntry
) -> None:
    job = make_job(alice, summarizer, DOCS, length="short")
    assert job.status == JobStatus.RUNNING and job.total == 5
    queued = list(job_generations(job))
    assert len(queued) == IN_FLIGHT
    assert all(g.priority == Priority.BACKGROUND for g in queued)
    assert queued[0].input == {"text": DOCS[0], "length": "short"} and queued[0].params == {}

    seen = run_job(job)

    assert max(seen) == IN_FLIGHT
    assert job.status == JobStatus.DONE and job.finished_at is not None
    assert (job.done_count, job.failed_count, job.finished_items) == (5, 0, 5)
    items = list(job.items.order_by("index").select_related("generation"))
    assert [i.text for i in items] == DOCS
    assert [i.external_id for i in items] == ["1", "2", "3", "4", "5"]
    for item in items:
        assert item.status == ItemStatus.DONE and item.attempts == 1
        assert item.generation is not None and item.output == item.generation.output
        assert item.generation.status == Status.DONE and item.generation.completion_tokens > 0
    assert job_generations(job).count() == 5  # one generation per item, no more


def test_interactive_requests_go_before_the_jobs_items(
    alice: Any, bob: Any, summarizer: ModelEntry, chat_model: ModelEntry
) -> None:
    job = make_job(alice, summarizer, DOCS[:3])
    reply = inference.create_generation(
        user=bob,
        model=chat_model,
        task="chat",
        input={"messages": [{"role": "user", "content": "hi"}]},
        params={"max_new_tokens": 4},
    )
    assert run_next(DIRECT_QUEUE) == reply.pk
    assert run_next(DIRECT_QUEUE) == job.items.get(index=0).generation_id


def test_a_result_is_recorded_once_however_often_it_is_announced(
    alice: Any, summarizer: ModelEntry
) -> None:
    job = make_job(alice, summarizer, DOCS[:3])
    first = job.items.get(index=0)
    assert first.generation_id is not None
    run_next(DIRECT_QUEUE)
    first.refresh_from_db()
    assert first.status == ItemStatus.DONE
    stamp = first.updated_at
    for _ in range(3):  # a signal sent again, a reconcile pass, another process
        engine.on_generation_finished(first.generation_id)
        engine.reconcile(job.pk)
    first.refresh_from_db()
    assert first.updated_at == stamp and first.attempts == 1
    assert job_generations(job).count() == 3  # the two others plus the next one, no extra


def test_a_requeued_generation_gives_its_item_one_result(
    alice: Any, summarizer: ModelEntry
) -> None:
    """A worker taken for dead: its generation is requeued (same Generation, run again);
    the item keeps it and gets exactly one result."""
    job = make_job(alice, summarizer, DOCS[:2])
    item = job.items.get(index=0)
    claimed = inference.claim_next(DIRECT_QUEUE, worker="dead-worker")
    assert claimed is not None and claimed.pk == item.generation_id
    assert inference.recover_orphan(claimed.pk, "dead-worker") == "requeued"
    # The dead worker's late outcome is refused: it no longer holds the generation.
    assert not inference.finish(claimed.pk, status=Status.DONE, output="late", worker="dead-worker")
    run_job(job)
    item.refresh_from_db()
    generation = Generation.objects.get(pk=item.generation_id)
    assert generation.attempts == 2 and generation.status == Status.DONE
    assert item.status == ItemStatus.DONE and item.output == generation.output != "late"
    assert item.attempts == 1 and job_generations(job).count() == 2
    job.refresh_from_db()
    assert job.status == JobStatus.DONE and job.done_count == 2


def test_pause_withdraws_waiting_items_and_resume_runs_them(
    alice: Any, summarizer: ModelEntry
) -> None:
    job = make_job(alice, summarizer, DOCS)
    withdrawn = [i.generation_id for i in job.items.filter(status=ItemStatus.RUNNING)]
    engine.pause(job)
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    assert set(Generation.objects.filter(pk__in=withdrawn).values_list("status", flat=True)) == {
        Status.STOPPED
    }
    assert job.items.filter(status=ItemStatus.PENDING).count() == 5
    assert run_next(DIRECT_QUEUE) is None  # nothing of the job is left in the queue
    with pytest.raises(engine.JobStateError):
        engine.pause(job)

    engine.resume(job)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and in_flight(job) == IN_FLIGHT
    run_job(job)
    assert job.status == JobStatus.DONE and job.done_count == 5
    outputs = {i.generation_id: i.status for i in job.items.all()}
    assert not set(withdrawn) & set(outputs)  # each item's result is from its new run


def test_cancel_stops_queued_items_and_cancels_pending_ones(
    alice: Any, summarizer: ModelEntry
) -> None:
    job = make_job(alice, summarizer, DOCS)
    run_next(DIRECT_QUEUE)  # the first item is done
    engine.cancel(job)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert (job.done_count, job.cancelled_count, job.failed_count) == (1, 4, 0)
    assert not job.items.filter(status__in=[ItemStatus.PENDING, ItemStatus.RUNNING]).exists()
    assert run_next(DIRECT_QUEUE) is None
    with pytest.raises(engine.JobStateError):
        engine.cancel(job)
    with pytest.raises(engine.JobStateError):
        engine.retry_failed(job)


def test_failed_items_can_be_retried(alice: Any, summarizer: ModelEntry) -> None:
    job = make_job(alice, summarizer, DOCS[:3])
    ModelEntry.objects.filter(pk=summarizer.pk).update(enabled=False)
    run_job(job)  # the two in flight fail in the worker; the third is failed by the engine
    assert job.status == JobStatus.DONE and job.failed_count == 3
    errors = set(job.items.values_list("error", flat=True))
    assert all("no longer available" in e for e in errors), errors
    assert engine.progress(job.pk).retryable == 3

    ModelEntry.objects.filter(pk=summarizer.pk).update(enabled=True)
    assert engine.retry_failed(job) == 3
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    run_job(job)
    assert job.status == JobStatus.DONE and (job.done_count, job.failed_count) == (3, 0)
    # Generations made per item: the third item never had one before the retry.
    assert list(job.items.order_by("index").values_list("attempts", flat=True)) == [2, 2, 1]


def test_unreadable_inputs_fail_alone_and_are_never_sent(
    alice: Any, summarizer: ModelEntry
) -> None:
    parsed = inputs.parse("docs.txt", b"fine\ncaf\xe9\nalso fine\n", limits=services.limits())
    job = services.create_job(
        user=alice,
        model=summarizer,
        task="summarize",
        options={"length": "short"},
        source_name="docs.txt",
        parsed=parsed,
    )
    bad = job.items.get(index=1)
    assert bad.status == ItemStatus.INVALID and "not UTF-8" in bad.error
    assert bad.generation_id is None
    run_job(job)
    assert (job.status, job.done_count, job.failed_count) == (JobStatus.DONE, 2, 1)
    assert engine.retry_failed(job) == 0
    assert engine.progress(job.pk).percent == 100


def test_a_pending_user_cannot_start_a_job(make_user: Any, summarizer: ModelEntry) -> None:
    pending = make_user("paula", role="pending")
    with pytest.raises(NotAllowed, match="approval"):
        make_job(pending, summarizer, DOCS[:1])
    assert not Job.objects.exists() and not JobItem.objects.exists()


def test_progress_counts_throughput_and_time_left(alice: Any, summarizer: ModelEntry) -> None:
    job = make_job(alice, summarizer, DOCS)
    start = engine.progress(job.pk)
    assert (start.total, start.done, start.running, start.percent) == (5, 0, IN_FLIGHT, 0)
    run_next(DIRECT_QUEUE)
    run_next(DIRECT_QUEUE)
    middle = engine.progress(job.pk)
    assert (middle.done, middle.percent, middle.status) == (2, 40, "running")
    if middle.per_minute is not None:  # at least a second has passed since the start
        assert middle.per_minute > 0 and middle.eta_seconds is not None
    run_job(job)
    end = engine.progress(job.pk)
    assert (end.done, end.percent, end.eta_seconds, end.running) == (5, 100, None, 0)


THREAT = "I will kill you"


def test_a_blocked_document_fails_with_the_reason_and_is_never_sent(
    alice: Any, summarizer: ModelEntry
) -> None:
    job = make_job(alice, summarizer, [DOCS[0], THREAT, DOCS[1]])
    blocked = job.items.get(index=1)
    assert blocked.status == ItemStatus.FAILED and blocked.generation_id is None
    assert "Blocked by the content policy" in blocked.error
    assert in_flight(job) == IN_FLIGHT  # the next document took its place
    run_job(job)
    assert (job.status, job.done_count, job.failed_count) == (JobStatus.DONE, 2, 1)
    assert not Generation.objects.filter(input__text=THREAT).exists()
    assert ModerationEvent.objects.filter(user=alice, text=THREAT).exists()  # for review
    assert engine.retry_failed(job) == 1  # checked again on retry: still blocked
    job.refresh_from_db()
    assert (job.status, job.failed_count) == (JobStatus.DONE, 1)


def test_a_suspended_user_cannot_start_a_job_and_a_running_one_pauses(
    alice: Any, summarizer: ModelEntry
) -> None:
    job = make_job(alice, summarizer, DOCS[:4])
    moderation.suspend(alice, "Repeated threats.")
    run_next(DIRECT_QUEUE)  # an item finishes; the top-up finds the account suspended
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED and job.done_count == 1
    with pytest.raises(engine.JobStateError, match="suspended"):
        engine.resume(job)
    with pytest.raises(NotAllowed, match="suspended"):
        make_job(alice, summarizer, DOCS[:1])


def test_a_translation_job_runs_on_a_translation_model_and_unsupported_pairs_fail_clearly(
    alice: Any, tmp_path: Path
) -> None:
    from tests.tiny.models import build_tiny_marian

    marian = ModelEntry.objects.create(
        name="tiny-marian-en-de",
        task="translate",
        source=str(build_tiny_marian(tmp_path / "marian", "en", "de")),
        queue=DIRECT_QUEUE,
    )
    parsed = inputs.parse("docs.txt", b"Hello there.\nGood night.\n", limits=services.limits())

    def translate(target: str) -> Job:
        job = services.create_job(
            user=alice,
            model=marian,
            task="translate",
            options=services.options_for("translate", target=target, source="en"),
            source_name="docs.txt",
            parsed=parsed,
        )
        run_job(job)
        return job

    german = translate("de")
    assert (german.status, german.done_count) == (JobStatus.DONE, 2), list(
        german.items.values_list("error", flat=True)
    )
    first = german.items.select_related("generation").get(index=0)
    assert first.generation is not None
    assert first.generation.input == {"text": "Hello there.", "target": "de", "source": "en"}
    assert first.output == first.generation.output
    french = translate("fr")
    assert french.failed_count == 2
    errors = set(french.items.values_list("error", flat=True))
    assert len(errors) == 1 and "fr" in errors.pop()


def test_an_outcome_whose_signal_was_lost_is_recorded_on_a_workers_heartbeat(
    alice: Any, summarizer: ModelEntry
) -> None:
    """A worker killed between storing an item's outcome and the job hearing of it leaves
    the item running beside a finished generation; any worker's heartbeat records it and
    tops the job up, with nobody watching the job's page."""
    from workers.heartbeat import Heartbeat

    job = make_job(alice, summarizer, DOCS[:3])
    first = job.items.get(index=0)
    assert first.status == ItemStatus.RUNNING and first.generation_id is not None
    # The outcome as the worker stored it, without the signal that would have followed.
    Generation.objects.filter(pk=first.generation_id).update(
        status=Status.DONE, output="A summary.", finish_reason="eos"
    )
    Heartbeat([DIRECT_QUEUE], name="w-reconcile").look_after_queues()
    first.refresh_from_db()
    assert (first.status, first.output) == (ItemStatus.DONE, "A summary.")
    job.refresh_from_db()
    assert job.done_count == 1
    assert in_flight(job) == IN_FLIGHT  # the next item took its place
    run_job(job)
    assert job.status == JobStatus.DONE and job.done_count == 3
