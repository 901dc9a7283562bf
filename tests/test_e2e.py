"""End to end with real processes: a Celery worker process and Redis run the reply that
the consumer streams; the stored message is checked afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from tests.conftest import WORKER_QUEUE
from tests.processes import celery_worker
from webapp.chat.consumers import ChatConsumer
from webapp.chat.models import Message
from webapp.inference.models import Generation, Status

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_connections"),
]


@pytest.fixture(scope="module")
def worker(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with celery_worker(test_db_env, [WORKER_QUEUE], log):
        yield log


@pytest.fixture
def worker_model(chat_model: Any) -> Any:
    chat_model.queue = WORKER_QUEUE
    chat_model.save()
    return chat_model


async def start_chat(user: Any, **message: Any) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    """Connect as user, send a message, and return the socket and its accepted event."""
    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = user
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "message", **message})
    accepted = await communicator.receive_json_from(timeout=10)
    assert accepted["type"] == "accepted", accepted
    return communicator, accepted


async def receive_stream(communicator: WebsocketCommunicator, timeout: float) -> list[Any]:
    """The stream's events up to done, leaving out the watcher's (queue, running)."""
    events: list[Any] = []
    while not events or events[-1]["type"] != "done":
        event = await communicator.receive_json_from(timeout=timeout)
        if "seq" in event:
            events.append(event)
    return events


async def test_reply_streams_from_a_real_worker_process(
    alice: Any, worker_model: Any, worker: Path
) -> None:
    communicator, accepted = await start_chat(
        alice, content="Tell me a story", temperature=0.8, seed=7, max_tokens=24
    )
    events = await receive_stream(communicator, timeout=60)
    await communicator.disconnect()

    done = events[-1]
    assert done["status"] == "done", (done, worker.read_text()[-2000:])
    assert events[0]["type"] == "status"
    streamed = "".join(e["text"] for e in events if e["type"] == "token")
    generation = await Generation.objects.aget(pk=accepted["generation"])
    assert generation.status == Status.DONE and generation.output == streamed and streamed
    assert 0 < generation.completion_tokens <= 24
    assert (
        generation.queued_at
        <= generation.started_at
        <= generation.first_token_at
        <= generation.finished_at
    )
    message = await Message.objects.select_related("generation").aget(
        pk=accepted["assistant_message"]
    )
    assert message.text == streamed


async def test_stop_ends_a_running_generation_promptly(
    alice: Any, worker_model: Any, worker: Path
) -> None:
    # A long request (shortened to the tiny model's context), so it is still running when stopped.
    communicator, accepted = await start_chat(
        alice, content="Go on and on", temperature=1.0, seed=1, max_tokens=4000
    )
    first_token = None
    while first_token is None:
        event = await communicator.receive_json_from(timeout=60)
        if event["type"] == "token":
            first_token = event
        assert event["type"] != "done", event
    await communicator.send_json_to({"type": "stop", "generation": accepted["generation"]})
    events = await receive_stream(communicator, timeout=30)
    await communicator.disconnect()
    assert events[-1]["status"] == "stopped"
    generation = await Generation.objects.aget(pk=accepted["generation"])
    assert generation.status == Status.STOPPED and generation.completion_tokens < 4000
