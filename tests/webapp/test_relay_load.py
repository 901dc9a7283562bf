"""What keeps the web process light under many connections: one watcher per process
looks at every waiting generation in one query; a relay takes the reply's text from the
stream's done event; storing a message takes a bounded number of queries."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation.specs import SamplingParams, Task
from tests.webapp.test_chat_consumer import connect, receive_until_done, run_worker, send_message
from webapp.chat import services
from webapp.chat.consumers import ChatConsumer
from webapp.inference import liveness, streams, watching
from webapp.inference import services as inference
from webapp.inference.events import Usage
from webapp.inference.models import Generation, Status
from webapp.moderation import config as moderation_config

ROOT = Path(__file__).resolve().parents[2]
# Async tests reach the database from other threads: real transactions, and their
# connections closed afterwards.
async_db = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_connections"),
]


def with_async_db(test: Any) -> Any:
    for mark in async_db:
        test = mark(test)
    return test


def queued(user: Any, model: Any, count: int) -> list[Generation]:
    return [
        inference.create_generation(
            user=user, model=model, task=Task.CHAT, input={"messages": []}, params={}
        )
        for _ in range(count)
    ]


@pytest.mark.django_db
def test_one_look_covers_every_watched_generation_in_a_fixed_number_of_queries(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    few = queued(alice, chat_model, 2)
    with CaptureQueriesContext(connection) as looked_at_few:
        watching.watch_events([g.pk for g in few])
    many = few + queued(bob, chat_model, 18)
    inference._snapshots.clear()
    with CaptureQueriesContext(connection) as looked_at_many:
        events = watching.watch_events([g.pk for g in many])
    assert len(looked_at_many) == len(looked_at_few)  # not one query per generation

    # Fair order: alice's first, bob's first, then alice's second.
    assert [events[g.pk]["position"] for g in many[:3]] == [1, 3, 2]
    assert {events[g.pk]["type"] for g in many} == {"queue"}
    assert all(events[g.pk]["workers"] == 0 for g in many)  # no worker serves the queue


@pytest.mark.django_db
def test_finished_and_missing_generations_are_no_longer_watched(
    alice: Any, chat_model: Any
) -> None:
    waiting, running, finished = queued(alice, chat_model, 3)
    Generation.objects.filter(pk=running.pk).update(status=Status.RUNNING, worker="gone@host")
    Generation.objects.filter(pk=finished.pk).update(status=Status.DONE)
    events = watching.watch_events([waiting.pk, running.pk, finished.pk, 999_999])
    assert set(events) == {waiting.pk, running.pk}
    assert events[waiting.pk]["type"] == "queue"
    # Its worker has no heartbeat: the client is told, and the reply will be requeued.
    assert events[running.pk]["type"] == "worker_lost"
    assert events[running.pk]["worker"] == "gone@host"


@with_async_db
async def test_a_worker_lost_is_told_once_and_again_after_it_beat_again(
    alice: Any, chat_model: Any
) -> None:
    """The page hears `worker_lost` once while the worker stays silent, `running` when it
    beats again, and `worker_lost` again when it then stops for good."""
    tab = await connect(alice)
    generation_id = (await send_message(tab))["generation"]
    worker = "lapsing@host"
    await database_sync_to_async(
        lambda: Generation.objects.filter(pk=generation_id).update(
            status=Status.RUNNING, worker=worker
        )
    )()

    async def next_of(kinds: set[str]) -> dict[str, Any]:
        while True:
            event = await tab.receive_json_from(timeout=10)
            if event["type"] in kinds:
                return event

    try:
        assert (await next_of({"worker_lost", "running"}))["type"] == "worker_lost"
        await asyncio.sleep(2.5)  # two more looks, the worker still silent: not told again
        assert await tab.receive_nothing(timeout=0.1)
        await database_sync_to_async(liveness.beat)(worker, [chat_model.queue])
        assert (await next_of({"worker_lost", "running"}))["type"] == "running"
        await database_sync_to_async(liveness.forget)(worker)
        lost = await next_of({"worker_lost", "running"})
        assert lost["type"] == "worker_lost" and lost["worker"] == worker
    finally:
        await database_sync_to_async(liveness.forget)(worker)
        await tab.disconnect()


@with_async_db
async def test_many_relays_share_one_watcher(alice: Any, chat_model: Any) -> None:
    """Three tabs waiting on three queued replies: each hears its own place in the queue,
    and the process runs one watcher task for all of them."""
    tabs = [await connect(alice) for _ in range(2)]
    first = await send_message(tabs[0])
    second = await send_message(tabs[1])
    third_tab = await connect(alice)
    await third_tab.send_json_to({"type": "subscribe", "generation": first["generation"]})
    heard = {}
    for name, tab in (("first", tabs[0]), ("second", tabs[1]), ("third", third_tab)):
        event = await tab.receive_json_from(timeout=10)
        assert event["type"] == "queue", event
        heard[name] = (event["generation"], event["position"])
    assert heard == {
        "first": (first["generation"], 1),
        "second": (second["generation"], 2),
        "third": (first["generation"], 1),
    }
    shared = watching.watcher()
    assert set(shared._subscribers) == {first["generation"], second["generation"]}
    assert len(shared._subscribers[first["generation"]]) == 2
    for generation in (first, second):
        await tabs[0].send_json_to({"type": "stop", "generation": generation["generation"]})
    for tab in (*tabs, third_tab):
        await receive_until_done(tab)
        await tab.disconnect()
    await asyncio.sleep(watching.WATCH_SECONDS + 0.5)
    assert shared._subscribers == {}  # every relay left; the watcher stops with them
    assert shared._task is None


@with_async_db
async def test_the_relay_sends_the_text_the_done_event_carries(alice: Any, chat_model: Any) -> None:
    """The worker records the end in the database, then writes the stored text into the
    done event; relays send that on without reading the database."""
    communicator = await connect(alice)
    accepted = await send_message(communicator, temperature=0)
    await run_worker(accepted["generation"])
    stored = await Generation.objects.aget(pk=accepted["generation"])
    done_in_stream = streams.read_all(stored.pk)[-1]
    assert done_in_stream["type"] == "done" and done_in_stream.get("text") == stored.output
    events = await receive_until_done(communicator)
    assert events[-1]["text"] == stored.output
    assert events[-1]["html"].startswith("<p>") or stored.output.strip() == ""
    await communicator.disconnect()


@with_async_db
async def test_a_done_event_without_text_falls_back_to_the_database(
    alice: Any, chat_model: Any
) -> None:
    """Streams written before the done event carried the text (or by a path that does not
    know it) still end with the stored text."""
    generation = await Generation.objects.acreate(
        user=alice,
        model=chat_model,
        model_name=chat_model.name,
        task=Task.CHAT,
        queue=chat_model.queue,
        input={"messages": []},
        status=Status.DONE,
        output="Stored **reply**",
    )
    writer = streams.StreamWriter(generation.pk, flush_ms=0)
    writer.add("Stored **reply**")
    writer.done(Status.DONE, usage=Usage(prompt_tokens=1, completion_tokens=2))
    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = alice
    await communicator.connect()
    await communicator.send_json_to({"type": "subscribe", "generation": generation.pk})
    events = await receive_until_done(communicator)
    assert events[-1]["text"] == "Stored **reply**"
    assert "<strong>reply</strong>" in events[-1]["html"]
    await communicator.disconnect()


@pytest.mark.django_db
def test_storing_a_message_takes_a_bounded_number_of_queries(
    alice: Any, chat_model: Any, django_assert_max_num_queries: Any
) -> None:
    """A first message (a new conversation) and a follow-up: every query counted, so that
    one added by accident shows here. The web process stores every message people send."""
    params = SamplingParams()
    moderation_config.current()  # built once per process when the configuration changes
    # The quotas take three: the user's lock, their limits and their usage (and two more
    # the first time, to make the lock's row).
    with django_assert_max_num_queries(16):
        first = services.post_message(
            alice, content="Hello", conversation_id=None, model_id=None, system=None,
            params=params,
        )  # fmt: skip
    with django_assert_max_num_queries(16):
        services.post_message(
            alice, content="And then?", conversation_id=first.conversation.pk,
            model_id=None, system=None, params=params,
        )  # fmt: skip


def test_a_worker_lowers_its_cpu_priority_as_configured() -> None:
    env = {**os.environ, "ATELIER_WORKER_NICE": "7", "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)  # importing the app needs settings, not a database
    code = "import os, workers.celery_app as a; a._lower_priority(); print(os.nice(0))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "7"
