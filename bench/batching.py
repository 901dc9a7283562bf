"""Continuous batching through the whole stack: many people chatting at once.

With the starter chat model (SmolLM2-135M-Instruct; fp32 and int8_dynamic on CPU), for 1,
4, 8 and 16 concurrent requests of --tokens new tokens each (greedy, so every reply runs
the same way every time), measure in one run on one machine:

* the baseline: sequential generate() of the same requests in this process, one after
  another (what a worker without batching does), as aggregate tokens/s;
* the whole stack: one Daphne and one worker, and as many WebSocket clients as requests,
  each a user of its own; all but the last send at once, and the last sends once the
  others are streaming, so it joins a running batch mid-flight.

It prints, per concurrency: aggregate tokens/s (every token over the time from the first
send to the last done), each request's tokens/s (median and slowest), time to first
token p50/p95 over all requests and that of the late joiner, the ratio to one request
through the stack and to the sequential baseline, and whether each reply equals the one
generate() gives alone. Target on a 2-core CPU: 16 concurrent give at least 3x the
aggregate tokens/s of one.

Everything runs on throwaway state, as bench/stream_overhead.py does (a temporary
ATELIER_VAR_DIR with a SQLite database, a private Redis unless REDIS_URL is set, a Redis
prefix and a Celery queue of this run's own); only the prepared starter model is shared.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/batching.py [--tokens 128]
        [--concurrency 1,4,8,16] [--quantization none,int8_dynamic] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.stream_overhead import MODELS_DIR, configure_environment  # noqa: E402

MODEL_NAME = "SmolLM2-135M-Instruct"
TARGET_16_OVER_1 = 3.0
MESSAGE_TIMEOUT = 600.0
TOPICS = [
    "a lighthouse keeper",
    "a clockmaker in Prague",
    "the first snow of winter",
    "a cat who learns to read",
    "a journey across the desert",
    "an old library at night",
    "a robot that paints",
    "the last day of summer",
    "a baker and a dragon",
    "a letter lost at sea",
    "a garden on the moon",
    "a violin without strings",
    "a city under the ice",
    "two rival chess players",
    "a train that never stops",
    "the smallest island",
]


def prompt(index: int) -> str:
    return f"Write a long story about {TOPICS[index % len(TOPICS)]}."


@dataclass
class Reply:
    sent: float
    first: float | None
    done: float
    tokens: int
    text: str
    late: bool = False

    @property
    def ttft(self) -> float:
        return (self.first or self.done) - self.sent

    @property
    def rate(self) -> float:
        return self.tokens / max(1e-9, self.done - self.sent)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated counts")
    parser.add_argument("--quantization", default="none,int8_dynamic")
    parser.add_argument(
        "--baseline", type=int, default=4, help="requests in the sequential generate() baseline"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--store",
        action="store_true",
        help="save the figures on the catalog entries (of DATABASE_URL) serving the model "
        "folder, where the admin shows them beside max_batch",
    )
    args = parser.parse_args(argv)
    args.counts = [int(c) for c in args.concurrency.split(",")]
    args.modes = args.quantization.split(",")
    if args.tokens < 1 or min(args.counts) < 1:
        parser.error("--tokens and every concurrency must be at least 1")
    return args


def setup_database(modes: list[str], users: int, queue: str) -> tuple[list[Any], dict[str, Any]]:
    import django

    django.setup()
    from django.core.management import call_command

    from generation.starter import prepare_smollm2
    from webapp.accounts.models import User
    from webapp.catalog.models import ModelEntry

    prepared = prepare_smollm2(MODELS_DIR)
    call_command("migrate", verbosity=0)
    people = [
        User.objects.create_user(username=f"bench{i}", password=uuid.uuid4().hex, role="user")
        for i in range(users)
    ]
    entries = {
        mode: ModelEntry.objects.create(
            name=f"{MODEL_NAME} ({mode})",
            task="chat",
            source=str(prepared.folder),
            quantization=mode,
            device="cpu",
            queue=queue,
            is_default=mode == modes[0],
        )
        for mode in modes
    }
    return people, entries


def sequential_baseline(entry: Any, tokens: int, count: int) -> tuple[float, list[str]]:
    """generate() of the first `count` requests one after another: aggregate tokens/s,
    and each reply's text (what every request should get through the stack too)."""
    import gc

    from generation.loading import load_model
    from generation.prompts import build_chat_input
    from generation.specs import SamplingParams
    from generation.streaming import TokenStream

    loaded = load_model(entry.spec())
    params = SamplingParams(temperature=0.0, max_new_tokens=tokens)
    texts, total, seconds = [], 0, 0.0
    for index in range(count):
        ids = build_chat_input(
            loaded.tokenizer,
            [{"role": "user", "content": prompt(index)}],
            system="",
            max_prompt_tokens=loaded.context_length - tokens,
            model_name=loaded.spec.name,
        )
        stream = TokenStream(loaded, ids, params)
        started = time.perf_counter()
        stats = stream.run(lambda piece: None)
        seconds += time.perf_counter() - started
        total += stats.completion_tokens
        texts.append(stream.text)
    del loaded
    gc.collect()
    return total / seconds, texts


async def one_reply(
    ws_url: str, origin: str, cookie: str, model_id: int, index: int, tokens: int
) -> Reply:
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    async with connect(
        ws_url, origin=Origin(origin), additional_headers={"Cookie": cookie}, proxy=None
    ) as ws:
        frame = {
            "type": "message",
            "content": prompt(index),
            "temperature": 0,
            "max_tokens": tokens,
            "model": model_id,
        }
        sent = time.perf_counter()
        await ws.send(json.dumps(frame))
        first = None
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), timeout=MESSAGE_TIMEOUT))
            kind = event.get("type")
            if kind == "error":
                raise RuntimeError(f"server error: {event}")
            if kind == "token" and first is None:
                first = time.perf_counter()
            if kind == "done":
                if event.get("status") != "done":
                    raise RuntimeError(f"reply did not finish well: {event}")
                return Reply(
                    sent,
                    first,
                    time.perf_counter(),
                    event["usage"]["completion_tokens"],
                    event.get("text", ""),
                )


async def round_of(
    ws_url: str, origin: str, cookies: list[str], model_id: int, count: int, tokens: int
) -> list[Reply]:
    """`count` requests: all but the last at once, the last once the others stream."""
    first_wave = [
        asyncio.create_task(one_reply(ws_url, origin, cookies[i], model_id, i, tokens))
        for i in range(count - 1 if count > 1 else count)
    ]
    replies: list[Reply] = []
    if count > 1:
        await asyncio.sleep(0)
        # Wait until the first wave streams: poll the database for first tokens.
        from asgiref.sync import sync_to_async

        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while time.monotonic() < deadline:
            streaming = await sync_to_async(_streaming_count)()
            if streaming >= count - 1:
                break
            await asyncio.sleep(0.05)
        late = await one_reply(ws_url, origin, cookies[count - 1], model_id, count - 1, tokens)
        late.late = True
        replies.append(late)
    replies = [*(await asyncio.gather(*first_wave)), *replies]
    return replies


def _streaming_count() -> int:
    from webapp.inference.models import Generation, Status

    return Generation.objects.filter(status=Status.RUNNING, first_token_at__isnull=False).count()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def measure(args: argparse.Namespace, var_dir: Path, queue: str) -> dict[str, Any]:
    from django.db import connection

    from tests.processes import (
        celery_worker,
        database_url,
        process_env,
        session_cookie,
        web_server,
    )

    people, entries = setup_database(args.modes, max(args.counts), queue)
    figures: dict[str, Any] = {}
    baselines = {}
    for mode, entry in entries.items():
        print(f"[{mode}] sequential generate() of {args.baseline} requests…", file=sys.stderr)
        baselines[mode] = sequential_baseline(entry, args.tokens, args.baseline)
    cookies = [session_cookie(person) for person in people]
    env = process_env(
        DATABASE_URL=database_url(connection.settings_dict),
        ATELIER_VAR_DIR=str(var_dir),
        ATELIER_MODELS_DIR=str(MODELS_DIR),
        ATELIER_MAX_CONCURRENT_GENERATIONS="4",
    )
    connection.close()
    with (
        celery_worker(env, [queue], var_dir / "worker.log"),
        web_server(env, var_dir / "web.log") as base_url,
    ):
        ws_url = base_url.replace("http://", "ws://") + "/ws/chat/"
        for mode, entry in entries.items():
            rate, texts = baselines[mode]
            print(f"[{mode}] warming up the worker…", file=sys.stderr)
            asyncio.run(round_of(ws_url, base_url, cookies, entry.pk, 1, 4))
            rows: dict[int, dict[str, Any]] = {}
            for count in args.counts:
                print(f"[{mode}] {count} concurrent…", file=sys.stderr)
                replies = asyncio.run(
                    round_of(ws_url, base_url, cookies, entry.pk, count, args.tokens)
                )
                span = max(r.done for r in replies) - min(r.sent for r in replies)
                late = [r for r in replies if r.late]
                same = sum(
                    1 for i, r in enumerate(replies) if i < len(texts) and r.text == texts[i]
                )
                rows[count] = {
                    "aggregate": sum(r.tokens for r in replies) / span,
                    "per_request_median": statistics.median(r.rate for r in replies),
                    "per_request_slowest": min(r.rate for r in replies),
                    "ttft_p50": percentile([r.ttft for r in replies], 50),
                    "ttft_p95": percentile([r.ttft for r in replies], 95),
                    "late_ttft": late[0].ttft if late else None,
                    "tokens": sum(r.tokens for r in replies),
                    "same_as_alone": f"{same}/{min(len(texts), len(replies))}",
                }
            one = rows[min(rows)]["aggregate"]
            for row in rows.values():
                row["vs_one"] = row["aggregate"] / one
                row["vs_sequential"] = row["aggregate"] / rate
            figures[mode] = {"sequential": rate, "rounds": rows}
    return figures


def report(args: argparse.Namespace, figures: dict[str, Any]) -> bool:
    import torch

    machine = platform.processor() or platform.machine()
    print(
        f"\nbench/batching.py  {time.strftime('%Y-%m-%d')}  {machine}, {os.cpu_count()} cores,"
        f" torch {torch.__version__} threads {torch.get_num_threads()}"
    )
    print(f"{MODEL_NAME}, greedy, {args.tokens} new tokens per request, one worker\n")
    ok = True
    for mode, found in figures.items():
        print(f"[{mode}] sequential generate(): {found['sequential']:.1f} tokens/s")
        print(
            f"{'n':>3} {'agg tok/s':>10} {'x one':>6} {'x seq':>6} {'req med':>8} "
            f"{'req min':>8} {'ttft p50':>9} {'ttft p95':>9} {'late ttft':>10} {'same':>6}"
        )
        for count, row in found["rounds"].items():
            late = "-" if row["late_ttft"] is None else f"{row['late_ttft']:.2f} s"
            print(
                f"{count:>3} {row['aggregate']:>10.1f} {row['vs_one']:>6.2f} "
                f"{row['vs_sequential']:>6.2f} {row['per_request_median']:>8.1f} "
                f"{row['per_request_slowest']:>8.1f} {row['ttft_p50']:>8.2f}s "
                f"{row['ttft_p95']:>8.2f}s {late:>10} {row['same_as_alone']:>6}"
            )
        rounds = found["rounds"]
        if 16 in rounds:
            met = rounds[16]["vs_one"] >= TARGET_16_OVER_1
            ok = ok and met
            print(
                f"16 concurrent vs one: {rounds[16]['vs_one']:.2f}x "
                f"(target >= {TARGET_16_OVER_1}x) {'OK' if met else 'MISS'}"
            )
        print()
    return ok


STORE = """
import json, sys
import django
django.setup()
from webapp.catalog.models import ModelEntry
folder, figures = sys.argv[1], json.loads(sys.stdin.read())
stored = 0
for entry in ModelEntry.objects.filter(backend="transformers", source__in=[folder, folder + "/"]):
    found = figures.get(entry.quantization)
    if found is None:
        continue
    latest = dict(entry.benchmark or {})
    latest["batching"] = {**latest.get("batching", {}), "cpu": found}
    entry.benchmark = latest
    entry.save(update_fields=["benchmark"])
    stored += 1
print(f"stored on {stored} catalog entries")
"""


def store(figures: dict[str, Any], environ: dict[str, str], tokens: int) -> None:
    """The figures onto the real database's entries (this run's own is a throwaway one)."""
    import subprocess

    folder = str(MODELS_DIR / MODEL_NAME)
    kept = {
        mode: {
            "measured_at": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "tokens": tokens,
            "sequential": found["sequential"],
            "rounds": found["rounds"],
        }
        for mode, found in figures.items()
    }
    env = {**environ, "DJANGO_SETTINGS_MODULE": "webapp.settings"}
    subprocess.run(
        [sys.executable, "-c", STORE, folder], input=json.dumps(kept), text=True, env=env, cwd=ROOT
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    environ = dict(os.environ)  # before the throwaway state replaces DATABASE_URL
    run_id = uuid.uuid4().hex[:8]
    var_dir = Path(tempfile.mkdtemp(prefix="atelier-batching-"))
    private = configure_environment(var_dir, run_id)
    try:
        figures = measure(args, var_dir, queue=f"bench-batching-{run_id}")
    finally:
        if private is not None:
            private.stop()
    ok = report(args, figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.store:
        store(figures, environ, args.tokens)
    shutil.rmtree(var_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
