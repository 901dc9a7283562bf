"""Metrics through the real code paths, in this process (no multiprocess folder here; the
live test tests/test_metrics_live.py gathers them across a worker and a web process):
an ended generation's counters and histograms, the gauges read at scrape time from the
database and the heartbeats, moderation verdicts, model loads, WebSocket connections, and
who may read /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DIRECT_QUEUE, RUN_ID
from webapp.chat.consumers import ChatConsumer
from webapp.inference import liveness
from webapp.inference import services as inference
from webapp.inference.models import Generation, Status
from webapp.moderation import services as moderation
from webapp.operations import folder, host_exporter, metrics, worker_status
from webapp.private_redis import free_port
from workers import model_cache

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def queued(user: Any, model: Any) -> Generation:
    return inference.create_generation(
        user=user, model=model, task="chat", input={"messages": []}, params={}
    )


def test_an_ended_generation_is_counted_once_with_its_tokens_and_times(
    alice: Any, chat_model: Any, django_capture_on_commit_callbacks: Any
) -> None:
    chat = {"model": "tiny-llama", "task": "chat"}
    before = {
        "done": value("atelier_requests_total", **chat, outcome="done"),
        "prompt": value("atelier_prompt_tokens_total", **chat),
        "generated": value("atelier_generation_tokens_total", **chat),
        "ttft": value("atelier_time_to_first_token_seconds_count", **chat),
        "queue": value(
            "atelier_request_queue_time_seconds_count", model="tiny-llama", queue=DIRECT_QUEUE
        ),
        "tpot": value("atelier_time_per_output_token_seconds_count", model="tiny-llama"),
        "e2e": value("atelier_e2e_request_latency_seconds_count", **chat, outcome="done"),
        "ttft_sum": value("atelier_time_to_first_token_seconds_sum", **chat),
        "e2e_sum": value("atelier_e2e_request_latency_seconds_sum", **chat, outcome="done"),
    }
    generation = queued(alice, chat_model)
    assert inference.claim_next(DIRECT_QUEUE, worker="w1") is not None
    inference.mark_first_token(generation.pk)
    with django_capture_on_commit_callbacks(execute=True):
        inference.finish(
            generation.pk,
            status=Status.DONE,
            output="Hello there",
            prompt_tokens=7,
            completion_tokens=5,
            worker="w1",
        )
    row = Generation.objects.get(pk=generation.pk)
    assert value("atelier_requests_total", **chat, outcome="done") == before["done"] + 1
    assert value("atelier_prompt_tokens_total", **chat) == before["prompt"] + 7
    assert value("atelier_generation_tokens_total", **chat) == before["generated"] + 5
    assert value("atelier_time_to_first_token_seconds_count", **chat) == before["ttft"] + 1
    assert (
        value("atelier_request_queue_time_seconds_count", model="tiny-llama", queue=DIRECT_QUEUE)
        == before["queue"] + 1
    )
    assert (
        value("atelier_time_per_output_token_seconds_count", model="tiny-llama")
        == before["tpot"] + 1
    )
    assert (
        value("atelier_e2e_request_latency_seconds_count", **chat, outcome="done")
        == before["e2e"] + 1
    )
    # What was observed is the row's own times.
    assert row.first_token_at is not None and row.finished_at is not None
    ttft_sum = value("atelier_time_to_first_token_seconds_sum", **chat) - before["ttft_sum"]
    assert ttft_sum == pytest.approx((row.first_token_at - row.queued_at).total_seconds())
    e2e_sum = value("atelier_e2e_request_latency_seconds_sum", **chat, outcome="done")
    assert e2e_sum - before["e2e_sum"] == pytest.approx(
        (row.finished_at - row.queued_at).total_seconds()
    )


def test_a_generation_stopped_in_the_queue_counts_as_stopped_without_a_first_token(
    alice: Any, chat_model: Any, django_capture_on_commit_callbacks: Any
) -> None:
    chat = {"model": "tiny-llama", "task": "chat"}
    stopped = value("atelier_requests_total", **chat, outcome="stopped")
    ttft = value("atelier_time_to_first_token_seconds_count", **chat)
    generation = queued(alice, chat_model)
    with django_capture_on_commit_callbacks(execute=True):
        inference.stop(generation.pk)
    assert value("atelier_requests_total", **chat, outcome="stopped") == stopped + 1
    assert value("atelier_time_to_first_token_seconds_count", **chat) == ttft


def test_metrics_are_closed_unless_a_token_or_an_address_is_configured(
    client: Client, settings: Any
) -> None:
    settings.ATELIER_METRICS_TOKEN, settings.ATELIER_METRICS_ALLOW = "", []
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404

    settings.ATELIER_METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": TOKEN}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    settings.ATELIER_METRICS_TOKEN, settings.ATELIER_METRICS_ALLOW = "", ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403  # the test client is 127.0.0.1
    settings.ATELIER_METRICS_ALLOW = ["not-an-address", "127.0.0.0/8"]
    assert client.get("/metrics").status_code == 200


def test_waiting_running_workers_and_batches_are_read_when_scraped(
    client: Client, settings: Any, alice: Any, chat_model: Any
) -> None:
    settings.ATELIER_METRICS_TOKEN = TOKEN
    for _ in range(3):
        queued(alice, chat_model)
    assert inference.claim_next(DIRECT_QUEUE, worker="w1") is not None
    name = f"metrics-test-{RUN_ID}"
    loads = value("atelier_model_loads_total", model="tiny-llama", outcome="loaded")
    model_cache.clear()  # an earlier test may have left it loaded: this load is counted
    try:
        loaded = model_cache.get_model(chat_model)  # the tiny Llama, with its batcher
        liveness.beat(name, [DIRECT_QUEUE], {1}, slots=loaded.batcher.max_batch)
        worker_status.publish(name, model_cache.held())
        samples = scrape(client, Authorization=f"Bearer {TOKEN}")
    finally:
        liveness.forget(name)
        model_cache.clear()
    model_queue = (("model", "tiny-llama"), ("queue", DIRECT_QUEUE))
    assert samples[("atelier_requests_waiting", model_queue)] == 2
    assert samples[("atelier_requests_running", model_queue)] == 1
    assert samples[("atelier_live_workers", ())] >= 1
    assert samples[("atelier_queue_workers", (("queue", DIRECT_QUEUE),))] == 1
    batch = (("model", "tiny-llama"),)
    assert samples[("atelier_batch_capacity", batch)] == loaded.batcher.max_batch > 1
    assert samples[("atelier_batch_rows", batch)] == 0  # nothing decoding in this process
    assert value("atelier_model_loads_total", model="tiny-llama", outcome="loaded") == loads + 1
    assert ("atelier_requests_total", ()) not in samples  # counters carry their labels


def test_a_model_that_fails_to_load_is_counted(chat_model: Any, tmp_path: Path) -> None:
    chat_model.source = str(tmp_path / "missing")
    failed = value("atelier_model_loads_total", model="tiny-llama", outcome="failed")
    with pytest.raises(Exception, match="missing"):
        model_cache.get_model(chat_model)
    assert value("atelier_model_loads_total", model="tiny-llama", outcome="failed") == failed + 1


def test_moderation_verdicts_are_counted_by_direction_action_and_category(alice: Any) -> None:
    allowed = value(
        "atelier_moderation_verdicts_total", direction="input", action="allow", category="none"
    )
    assert not moderation.check_input(alice, "What a lovely morning", task="chat").blocked
    assert (
        value(
            "atelier_moderation_verdicts_total", direction="input", action="allow", category="none"
        )
        == allowed + 1
    )
    checked = moderation.check_input(alice, "I will kill you", task="chat")
    assert checked.blocked
    labels = {"direction": "input", "action": "block", "category": checked.category}
    assert value("atelier_moderation_verdicts_total", **labels) >= 1


@pytest.mark.usefixtures("close_thread_connections")
async def test_open_websockets_are_counted_until_they_close(alice: Any) -> None:
    open_before = value("atelier_websocket_connections", route="chat")
    opened = value("atelier_websocket_connections_opened_total", route="chat")
    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = alice
    assert (await communicator.connect())[0]
    assert value("atelier_websocket_connections", route="chat") == open_before + 1
    await communicator.disconnect()
    assert value("atelier_websocket_connections", route="chat") == open_before
    assert value("atelier_websocket_connections_opened_total", route="chat") == opened + 1


def test_the_run_command_empties_the_metrics_folder_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(folder.VARIABLE, "")  # unset for prepare(); restored (unset) after
    stale = tmp_path / "metrics" / "counter_123.db"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    prepared = folder.prepare(tmp_path)
    assert prepared == tmp_path / "metrics" and not stale.exists()
    assert os.environ[folder.VARIABLE] == str(prepared)


def test_a_killed_childs_open_websockets_leave_the_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web process killed outright runs no exit handler: its live gauge files stay until
    the run command, which restarts it, drops them (`folder.forget_process`)."""
    monkeypatch.setenv(folder.VARIABLE, str(tmp_path))
    child = subprocess.Popen(  # a web process of this host with two sockets open
        [
            sys.executable,
            "-c",
            "import time, django; django.setup(); from webapp.operations import metrics; "
            "metrics.WEBSOCKETS.labels(route='chat').inc(2); print('open', flush=True); "
            "time.sleep(60)",
        ],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "open"
    finally:
        child.kill()
        child.wait()
    live = list(tmp_path.glob(f"gauge_livesum_*-{child.pid}.db"))
    assert live, sorted(p.name for p in tmp_path.iterdir())
    folder.forget_process(child.pid)
    assert not any(path.exists() for path in live)


def test_a_worker_hosts_exporter_serves_its_metrics_under_the_same_rules(settings: Any) -> None:
    settings.ATELIER_METRICS_TOKEN, settings.ATELIER_METRICS_ALLOW = TOKEN, []
    metrics.model_load_failed("exported-model")
    server = host_exporter.start(port=free_port(), host="127.0.0.1")
    assert server is not None
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 403
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    families = {family.name for family in text_string_to_metric_families(text)}
    assert 'atelier_model_loads_total{model="exported-model",outcome="failed"}' in text
    assert "atelier_requests_waiting" not in families  # read at scrape time by the web only
    assert host_exporter.start(port=0) is None  # not asked for: no exporter
