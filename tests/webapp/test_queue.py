"""The fair queue, the per-user limit, queue positions, and recovery of generations whose
worker died. Real database and Redis; no worker process (DIRECT_QUEUE has none)."""

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from webapp.accounts.models import GroupLimits
from webapp.chat import services
from webapp.inference import dispatch, liveness, streams
from webapp.inference import services as inference
from webapp.inference.models import Generation, Status
from webapp.inference.refusals import LimitReached
from webapp.inference.watching import _queue_event
from workers.heartbeat import Heartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_queue(settings: Any) -> Any:
    """No wake-up messages left over from other tests, and a generous limit."""
    settings.ATELIER_MAX_CONCURRENT_GENERATIONS = 10
    streams.sync_redis().delete(DIRECT_QUEUE)
    yield
    streams.sync_redis().delete(DIRECT_QUEUE)


def ask(user: Any, content: str = "Hi") -> int:
    posted = services.post_message(
        user, content=content, conversation_id=None, model_id=None, system=None,
        params=SamplingParams(max_new_tokens=4),
    )  # fmt: skip
    generation_id = posted.assistant_message.generation_id
    assert generation_id is not None
    return generation_id


def test_one_users_many_requests_do_not_hold_up_another_users_one(
    alice: Any, bob: Any, make_user: Any, chat_model: Any
) -> None:
    carol = make_user("carol")
    a = [ask(alice) for _ in range(4)]
    b = ask(bob)
    c = ask(carol)
    # Nobody served yet: round-robin in arrival order of each user's first request.
    assert inference.fair_order(DIRECT_QUEUE) == [a[0], b, c, a[1], a[2], a[3]]
    # Alice's first starts: Bob and Carol, never served, go before her second.
    assert inference.claim_next(DIRECT_QUEUE, worker="w1").pk == a[0]  # type: ignore[union-attr]
    assert inference.fair_order(DIRECT_QUEUE) == [b, c, a[1], a[2], a[3]]
    assert inference.claim_next(DIRECT_QUEUE, worker="w1").pk == b  # type: ignore[union-attr]
    # Bob asks again: Carol (never served), then Alice (served before Bob), then Bob.
    b2 = ask(bob)
    assert inference.fair_order(DIRECT_QUEUE) == [c, a[1], b2, a[2], a[3]]


def test_background_work_waits_for_interactive_requests(alice: Any, chat_model: Any) -> None:
    first = ask(alice)
    Generation.objects.filter(pk=first).update(priority=10)  # e.g. a title or a batch item
    second = ask(alice)
    assert inference.fair_order(DIRECT_QUEUE) == [second, first]


def test_the_concurrency_limit_refuses_and_stores_nothing(
    alice: Any, chat_model: Any, settings: Any
) -> None:
    settings.ATELIER_MAX_CONCURRENT_GENERATIONS = 2
    ask(alice)
    ask(alice)
    before = Generation.objects.count()
    with pytest.raises(LimitReached, match="2 replies in progress"):
        ask(alice)
    assert Generation.objects.count() == before
    # A group with a higher limit lifts it; a finished generation frees a place too.
    group = Group.objects.create(name="power users")
    GroupLimits.objects.create(group=group, max_concurrent_generations=3)
    alice.groups.add(group)
    third = ask(alice)
    with pytest.raises(LimitReached):
        ask(alice)
    inference.stop(third)
    ask(alice)


def test_queue_info_reports_position_and_that_no_worker_serves_the_queue(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    a1, a2 = ask(alice), ask(alice)
    b1 = ask(bob)
    info = inference.queue_info(Generation.objects.get(pk=b1), fresh=True)
    assert info is not None
    assert (info.position, info.running, info.workers, info.eta_seconds) == (2, 0, 0, None)
    assert inference.queue_info(Generation.objects.get(pk=a2)).position == 3  # type: ignore[union-attr]
    # A live worker of the queue and a finished generation to estimate from.
    liveness.beat("w-test", [DIRECT_QUEUE])
    try:
        inference.claim_next(DIRECT_QUEUE, worker="w-test")
        inference.finish(a1, status=Status.DONE, worker="w-test")
        info = inference.queue_info(Generation.objects.get(pk=a2), fresh=True)
        assert info is not None and info.workers == 1 and info.position == 2
        assert info.eta_seconds is not None and info.eta_seconds >= 0
    finally:
        liveness.forget("w-test")
    assert inference.queue_info(Generation.objects.get(pk=a1), fresh=True) is None  # finished


def stream_statuses(generation_id: int) -> list[dict[str, Any]]:
    entries = streams.sync_redis().xrange(streams.stream_key(generation_id))
    return [json.loads(fields[b"e"]) for _id, fields in entries]


def test_a_dead_workers_generation_is_requeued_once_then_failed(
    alice: Any, chat_model: Any, settings: Any
) -> None:
    settings.ATELIER_GENERATION_MAX_ATTEMPTS = 2
    generation_id = ask(alice)
    inference.claim_next(DIRECT_QUEUE, worker="dead-1")
    writer = streams.StreamWriter(generation_id)
    writer.status(Status.RUNNING)
    writer.add("partial")
    writer.flush()
    assert inference.running_without_worker(live=set()) == [(generation_id, "dead-1")]
    assert inference.recover_orphan(generation_id, "dead-1") == "requeued"
    generation = Generation.objects.get(pk=generation_id)
    assert (
        generation.status == Status.QUEUED and generation.worker == "" and generation.output == ""
    )
    # Its stream goes on (no event rewritten): running, token, then requeued.
    assert [e.get("status", e["type"]) for e in stream_statuses(generation_id)] == [
        "running",
        "token",
        "requeued",
    ]
    # A new wake-up message (the original one is sent on commit, which a test transaction
    # never reaches).
    assert dispatch.waiting_messages(DIRECT_QUEUE) == 1
    # The second worker dies too: now it fails, with a message that says why.
    inference.claim_next(DIRECT_QUEUE, worker="dead-2")
    assert inference.recover_orphan(generation_id, "dead-1") == "nothing"  # not its worker
    assert inference.recover_orphan(generation_id, "dead-2") == "failed"
    generation = Generation.objects.get(pk=generation_id)
    assert generation.status == Status.FAILED and "stopped unexpectedly 2 times" in generation.error
    assert stream_statuses(generation_id)[-1]["type"] == "done"


def test_a_finish_from_a_worker_taken_for_dead_is_dropped(alice: Any, chat_model: Any) -> None:
    generation_id = ask(alice)
    inference.claim_next(DIRECT_QUEUE, worker="slow")
    inference.recover_orphan(generation_id, "slow")
    assert not inference.finish(generation_id, status=Status.DONE, output="late", worker="slow")
    assert Generation.objects.get(pk=generation_id).status == Status.QUEUED


def test_top_up_restores_lost_wake_up_messages(alice: Any, bob: Any, chat_model: Any) -> None:
    ask(alice)
    ask(bob)
    streams.sync_redis().delete(DIRECT_QUEUE)  # as if Redis restarted empty
    assert inference.top_up(DIRECT_QUEUE) == 2
    assert dispatch.waiting_messages(DIRECT_QUEUE) == 2
    assert inference.top_up(DIRECT_QUEUE) == 0


def test_heartbeat_recovers_orphans_after_a_grace_period(
    alice: Any, chat_model: Any, settings: Any
) -> None:
    settings.ATELIER_WORKER_HEARTBEAT_SECONDS = 2
    generation_id = ask(alice)
    inference.claim_next(DIRECT_QUEUE, worker="gone")
    heartbeat = Heartbeat([DIRECT_QUEUE], name="w-alive")
    heartbeat.look_after_queues(now=100.0)  # suspected, not yet acted on
    assert Generation.objects.get(pk=generation_id).status == Status.RUNNING
    heartbeat.look_after_queues(now=104.0)  # still without a worker after 2 beats
    assert Generation.objects.get(pk=generation_id).status == Status.QUEUED


def test_a_generation_queued_after_the_snapshot_still_gets_its_position(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    first = ask(alice)
    assert inference.queue_info(Generation.objects.get(pk=first), fresh=True) is not None
    later = ask(bob)  # within the snapshot's second
    info = inference.queue_info(Generation.objects.get(pk=later))
    assert info is not None and info.position == 2


def test_the_wait_counts_the_slots_of_batching_workers(
    alice: Any, bob: Any, make_user: Any, chat_model: Any
) -> None:
    """With workers that run four at once, a request fourth in line starts at once and the
    wait grows by a quarter of a reply per request ahead past the free slots."""
    users = [alice, bob, make_user("carol"), make_user("dave"), make_user("erin")]
    done = ask(alice)
    inference.claim_next(DIRECT_QUEUE, worker="w-batch")
    inference.finish(done, status=Status.DONE, worker="w-batch")
    Generation.objects.filter(pk=done).update(
        started_at=timezone.now() - timedelta(seconds=8), finished_at=timezone.now()
    )
    waiting = [ask(user) for user in users]
    liveness.beat("w-batch", [DIRECT_QUEUE], slots=4)
    try:
        found = [inference.queue_info(Generation.objects.get(pk=pk), fresh=True) for pk in waiting]
        infos = sorted((info for info in found if info), key=lambda info: info.position)
        fourth = next(
            pk for pk, info in zip(waiting, found, strict=True) if info and info.position == 4
        )
        fifth = next(
            pk for pk, info in zip(waiting, found, strict=True) if info and info.position == 5
        )
        starting, queued = (
            _queue_event(Generation.objects.get(pk=fourth)),
            _queue_event(Generation.objects.get(pk=fifth)),
        )
    finally:
        liveness.forget("w-batch")
    assert [info.slots for info in infos] == [4] * 5
    assert [info.position for info in infos] == [1, 2, 3, 4, 5]
    # Four free slots: the first four start now; the fifth waits for one reply of four.
    assert [info.eta_seconds for info in infos] == [0.0, 0.0, 0.0, 0.0, 2.0]
    assert starting["message"] == "Starting…"
    assert queued["message"] == "Waiting in the queue: position 5 (about 2 s)."
