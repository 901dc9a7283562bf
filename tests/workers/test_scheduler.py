"""The worker's scheduler: it claims queued generations while it has room, in fair order,
runs each on a thread of its own, and the model's batcher decodes them together. Real
database rows (committed: the generation threads have connections of their own), a real
Redis stream per generation and a tiny real model through the worker's model cache."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DIRECT_QUEUE
from webapp.catalog.models import ModelEntry
from webapp.inference import services, streams
from webapp.inference.models import Generation, Priority, Status
from webapp.moderation.models import Rule
from workers import heartbeat, model_cache
from workers.scheduler import Scheduler, interactive_reserve

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    model_cache.clear()
    yield
    model_cache.clear()


@pytest.fixture(scope="module")
def roomy_llama_dir(endless_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The endless model with room for 16k positions (its rotary embeddings have no
    weights for positions). In the tiny model's 512, a reply asked for 2000 tokens ends
    after about 490, within seconds on a fast machine, while a test still counts on it
    holding its slot."""
    folder = tmp_path_factory.mktemp("roomy") / "model"
    shutil.copytree(endless_llama_dir, folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["max_position_embeddings"] = 16384
    config_file.write_text(json.dumps(config))
    return folder


@pytest.fixture
def endless_model(roomy_llama_dir: Path) -> ModelEntry:
    return ModelEntry.objects.create(
        name="endless",
        task="chat",
        source=str(roomy_llama_dir),
        queue=DIRECT_QUEUE,
        is_default=True,
        max_batch=4,
    )


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    running = Scheduler([DIRECT_QUEUE], name=heartbeat.WORKER_NAME)
    running.start()
    yield running
    for generation_id in running.running:  # whatever a failed test left behind
        streams.request_stop(generation_id)
    running.stop(timeout=30)


def ask(user: Any, model: ModelEntry, tokens: int, **fields: Any) -> int:
    generation = services.create_generation(
        user=user,
        model=model,
        task="chat",
        input={"messages": [{"role": "user", "content": "Hello there"}]},
        params={"temperature": 0.0, "max_new_tokens": tokens},
        **fields,
    )
    return generation.pk


def wait_for(check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def statuses(ids: list[int]) -> dict[int, str]:
    return dict(Generation.objects.filter(pk__in=ids).values_list("pk", "status"))


def test_generations_run_together_up_to_the_models_batch(
    make_user: Any, endless_model: ModelEntry, scheduler: Scheduler
) -> None:
    users = [make_user(f"user{i}") for i in range(6)]
    ids = [ask(user, endless_model, tokens=40) for user in users]
    most = 0

    def all_done() -> bool:
        nonlocal most
        most = max(most, len(scheduler.running))
        return set(statuses(ids).values()) == {Status.DONE}

    scheduler.wake()
    wait_for(all_done)
    # The done event follows the stored outcome.
    wait_for(lambda: all(streams.read_all(pk)[-1]["type"] == "done" for pk in ids), seconds=10)
    assert 2 <= most <= 4  # batched, never past max_batch
    loaded = model_cache.peek(endless_model)
    assert loaded is not None and loaded.batcher is not None
    assert loaded.batcher.widest >= 2
    for generation in Generation.objects.filter(pk__in=ids):
        events = streams.read_all(generation.pk)
        seqs = [event["seq"] for event in events]
        assert seqs == sorted(set(seqs))  # no gap-filling repeats or reordering
        text = "".join(e["text"] for e in events if e["type"] == "token")
        assert text == generation.output and generation.completion_tokens == 40
        assert events[-1]["type"] == "done" and generation.finish_reason == "length"
        assert generation.first_token_at is not None
    # Greedy and the same prompt: every row gave the same reply.
    assert len({g.output for g in Generation.objects.filter(pk__in=ids)}) == 1


def test_a_full_batch_keeps_its_last_slot_for_people_and_claims_in_fair_order(
    make_user: Any, endless_model: ModelEntry, scheduler: Scheduler
) -> None:
    assert interactive_reserve(4) == 1
    worker = make_user("batchjob")
    background = [
        ask(worker, endless_model, tokens=2000, priority=Priority.BACKGROUND) for _ in range(5)
    ]
    scheduler.wake()
    # One while the model loads, then three: the fourth slot is kept for people.
    wait_for(lambda: list(statuses(background).values()).count(Status.RUNNING) == 3)
    time.sleep(0.5)
    assert list(statuses(background).values()).count(Status.RUNNING) == 3
    person = make_user("person")
    interactive = ask(person, endless_model, tokens=2000)
    scheduler.wake()
    wait_for(lambda: statuses([interactive])[interactive] == Status.RUNNING, seconds=10)
    # Now the batch is full: a second person waits for a slot, then gets the next one
    # to free (before the two background items still queued).
    second = ask(make_user("second"), endless_model, tokens=3)
    scheduler.wake()
    time.sleep(0.5)
    assert statuses([second])[second] == Status.QUEUED
    first_background = next(g for g, s in statuses(background).items() if s == Status.RUNNING)
    services.stop(first_background)
    wait_for(lambda: statuses([second])[second] == Status.DONE, seconds=30)
    # (Once the person's 3 tokens are done, a background item may take that slot again.)
    for generation_id in [*background, interactive]:
        services.stop(generation_id)
    wait_for(lambda: not scheduler.running, seconds=30)
    assert statuses([first_background])[first_background] == Status.STOPPED


def test_a_stop_reaches_its_row_and_the_others_finish(
    make_user: Any, endless_model: ModelEntry, scheduler: Scheduler
) -> None:
    long = ask(make_user("long"), endless_model, tokens=3000)
    short = [ask(make_user(f"short{i}"), endless_model, tokens=300) for i in range(2)]
    scheduler.wake()
    wait_for(lambda: Status.QUEUED not in statuses([long, *short]).values(), seconds=30)
    services.stop(long)
    wait_for(lambda: statuses([long])[long] == Status.STOPPED, seconds=10)
    wait_for(lambda: set(statuses(short).values()) == {Status.DONE})
    stopped = Generation.objects.get(pk=long)
    assert stopped.finish_reason == "stopped" and 0 < stopped.completion_tokens < 3000
    assert all(g.completion_tokens == 300 for g in Generation.objects.filter(pk__in=short))


def test_a_row_blocked_by_the_output_guard_leaves_while_the_others_go_on(
    make_user: Any, endless_model: ModelEntry, scheduler: Scheduler
) -> None:
    users = [make_user("first"), make_user("second")]

    def both() -> list[Generation]:
        ids = [
            services.create_generation(
                user=user,
                model=endless_model,
                task="chat",
                input={"messages": [{"role": "user", "content": "Tell me a story."}]},
                params={"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 300, "seed": seed},
            ).pk
            for user, seed in zip(users, (11, 12), strict=True)
        ]
        scheduler.wake()
        wait_for(
            lambda: (
                Status.RUNNING not in statuses(ids).values()
                and Status.QUEUED not in statuses(ids).values()
            )
        )
        return [Generation.objects.get(pk=pk) for pk in ids]

    first, second = both()
    assert first.status == second.status == Status.DONE
    half = len(first.output) // 2
    target = next(
        word
        for word in re.findall(r"[a-z]{3,}", first.output[half:])
        if first.output.find(word) >= half and word not in second.output
    )
    Rule.objects.create(
        rule_id="tiny-output", category="violence", kind="regex", patterns=re.escape(target)
    )
    blocked, going_on = both()  # the same seeds beside each other: the same texts
    assert blocked.status == Status.BLOCKED and blocked.finish_reason == "blocked"
    assert blocked.completion_tokens < first.completion_tokens
    assert going_on.status == Status.DONE and going_on.output == second.output


def test_the_shutdown_requeues_what_is_still_running(
    make_user: Any, endless_model: ModelEntry
) -> None:
    from workers import scheduler as scheduling

    running = scheduling.start([DIRECT_QUEUE])
    generation_id = ask(make_user("late"), endless_model, tokens=4000)
    running.wake()
    wait_for(lambda: statuses([generation_id])[generation_id] == Status.RUNNING, seconds=30)
    scheduling.stop(timeout=0.5)
    generation = Generation.objects.get(pk=generation_id)
    assert generation.status == Status.QUEUED and generation.worker == ""
    streams.request_stop(generation_id)  # the thread of the old run ends at its next step
    wait_for(lambda: not running.running, seconds=30)
