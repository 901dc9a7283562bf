"""/metrics gathered across real processes: a Daphne web process and a Celery worker share
one multiprocess folder; a chat reply through them moves the counters of both by exactly
what the stored Generation says, and /metrics refuses a scrape without the token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.conftest import RUN_ID
from tests.processes import celery_worker, session_cookie, web_server
from webapp.catalog.models import ModelEntry
from webapp.inference.models import Generation, Status

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUEUE = f"metrics-live-{RUN_ID}"
TOKEN = "live-metrics-token"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def stack(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A worker and a web process sharing a metrics folder of their own."""
    logs = tmp_path_factory.mktemp("metrics-live")
    env = {
        **test_db_env,
        "PROMETHEUS_MULTIPROC_DIR": str(logs / "metrics"),
        "ATELIER_METRICS_TOKEN": TOKEN,
    }
    with celery_worker(env, [QUEUE], logs / "worker.log"), web_server(env, logs / "web.log") as url:
        yield url


def scrape(url: str, token: str | None = TOKEN) -> Samples:
    request = urllib.request.Request(url + "/metrics")  # noqa: S310 - local test URL
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local test URL
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def refused(url: str, token: str | None) -> int:
    with pytest.raises(urllib.error.HTTPError) as error:
        scrape(url, token)
    return error.value.code


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_of_the_web_and_the_worker_move_by_what_a_reply_did(
    stack: str, alice: Any, endless_llama_dir: Path
) -> None:
    ModelEntry.objects.create(
        name="live-llama", task="chat", source=str(endless_llama_dir), queue=QUEUE, is_default=True
    )
    assert refused(stack, None) == 403
    assert refused(stack, "not-the-token") == 403
    before = scrape(stack)
    chat = {"model": "live-llama", "task": "chat"}

    with connect(
        stack.replace("http", "ws") + "/ws/chat/",
        origin=stack,  # type: ignore[arg-type]
        additional_headers={"Cookie": session_cookie(alice)},
        proxy=None,
    ) as socket:
        socket.send(json.dumps({"type": "message", "content": "Hello", "max_tokens": 12}))
        events = []
        while not events or events[-1].get("type") != "done":
            events.append(json.loads(socket.recv(timeout=120)))
            assert events[-1]["type"] != "error", events[-1]
        during = scrape(stack)
    accepted = next(e for e in events if e["type"] == "accepted")
    generation = Generation.objects.get(pk=accepted["generation"])
    assert generation.status == Status.DONE and generation.completion_tokens == 12
    after = scrape(stack)
    deadline = time.monotonic() + 30

    def settled(samples: Samples) -> bool:
        # The web process hears of the close a moment later, and the conversation's title
        # request (queued when the reply ended) runs after it: wait until it has ended, so
        # that the queue is empty and the worker writes nothing while the test database
        # is flushed.
        sockets = get(samples, "atelier_websocket_connections", route="chat")
        model_queue = {"model": "live-llama", "queue": QUEUE}
        busy = get(samples, "atelier_requests_waiting", **model_queue) + get(
            samples, "atelier_requests_running", **model_queue
        )
        return sockets == get(before, "atelier_websocket_connections", route="chat") and not busy

    while not settled(after):
        assert time.monotonic() < deadline, "a socket still counted or a request still waiting"
        time.sleep(0.2)
        after = scrape(stack)

    def moved(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    # The worker's: the outcome, the tokens and the times of the reply.
    assert moved("atelier_requests_total", **chat, outcome="done") == 1
    assert moved("atelier_generation_tokens_total", **chat) == generation.completion_tokens
    assert moved("atelier_prompt_tokens_total", **chat) == generation.prompt_tokens > 0
    assert moved("atelier_time_to_first_token_seconds_count", **chat) == 1
    assert moved("atelier_time_to_first_token_seconds_sum", **chat) == pytest.approx(
        (generation.first_token_at - generation.queued_at).total_seconds(),  # type: ignore[operator]
        abs=1e-3,
    )
    assert moved("atelier_e2e_request_latency_seconds_count", **chat, outcome="done") == 1
    # Per model, whatever the task: the reply and its conversation's title, which ended too.
    decoded = Generation.objects.filter(model_name="live-llama", completion_tokens__gt=1)
    assert moved("atelier_time_per_output_token_seconds_count", model="live-llama") == (
        decoded.count()
    )
    assert decoded.filter(task="chat_title").exists()
    assert moved("atelier_model_loads_total", model="live-llama", outcome="loaded") == 1
    # The web process's: the prompt screened, the socket opened (and open while it was).
    verdicts = {"direction": "input", "action": "allow", "category": "none"}
    assert moved("atelier_moderation_verdicts_total", **verdicts) >= 1
    assert moved("atelier_websocket_connections_opened_total", route="chat") == 1
    assert (
        get(during, "atelier_websocket_connections", route="chat")
        == get(before, "atelier_websocket_connections", route="chat") + 1
    )
    # Read when scraped: the live worker, and the model's queue (empty again).
    assert get(after, "atelier_live_workers") >= 1
    assert get(after, "atelier_queue_workers", queue=QUEUE) == 1
    assert get(after, "atelier_requests_waiting", model="live-llama", queue=QUEUE) == 0
