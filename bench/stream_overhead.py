"""Streaming overhead: tokens/s through the whole stack versus generate() alone.

With the starter chat model (SmolLM2-135M-Instruct, int8_dynamic on CPU) and a fixed
prompt, measure in one run on one machine:

* generate() alone, in this process (the baseline);
* the same model behind the whole stack: WebSocket -> Daphne -> Django -> Celery (Redis)
  -> worker -> TokenStream -> Redis stream -> Daphne relay -> WebSocket client;
* and through the OpenAI-compatible API: POST /v1/chat/completions with `stream: true`
  (an API key) -> the same road -> server-sent events, read as they come;

and print each, their ratio to the baseline (target: >= 0.95) and the time to first
token. In-process layers in between show where any lost time goes: TokenStream.run() as
the worker calls it, then with the worker's Redis stop-flag poll and StreamWriter; and, as
a diagnostic, generate() in a new thread (how iterating a TokenStream runs it).

Everything runs on throwaway state: a temporary ATELIER_VAR_DIR (SQLite database, logs),
a private Redis unless REDIS_URL is set, and a Redis key prefix and Celery queue of this
run's own. Only the prepared starter model is shared, from var/models.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/stream_overhead.py [--tokens 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

PROMPT = "Write a long story about a lighthouse keeper."
MODELS_DIR = ROOT / "var" / "models"
MODEL_NAME = "SmolLM2-135M-Instruct"
TARGET_RATIO = 0.95
BUSY_LOAD = 0.25  # load average per core above which a warning says the figures are noisy
MAX_SPREAD = 1.2  # fastest/slowest run of a layer above which a warning says the same
MESSAGE_TIMEOUT = 300.0  # seconds for one message, the first one loading the model


@dataclass
class Layer:
    """Timed runs of one way of producing the reply."""

    name: str
    rates: list[float] = field(default_factory=list)  # tokens/s per run
    first_token: list[float] = field(default_factory=list)  # seconds per run
    tokens: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def ttft(self) -> float | None:
        return statistics.median(self.first_token) if self.first_token else None


@dataclass
class MessageResult:
    completion_tokens: int
    seconds: float  # send -> done
    first_token_seconds: float | None  # send -> first token event
    token_events: int
    status: str
    finish_reason: str
    text: str


# --- set-up -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate (N)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per layer")
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the in-process TokenStream layers (faster; only baseline and stack)",
    )
    parser.add_argument(
        "--keep-temp", action="store_true", help="keep the temporary directory (logs, database)"
    )
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.runs < 1:
        parser.error("--tokens and --runs must be at least 1")
    return args


def configure_environment(var_dir: Path, run_id: str) -> Any:
    """Environment for this process and its children; returns the private Redis, if any.

    Must run before Django settings are imported: they are read from the environment.
    """
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["ATELIER_VAR_DIR"] = str(var_dir)
    os.environ["ATELIER_MODELS_DIR"] = str(MODELS_DIR)
    os.environ["ATELIER_REDIS_PREFIX"] = f"atelier-bench-{run_id}"
    os.environ.pop("DATABASE_URL", None)  # the SQLite file in var_dir, never the real one
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("REDIS_URL"):
        return None
    from webapp.private_redis import PrivateRedis

    private = PrivateRedis(var_dir / "redis")
    os.environ["REDIS_URL"] = private.start()
    return private


def setup_database(queue: str) -> tuple[Any, Any]:
    """Migrate the throwaway database; create a user and the starter model's catalog entry."""
    import django

    django.setup()
    from django.core.management import call_command

    from generation.starter import prepare_smollm2
    from webapp.accounts.models import User
    from webapp.catalog.models import ModelEntry

    prepared = prepare_smollm2(MODELS_DIR)
    call_command("migrate", verbosity=0)
    user = User.objects.create_user(
        username="bench", password=secrets.token_urlsafe(16), role="user"
    )
    entry = ModelEntry.objects.create(
        name=MODEL_NAME,
        task="chat",
        source=str(prepared.folder),
        quantization="int8_dynamic",
        device="cpu",
        queue=queue,
        is_default=True,
    )
    return user, entry


# --- in-process layers ----------------------------------------------------------------------


def prompt_ids_for(loaded: Any, tokens: int) -> list[int]:
    """The same prompt ids the worker builds (no system prompt, one user turn)."""
    from generation.prompts import build_chat_input

    return build_chat_input(
        loaded.tokenizer,
        [{"role": "user", "content": PROMPT}],
        system="",
        max_prompt_tokens=max(16, loaded.context_length - tokens),
        model_name=loaded.spec.name,
    )


def time_generate(loaded: Any, prompt_ids: list[int], tokens: int) -> tuple[float, str]:
    """One greedy generate() call of exactly `tokens` new tokens: (seconds, text)."""
    import torch

    input_ids = torch.tensor([prompt_ids], device=loaded.device)
    with torch.inference_mode():
        started = time.perf_counter()
        output = loaded.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
        seconds = time.perf_counter() - started
    new = output[0, len(prompt_ids) :]
    assert len(new) == tokens, f"generate() made {len(new)} tokens, not {tokens}"
    return seconds, loaded.tokenizer.decode(new, skip_special_tokens=True)


def time_generate_in_thread(loaded: Any, prompt_ids: list[int], tokens: int) -> float:
    """time_generate() in a new thread (how iterating a TokenStream runs it): seconds.

    A diagnostic: with libgomp (torch's CPU builds) a second thread's OpenMP team next to
    the main thread's makes more OpenMP threads than cores, and libgomp then stops
    spinning at its barriers, which slows small models down a lot."""
    box: list[float] = []
    thread = threading.Thread(
        target=lambda: box.append(time_generate(loaded, prompt_ids, tokens)[0]), name="bench"
    )
    thread.start()
    thread.join()
    if not box:
        raise RuntimeError("generate() in a thread failed (see the traceback above)")
    return box[0]


def time_token_stream(
    loaded: Any, prompt_ids: list[int], tokens: int, *, worker_loop: bool, fake_id: int
) -> tuple[float, float | None, int, str]:
    """The library's TokenStream.run(), optionally wrapped as workers/runner.py wraps it
    (the Redis stop flag polled at every step, pieces to a StreamWriter's Redis stream).

    Returns (seconds, first-token seconds, completion tokens, text)."""
    from generation.specs import SamplingParams
    from generation.streaming import TokenStream
    from webapp.inference import streams

    params = SamplingParams(temperature=0.0, max_new_tokens=tokens)
    if worker_loop:
        streams.delete_streams([fake_id])
        writer = streams.StreamWriter(fake_id)
        stream = TokenStream(
            loaded, prompt_ids, params, should_stop=lambda: streams.stop_requested(fake_id)
        )
    else:
        stream = TokenStream(loaded, prompt_ids, params)
    pieces: list[str] = []
    started = time.perf_counter()
    if worker_loop:
        stats = stream.run(writer.add)
        writer.flush()
        writer.done("done", finish_reason=stats.finish_reason)
    else:
        stats = stream.run(pieces.append)
    seconds = time.perf_counter() - started
    if worker_loop:
        streams.sync_redis().delete(streams.stream_key(fake_id))
    return seconds, stats.first_token_seconds, stats.completion_tokens, stream.text


def measure_in_process(
    spec: Any, tokens: int, runs: int, breakdown: bool
) -> tuple[list[Layer], dict[str, Any]]:
    """The baseline (generate() alone) and, with `breakdown`, the in-process layers."""
    import torch

    from generation.loading import load_causal_lm

    loaded = load_causal_lm(spec)
    info: dict[str, Any] = {"load_seconds": loaded.load_seconds}
    prompt_ids = prompt_ids_for(loaded, tokens)
    info["prompt_tokens"] = len(prompt_ids)

    baseline = Layer("generate() alone")
    time_generate(loaded, prompt_ids, tokens)  # warm-up
    for _ in range(runs):
        seconds, text = time_generate(loaded, prompt_ids, tokens)
        baseline.rates.append(tokens / seconds)
        baseline.tokens.append(tokens)
    info["baseline_text"] = text
    info["torch_threads"] = torch.get_num_threads()

    stream_layer = Layer("TokenStream.run(), in process")
    loop_layer = Layer("+ Redis stop flag + StreamWriter")
    # One TokenStream run always, for the reference first-token time.
    wanted = [(stream_layer, False)] + ([(loop_layer, True)] if breakdown else [])
    for layer, worker_loop in wanted:
        for run in range(runs if breakdown else 1):
            seconds, first, count, text = time_token_stream(
                loaded, prompt_ids, tokens, worker_loop=worker_loop, fake_id=900_000_000 + run
            )
            layer.rates.append(count / seconds)
            layer.tokens.append(count)
            if first is not None:
                layer.first_token.append(first)
        info["stream_text"] = text
    info["stream_ttft"] = stream_layer.ttft
    layers = [baseline, stream_layer]
    if breakdown:
        layers.append(loop_layer)
        in_thread = Layer("(diagnostic) generate() in a new thread")
        for _ in range(runs):
            in_thread.rates.append(tokens / time_generate_in_thread(loaded, prompt_ids, tokens))
            in_thread.tokens.append(tokens)
        layers.append(in_thread)

    del loaded
    gc.collect()
    return layers, info


# --- the whole stack -------------------------------------------------------------------------


def send_api_requests(base_url: str, secret: str, tokens: int, count: int) -> list[MessageResult]:
    """`count` streamed /v1/chat/completions requests one after another, each read as
    server-sent events as they arrive (http.client: no client library's parsing in the
    figures); time each from sending to `data: [DONE]`."""
    import http.client
    from urllib.parse import urlparse

    address = urlparse(base_url)
    results = []
    for _ in range(count):
        body = json.dumps(
            {
                "model": MODEL_NAME,
                "messages": [{"role": "user", "content": PROMPT}],
                "temperature": 0,
                "max_tokens": tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        connection = http.client.HTTPConnection(
            address.hostname or "127.0.0.1", address.port, timeout=MESSAGE_TIMEOUT
        )
        sent = time.perf_counter()
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=body,
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"API answered {response.status}: {response.read()[:500]!r}")
        first: float | None = None
        events = 0
        text: list[str] = []
        usage: dict[str, Any] = {}
        finish = ""
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue  # blank separators, keep-alive and queue comments
            if line == "data: [DONE]":
                break
            chunk = json.loads(line[len("data: ") :])
            if "error" in chunk:
                raise RuntimeError(f"API stream error: {chunk['error']}")
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    events += 1
                    text.append(piece)
                    if first is None:
                        first = time.perf_counter() - sent
                finish = choice.get("finish_reason") or finish
        seconds = time.perf_counter() - sent
        connection.close()
        results.append(
            MessageResult(
                completion_tokens=int(usage.get("completion_tokens", 0)),
                seconds=seconds,
                first_token_seconds=first,
                token_events=events,
                status="done",
                finish_reason=finish,
                text="".join(text),
            )
        )
    return results


def layer_of(name: str, timed: list[MessageResult]) -> Layer:
    layer = Layer(name)
    for result in timed:
        layer.rates.append(result.completion_tokens / result.seconds)
        layer.tokens.append(result.completion_tokens)
        if result.first_token_seconds is not None:
            layer.first_token.append(result.first_token_seconds)
        layer.notes.append(f"{result.token_events} token events, {result.finish_reason}")
    return layer


async def send_messages(
    ws_url: str, origin: str, cookie: str, model_id: int, tokens: int, count: int
) -> list[MessageResult]:
    """Send `count` messages one after another on one WebSocket; time each reply."""
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    results = []
    async with connect(
        ws_url, origin=Origin(origin), additional_headers={"Cookie": cookie}, proxy=None
    ) as ws:
        for _ in range(count):
            frame = {
                "type": "message",
                "content": PROMPT,
                "temperature": 0,
                "max_tokens": tokens,
                "model": model_id,
            }
            sent = time.perf_counter()
            await ws.send(json.dumps(frame))
            first: float | None = None
            events = 0
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout=MESSAGE_TIMEOUT)
                now = time.perf_counter()
                event = json.loads(raw)
                kind = event.get("type")
                if kind == "error":
                    raise RuntimeError(f"server error: {event}")
                if kind == "token":
                    events += 1
                    if first is None:
                        first = now - sent
                elif kind == "done":
                    if event.get("status") != "done":
                        raise RuntimeError(f"generation did not finish well: {event}")
                    results.append(
                        MessageResult(
                            completion_tokens=event["usage"]["completion_tokens"],
                            seconds=now - sent,
                            first_token_seconds=first,
                            token_events=events,
                            status=event["status"],
                            finish_reason=event["finish_reason"],
                            text=event.get("text", ""),
                        )
                    )
                    break
    return results


def measure_stack(
    user: Any, entry: Any, queue: str, var_dir: Path, tokens: int, runs: int
) -> tuple[Layer, Layer, dict[str, Any]]:
    """The WebSocket layer and the API (SSE) layer, on one web server and worker."""
    from django.db import connection

    from tests.processes import (
        celery_worker,
        database_url,
        process_env,
        session_cookie,
        web_server,
    )
    from webapp.api.keys import create_key

    env = process_env(
        DATABASE_URL=database_url(connection.settings_dict),
        ATELIER_VAR_DIR=str(var_dir),
        ATELIER_MODELS_DIR=str(MODELS_DIR),
    )
    cookie = session_cookie(user)
    secret = create_key(user, "bench").secret
    connection.close()  # the children use the SQLite file; hold nothing open on it
    info: dict[str, Any] = {}
    with (
        celery_worker(env, [queue], var_dir / "worker.log") as worker,
        web_server(env, var_dir / "web.log") as base_url,
    ):
        info["worker_pid"] = worker.pid
        ws_url = base_url.replace("http://", "ws://") + "/ws/chat/"
        results = asyncio.run(
            send_messages(ws_url, base_url, cookie, entry.pk, tokens, count=1 + runs)
        )
        api_results = send_api_requests(base_url, secret, tokens, count=runs)
    warm, timed = results[0], results[1:]
    info["warmup_seconds"] = warm.seconds
    layer = layer_of("whole stack (WebSocket)", timed)
    api_layer = layer_of("whole stack (API, SSE)", api_results)
    info["api_text"] = api_results[-1].text
    info["stack_text"] = timed[-1].text
    info["token_events"] = [r.token_events for r in timed]
    info["finish_reasons"] = sorted({r.finish_reason for r in timed})
    return layer, api_layer, info


# --- report -----------------------------------------------------------------------------


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def report(
    args: argparse.Namespace,
    layers: list[Layer],
    stack: Layer,
    api: Layer,
    info: dict[str, Any],
) -> None:
    import torch
    from django.conf import settings

    baseline = layers[0]
    ratio = stack.rate / baseline.rate
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = (
        f"{os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__}, "
        f"torch threads: {info['torch_threads']}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    rows: list[tuple[str, str, str, str, str]] = []
    main = [layer for layer in layers if not layer.name.startswith("(diagnostic)")]
    diagnostics = [layer for layer in layers if layer.name.startswith("(diagnostic)")]
    for layer in [*main, stack, api, *diagnostics]:
        rows.append(
            (
                layer.name,
                f"{layer.rate:.1f}",
                f"{layer.rate / baseline.rate:.3f}",
                fmt_seconds(layer.ttft),
                ",".join(str(t) for t in layer.tokens),
            )
        )
    header = ("layer", "tokens/s (median)", "vs generate()", "first token", "tokens per run")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)

    print()
    print("Streaming overhead: whole stack vs generate() alone")
    print(f"  model      {MODEL_NAME}, int8_dynamic, cpu ({info['prompt_tokens']} prompt tokens)")
    print(f"  prompt     {PROMPT!r}, greedy")
    print(f"  N          {args.tokens} new tokens; {args.runs} timed runs per layer (median)")
    print(f"  machine    {machine}; Python {platform.python_version()}")
    print(f"  date       {date}")
    print(f"  flush      ATELIER_STREAM_FLUSH_MS={settings.ATELIER_STREAM_FLUSH_MS}")
    print(
        "  load avg   {load_before:.2f} at start, {load_mid:.2f} before the stack, "
        "{load_after:.2f} at the end (1 min)".format(**info)
    )
    print()
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))
    print()
    print(f"  baseline generate()   {baseline.rate:.1f} tokens/s  (runs: {_rates(baseline)})")
    print(f"  whole stack           {stack.rate:.1f} tokens/s  (runs: {_rates(stack)})")
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"  ratio stack/baseline  {ratio:.3f}  (target >= {TARGET_RATIO}: {verdict})")
    api_ratio = api.rate / baseline.rate
    api_verdict = "met" if api_ratio >= TARGET_RATIO else "NOT met"
    print(f"  API over SSE          {api.rate:.1f} tokens/s  (runs: {_rates(api)})")
    print(f"  ratio API/baseline    {api_ratio:.3f}  (target >= {TARGET_RATIO}: {api_verdict})")
    print(f"  stack first token     {fmt_seconds(stack.ttft)} (send -> first token event)")
    print(f"  API first token       {fmt_seconds(api.ttft)} (request -> first content chunk)")
    print(f"  TokenStream 1st token {fmt_seconds(info['stream_ttft'])} (in process, reference)")
    print(
        f"  stack token events    {info['token_events']} per reply; "
        f"finish: {', '.join(info['finish_reasons'])}"
    )
    print(
        f"  model load            {info['load_seconds']:.1f} s here; "
        f"stack warm-up message (load + quantize + reply) {info['warmup_seconds']:.1f} s"
    )
    if info["load_before"] > BUSY_LOAD * (os.cpu_count() or 1):
        print(
            "  WARNING: the machine was busy before the benchmark started (load average "
            f"{info['load_before']:.2f} on {os.cpu_count()} cores); other processes compete "
            "for the cores and the figures, the ratio above all, are unreliable"
        )
    uneven = [
        f"{layer.name} ({max(layer.rates) / min(layer.rates):.2f}x)"
        for layer in [*layers, stack, api]
        if len(layer.rates) > 1 and max(layer.rates) > MAX_SPREAD * min(layer.rates)
    ]
    if uneven:
        print(
            f"  WARNING: runs of one layer differ by more than {MAX_SPREAD}x: "
            f"{', '.join(uneven)}; something else probably ran on the machine (with torch's "
            "OpenMP threads on every core, any other busy process slows decoding several "
            "times over); rerun on a quiet machine"
        )
    same = info["stack_text"] == info["stream_text"]
    print(f"  same text as TokenStream in process: {'yes' if same else 'NO'}")
    api_same = info["api_text"] == info["stream_text"]
    print(f"  API: same text as TokenStream in process: {'yes' if api_same else 'NO'}")
    if any(t != args.tokens for t in stack.tokens):
        print(
            f"  note: the stack stopped before {args.tokens} tokens (EOS); its tokens/s "
            "uses the completion_tokens it reported"
        )
    print()
    print("Markdown for docs/benchmarks.md:")
    print()
    print(
        "| Date | Machine | Model | N | Runs | generate() tok/s | Stack tok/s | Ratio "
        "| API (SSE) tok/s | API ratio | Stack TTFT | TokenStream TTFT |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {date[:10]} | {os.cpu_count()} cores, torch {torch.__version__} "
        f"| {MODEL_NAME} int8_dynamic cpu | {args.tokens} | {args.runs} "
        f"| {baseline.rate:.1f} | {stack.rate:.1f} | {ratio:.3f} "
        f"| {api.rate:.1f} | {api_ratio:.3f} "
        f"| {fmt_seconds(stack.ttft)} | {fmt_seconds(info['stream_ttft'])} |"
    )


def _rates(layer: Layer) -> str:
    return ", ".join(f"{r:.1f}" for r in layer.rates)


# --- main ---------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_dir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    queue = f"bench-{run_id}"
    with throwaway_dir(args.keep_temp) as var_dir:
        private_redis = configure_environment(var_dir, run_id)
        try:
            user, entry = setup_database(queue)
            load_before = os.getloadavg()[0]
            progress(f"measuring in process (load average {load_before:.2f})")
            layers, info = measure_in_process(
                entry.spec(), args.tokens, args.runs, breakdown=not args.no_breakdown
            )
            info["load_before"] = load_before
            info["load_mid"] = os.getloadavg()[0]
            progress(f"measuring the whole stack (load average {info['load_mid']:.2f})")
            try:
                stack, api, stack_info = measure_stack(
                    user, entry, queue, var_dir, args.tokens, args.runs
                )
            except Exception:
                for name in ("worker.log", "web.log"):
                    log = var_dir / name
                    if log.is_file():
                        print(f"--- {name} (end) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
                raise
            info.update(stack_info)
            info["load_after"] = os.getloadavg()[0]
            report(args, layers, stack, api, info)
        finally:
            from django.db import connections

            connections.close_all()
            if private_redis is not None:
                private_redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
