"""Fault injection with real processes (Daphne, Celery workers, a Redis of the test's own):
a worker killed with SIGKILL mid-generation, Redis restarted, the web process restarted
mid-stream, PostgreSQL (a cluster of the test's own) restarted mid-stream. Each checks what
the user sees over a real WebSocket and what is stored."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from websockets.sync.client import ClientConnection, connect

from tests.processes import PrivatePostgres, celery_worker, session_cookie, web_server
from webapp.inference.models import Generation, Status
from webapp.private_redis import PrivateRedis, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Beat every second; a worker silent for 3 s is dead (the defaults are 2 s and 10 s).
FAST_RECOVERY = {"ATELIER_WORKER_HEARTBEAT_SECONDS": "1", "ATELIER_WORKER_TIMEOUT_SECONDS": "3"}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(test_db_env: dict[str, str], redis_server: PrivateRedis) -> dict[str, str]:
    return {**test_db_env, "REDIS_URL": redis_server.url, **FAST_RECOVERY}


@pytest.fixture
def queue(chat_model: Any, endless_llama_dir: Path) -> str:
    """The chat model on a queue of this test's own, without an end-of-sequence token so
    that every reply runs to its max_tokens."""
    chat_model.queue = f"faults-{uuid.uuid4().hex[:8]}"
    chat_model.source = str(endless_llama_dir)
    chat_model.save()
    return str(chat_model.queue)


class Socket:
    """A logged-in WebSocket to the web process, collecting the events it receives."""

    def __init__(self, stack: ExitStack, url: str, cookie: str) -> None:
        self.connection: ClientConnection = stack.enter_context(
            connect(
                url.replace("http", "ws") + "/ws/chat/",
                origin=url,  # type: ignore[arg-type]
                additional_headers={"Cookie": cookie},
                proxy=None,
            )
        )
        self.events: list[dict[str, Any]] = []

    def send(self, **frame: Any) -> None:
        self.connection.send(json.dumps(frame))

    def until(self, wanted: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            raw = self.connection.recv(timeout=max(0.01, deadline - time.monotonic()))
            event = json.loads(raw)
            self.events.append(event)
            if wanted(event):
                return event
            assert event["type"] != "error", event


def stream_text(events: list[dict[str, Any]]) -> str:
    """The reply as a client shows it: tokens, started over at a `requeued` status."""
    text = ""
    for event in events:
        if event["type"] == "token":
            text += event["text"]
        elif event["type"] == "status" and event["status"] == "requeued":
            text = ""
    return text


def assert_in_order(events: list[dict[str, Any]]) -> None:
    seqs = [event["seq"] for event in events if "seq" in event]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # no gap, repeat or swap


def test_a_worker_killed_mid_batch_is_replaced_and_every_reply_completes(
    alice: Any, bob: Any, make_user: Any, queue: str, env: dict[str, str], tmp_path: Path
) -> None:
    """Three people's replies decode together in one worker's batch; SIGKILL of that
    worker requeues every one of them, and each completes on its page."""
    people = [alice, bob, make_user("carol")]
    with ExitStack() as stack:
        url = stack.enter_context(web_server(env, tmp_path / "web.log"))
        doomed = stack.enter_context(celery_worker(env, [queue], tmp_path / "worker1.log"))
        sockets = [Socket(stack, url, session_cookie(person)) for person in people]
        ids = []
        for socket in sockets:
            socket.send(type="message", content="Go on", temperature=1.0, seed=5, max_tokens=200)
            ids.append(socket.until(lambda e: e["type"] == "accepted")["generation"])
        for socket in sockets:
            socket.until(lambda e: e["type"] == "token")
        running = Generation.objects.filter(pk__in=ids, status=Status.RUNNING).count()
        assert running == 3  # all three in the batch at once (a solo worker ran one)
        doomed.kill()  # SIGKILL: no clean-up, no acknowledgement
        doomed.wait()
        killed_at = time.monotonic()
        for socket in sockets:
            socket.until(lambda e: e["type"] == "worker_lost", timeout=15)
        stack.enter_context(celery_worker(env, [queue], tmp_path / "worker2.log"))
        for socket in sockets:
            socket.until(lambda e: e.get("status") == "requeued", timeout=30)
        requeued_after = time.monotonic() - killed_at
        dones = [socket.until(lambda e: e["type"] == "done", timeout=120) for socket in sockets]
    for generation_id, socket, done in zip(ids, sockets, dones, strict=True):
        assert done["status"] == "done", done
        generation = Generation.objects.get(pk=generation_id)
        assert generation.status == Status.DONE and generation.attempts == 2
        assert generation.output == stream_text(socket.events) == done["text"]
        assert generation.completion_tokens == 200
        assert_in_order(socket.events)
    # The same seed and prompt give the same text, whoever ran beside whom.
    assert len({done["text"] for done in dones}) == 1
    print(f"SIGKILL -> three requeued by the new worker: {requeued_after:.1f} s")
    assert requeued_after < 30


def test_after_a_redis_restart_the_next_message_works_within_10_seconds(
    alice: Any, queue: str, env: dict[str, str], redis_server: PrivateRedis, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        url = stack.enter_context(web_server(env, tmp_path / "web.log"))
        stack.enter_context(celery_worker(env, [queue], tmp_path / "worker.log"))
        socket = Socket(stack, url, session_cookie(alice))
        socket.send(type="message", content="Before", temperature=0, max_tokens=8)
        assert socket.until(lambda e: e["type"] == "done")["status"] == "done"
        conversation = socket.events[0]["conversation"]

        redis_server.stop()  # everything in it is gone: streams, queues, heartbeats
        time.sleep(1)
        redis_server.start()
        restarted = time.monotonic()
        done = None
        while done is None and time.monotonic() - restarted < 10:
            # The same page (socket) keeps working: send again until a reply completes.
            socket.send(
                type="message",
                content="After",
                conversation=conversation,
                temperature=0,
                max_tokens=8,
            )
            event = socket.until(lambda e: e["type"] in ("done", "error"), timeout=10)
            if event["type"] == "done" and event["status"] == "done":
                done = event
            else:
                time.sleep(0.5)
        elapsed = time.monotonic() - restarted
    assert done is not None, socket.events[-5:]
    print(f"Redis restarted -> next reply done: {elapsed:.1f} s")
    assert elapsed < 10, elapsed


def test_a_restarted_web_process_resumes_the_stream_exactly(
    alice: Any, queue: str, env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    cookie = session_cookie(alice)
    with celery_worker(env, [queue], tmp_path / "worker.log"), ExitStack() as sockets:
        with web_server(env, tmp_path / "web.log", port=port) as url:
            first = Socket(sockets, url, cookie)
            first.send(type="message", content="Go on", temperature=1.0, seed=9, max_tokens=300)
            generation_id = first.until(lambda e: e["type"] == "accepted")["generation"]
            first.until(lambda e: e["type"] == "token")
            first.until(lambda e: e["type"] == "token")
            # The web process goes away mid-stream (the worker keeps generating).
        last_seq = max(e["seq"] for e in first.events if "seq" in e)
        with web_server(env, tmp_path / "web.log", port=port) as url:
            second = Socket(sockets, url, cookie)
            second.send(type="subscribe", generation=generation_id, after=last_seq)
            done = second.until(lambda e: e["type"] == "done", timeout=120)
    events = [e for e in first.events + second.events if "seq" in e]
    assert_in_order(events)
    generation = Generation.objects.get(pk=generation_id)
    assert done["status"] == "done" and generation.completion_tokens == 300
    assert stream_text(events) == generation.output == done["text"]


def test_a_postgresql_restart_mid_stream_loses_nothing(
    alice: Any, queue: str, env: dict[str, str], tmp_path: Path
) -> None:
    """PostgreSQL stops under a web process and a worker streaming a reply: while it is
    away, a message gets an error the page can act on (the socket stays open); the reply
    streams on and is stored whole once the database is back, and the next message works."""
    cookie = session_cookie(alice)  # stored before the database is copied
    postgres = PrivatePostgres()
    try:
        postgres.create()
        database = postgres.copy_database(connection.settings_dict, "atelier")
        # A request waits 2 s for a connection (5 s by default) before it is told.
        env = {**env, "DATABASE_URL": database, "ATELIER_DB_POOL_TIMEOUT": "2"}
        with ExitStack() as stack:
            url = stack.enter_context(web_server(env, tmp_path / "web.log"))
            stack.enter_context(celery_worker(env, [queue], tmp_path / "worker.log"))
            streaming, other = Socket(stack, url, cookie), Socket(stack, url, cookie)
            streaming.send(type="message", content="Go on", temperature=1.0, seed=3, max_tokens=400)
            generation_id = streaming.until(lambda e: e["type"] == "accepted")["generation"]
            streaming.until(lambda e: e["type"] == "token")
            postgres.stop()
            other.send(type="message", content="Still there?", temperature=0, max_tokens=8)
            refused = other.until(lambda e: e["type"] == "error", timeout=30)
            assert refused["code"] == "database_unavailable", refused
            postgres.start()
            back = time.monotonic()
            next_done = None
            while next_done is None and time.monotonic() - back < 30:
                other.send(type="message", content="And now?", temperature=0, max_tokens=8)
                event = other.until(lambda e: e["type"] in ("done", "error"), timeout=30)
                if event["type"] == "done":
                    next_done = event
                else:
                    assert event["code"] == "database_unavailable", event
                    time.sleep(0.5)
            next_after = time.monotonic() - back
            done = streaming.until(lambda e: e["type"] == "done", timeout=120)
        with psycopg.connect(database.replace("postgres://", "postgresql://")) as db:
            row = db.execute(
                "SELECT status, output, completion_tokens FROM inference_generation WHERE id = %s",
                (generation_id,),
            ).fetchone()
    finally:
        postgres.remove()
    assert done["status"] == "done" and row == ("done", done["text"], 400), (done, row)
    assert stream_text(streaming.events) == done["text"]
    assert_in_order(streaming.events)
    assert next_done is not None and next_done["status"] == "done", other.events[-5:]
    print(f"PostgreSQL back -> the next message's reply done in {next_after:.1f} s")
    assert next_after < 30
