"""Batch job throughput against a direct loop: N short documents summarized through a batch
job run by one real Celery worker process, and the same documents summarized by the same
model called directly in a loop, in one run. Target: job throughput >= 2.5 x the loop (the
worker decodes ATELIER_JOB_MAX_IN_FLIGHT items together in one batch; before continuous
batching it ran them one at a time and reached 0.97 x).

The model is the tiny random Llama of the tests (tests/tiny/causal.py: 2 layers, hidden
size 64) without an end-of-sequence token, so that every summary is exactly the "short"
preset's 64 tokens on both sides: each document costs the same real decoding work, and
what the job adds (the database, Redis, the queue, the engine's bookkeeping) shows.
Both sides use the same number of torch threads (--threads, default 1) and greedy decoding.

The two sides alternate in --rounds (default 4): the loop over a quarter of the documents,
then a job over the same quarter, and so on, so that both meet the same load on a shared
machine. A job is timed from its creation to its last item recorded (the database's
created_at to finished_at), after a one-document warm-up job has loaded the model in the
worker; the loop after a warm-up call. Besides the ratio it prints where the job's time
goes: the generations' own time in the worker (started to finished) and the rest.

    HF_HUB_OFFLINE=1 DATABASE_URL=postgres://... REDIS_URL=redis://... \\
        .venv/bin/python bench/batch_throughput.py [--docs 1000] [--threads 1]
            [--model FOLDER --quantization int8_dynamic]

With --model a real chat model summarizes instead (e.g. the starter SmolLM2 at
~/.cache/atelier/starter-models/SmolLM2-135M-Instruct); its summaries end where the model
ends them, the same text on both sides (greedy decoding), so seconds of real decoding per
document set the scale against which the job's overhead is measured.

Without DATABASE_URL a throwaway SQLite database is used; without REDIS_URL a private
Redis. The rows it creates (a user, a model entry, jobs, generations) are deleted after.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.stream_overhead import BUSY_LOAD, progress, throwaway_dir  # noqa: E402

TARGET_RATIO = 2.5
LENGTH = "short"
SUBJECTS = ["river", "harbour", "library", "railway", "market", "school", "bridge", "orchard"]


def documents(count: int) -> list[str]:
    """Short, distinct news-like documents (two or three sentences each)."""
    docs = []
    for i in range(count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        docs.append(
            f"Report {i}: the {subject} committee met on day {i % 28 + 1} and agreed to spend "
            f"{(i * 37) % 900 + 100} thousand on repairs. Work starts next month and should "
            f"take {i % 11 + 2} weeks; residents were asked for their views."
        )
    return docs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="documents (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on each side")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two sides")
    parser.add_argument("--in-flight", type=int, default=None, help="ATELIER_JOB_MAX_IN_FLIGHT")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--model",
        type=Path,
        help="a real chat model's folder instead of the tiny one (e.g. the starter SmolLM2); "
        "its summaries end where the model ends them, the same on both sides",
    )
    parser.add_argument(
        "--quantization", default="none", help="the model's quantization (e.g. int8_dynamic)"
    )
    return parser.parse_args(argv)


def configure_environment(var_dir: Path, run_id: str, args: argparse.Namespace) -> Any:
    """Environment for this process and the worker; returns the private Redis, if any.
    Must run before Django settings are imported."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["ATELIER_VAR_DIR"] = str(var_dir)
    os.environ["ATELIER_REDIS_PREFIX"] = f"atelier-batch-{run_id}"
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.in_flight:
        os.environ["ATELIER_JOB_MAX_IN_FLIGHT"] = str(args.in_flight)
    if os.environ.get("REDIS_URL"):
        return None
    from webapp.private_redis import PrivateRedis

    private = PrivateRedis(var_dir / "redis")
    os.environ["REDIS_URL"] = private.start()
    return private


def build_model(var_dir: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    from tests.tiny.causal import build_tiny_causal_lm

    folder = build_tiny_causal_lm(var_dir / "model", family="llama")
    config_file = folder / "generation_config.json"
    config = json.loads(config_file.read_text())
    config["eos_token_id"] = None  # every summary runs to the preset's length
    config_file.write_text(json.dumps(config))
    return folder


def setup_database(run_id: str, model: Path, quantization: str = "none") -> tuple[Any, Any]:
    import django

    django.setup()
    from django.core.management import call_command

    from webapp.accounts.models import User
    from webapp.catalog.models import ModelEntry

    call_command("migrate", verbosity=0)
    user = User(username=f"batch-bench-{run_id}", role="user")
    user.set_unusable_password()
    user.save()
    entry = ModelEntry.objects.create(
        name=f"{model.name}-batch-{run_id}",
        task="summarize",
        source=str(model),
        quantization=quantization,
        device="cpu",
        queue=f"batch-bench-{run_id}",
    )
    return user, entry


def direct_summarizer(entry: Any, threads: int) -> Callable[[str], str]:
    """The model loaded in this process, warmed up: text -> summary, as the worker calls it."""
    import torch

    from generation.loading import load_causal_lm
    from generation.specs import SamplingParams
    from generation.summarize import SummaryStream

    torch.set_num_threads(threads)
    loaded = load_causal_lm(entry.spec())

    def summarize(text: str) -> str:
        stream = SummaryStream(loaded, text, length=LENGTH, params=SamplingParams(temperature=0.0))
        stream.run(lambda piece: None)
        return stream.text

    summarize("A warm-up document. It has two sentences.")
    return summarize


def direct_loop(summarize: Callable[[str], str], docs: list[str]) -> float:
    """Seconds to summarize every document with the model called directly, in order."""
    start = time.perf_counter()
    for text in docs:
        summarize(text)
    return time.perf_counter() - start


def run_job(user: Any, entry: Any, docs: list[str]) -> Any:
    from webapp.jobs import inputs, services
    from webapp.jobs.models import JobStatus

    body = "".join(json.dumps({"text": text}) + "\n" for text in docs).encode()
    parsed = inputs.parse("docs.jsonl", body, limits=services.limits())
    job = services.create_job(
        user=user,
        model=entry,
        task="summarize",
        options={"length": LENGTH},
        source_name="docs.jsonl",
        parsed=parsed,
    )
    step = max(1, len(docs) // 10)
    shown = -1
    while True:
        job.refresh_from_db()
        if job.status == JobStatus.DONE:
            return job
        if job.finished_items // step > shown:
            shown = job.finished_items // step
            progress(f"  job: {job.finished_items}/{job.total}")
        time.sleep(0.5)


def measure(args: argparse.Namespace, var_dir: Path, run_id: str) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from tests.processes import celery_worker, database_url, process_env

    progress("building the tiny model and the database")
    user, entry = setup_database(run_id, build_model(var_dir, args.model), args.quantization)
    from webapp.inference.models import Generation
    from webapp.jobs.models import JobItem

    docs = documents(args.docs)
    figures: dict[str, Any] = {
        "docs": args.docs,
        "threads": args.threads,
        "in_flight": settings.ATELIER_JOB_MAX_IN_FLIGHT,
        "database": connection.vendor,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "date": dt.date.today().isoformat(),
        "load_before": os.getloadavg()[0],
        "model": f"{args.model.name} ({args.quantization})" if args.model else None,
    }
    rounds = [docs[i * len(docs) // args.rounds : (i + 1) * len(docs) // args.rounds]
              for i in range(args.rounds)]  # fmt: skip
    figures.update(direct_seconds=0.0, job_seconds=0.0, job_done=0, job_failed=0, rounds=[])
    try:
        summarize = direct_summarizer(entry, args.threads)
        env = process_env(DATABASE_URL=database_url(connection.settings_dict))
        connection.close()
        job_ids = []
        with celery_worker(env, [entry.queue], var_dir / "worker.log"):
            progress("warming the worker up (one-document job)")
            run_job(user, entry, docs[:1])
            for number, chunk in enumerate(rounds, start=1):
                # Alternate the two sides so that both meet the same load on a shared machine.
                progress(f"round {number}/{args.rounds}: direct loop over {len(chunk)} documents")
                direct = direct_loop(summarize, chunk)
                progress(f"round {number}/{args.rounds}: job over {len(chunk)} documents")
                job = run_job(user, entry, chunk)
                seconds = (job.finished_at - job.created_at).total_seconds()
                figures["rounds"].append(
                    {
                        "docs": len(chunk),
                        "direct_seconds": direct,
                        "job_seconds": seconds,
                        "ratio": direct / seconds,
                        "load": os.getloadavg()[0],
                    }
                )
                progress(f"  ratio {direct / seconds:.3f}")
                figures["direct_seconds"] += direct
                figures["job_seconds"] += seconds
                figures["job_done"] += job.done_count
                figures["job_failed"] += job.failed_count
                job_ids.append(job.pk)
                if number == 1:
                    figures["load_between"] = os.getloadavg()[0]
        figures["load_after"] = os.getloadavg()[0]
        per_item = list(
            Generation.objects.filter(
                pk__in=JobItem.objects.filter(job_id__in=job_ids).values("generation_id")
            ).values_list("started_at", "finished_at", "completion_tokens")
        )
        figures["worker_busy_seconds"] = sum(
            (end - start).total_seconds() for start, end, _ in per_item if start and end
        )
        figures["tokens_per_item"] = sorted({tokens for _, _, tokens in per_item})
    finally:
        cleanup(user, entry)
    return figures


def cleanup(user: Any, entry: Any) -> None:
    from webapp.inference.models import Generation

    Generation.objects.filter(user=user).delete()
    user.delete()  # its jobs and items go with it
    entry.delete()


def report(figures: dict[str, Any]) -> bool:
    docs = figures["docs"]
    direct = docs / figures["direct_seconds"]
    job = docs / figures["job_seconds"]
    ratio = job / direct
    figures.update(direct_per_second=direct, job_per_second=job, ratio=ratio)
    model = figures.get("model") or "tiny Llama (64 tokens each)"
    print(f"Batch throughput, {docs} documents, '{LENGTH}' summaries, {model}")
    print(f"  machine: {figures['machine']}; database: {figures['database']}")
    print(f"  torch threads: {figures['threads']}; job in flight: {figures['in_flight']}")
    print(f"  direct loop: {figures['direct_seconds']:8.1f} s  {direct:6.2f} docs/s")
    print(
        f"  batch job:   {figures['job_seconds']:8.1f} s  {job:6.2f} docs/s  "
        f"({figures['job_done']} done, {figures['job_failed']} failed; worker busy in "
        f"generations {figures['worker_busy_seconds']:.1f} s)"
    )
    busy = figures["worker_busy_seconds"]
    figures.update(
        generation_slowdown=busy / figures["direct_seconds"],
        gap_ms_per_item=1000 * (figures["job_seconds"] - busy) / docs,
    )
    print(
        f"  where the job's time goes: generations in the worker {busy / docs * 1000:.0f} ms "
        f"per document ({figures['generation_slowdown']:.2f}x the direct call: streaming to "
        "Redis, the output safety check, the first-token and finish writes), "
        f"between generations {figures['gap_ms_per_item']:.0f} ms (the claim, recording the "
        "output verdict, the job's record and top-up with the next document's input check, "
        "the wake-up message)"
    )
    met = ratio >= TARGET_RATIO and figures["job_done"] == docs
    print(
        f"  ratio job/direct: {ratio:.3f}  (target >= {TARGET_RATIO}: {'met' if met else 'MISS'})"
    )
    loads = [figures["load_before"], figures["load_between"], figures["load_after"]]
    print(
        "  load average before / after round 1 / at the end: "
        + " / ".join(f"{x:.2f}" for x in loads)
    )
    rounds = ", ".join(f"{r['ratio']:.2f}" for r in figures["rounds"])
    print(f"  ratio per round (direct loop, then job, on the same documents): {rounds}")
    if max(loads) > BUSY_LOAD * (os.cpu_count() or 1) + 1:
        print(
            "  WARNING: the machine was busy (other processes compete for the cores); "
            "the figures, the ratio above all, are noisy"
        )
    return met


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    with throwaway_dir(args.keep_temp) as var_dir:
        private_redis = configure_environment(var_dir, run_id, args)
        try:
            try:
                figures = measure(args, var_dir, run_id)
            except Exception:
                for log in sorted(var_dir.glob("*.log")):
                    print(f"--- {log.name} (end) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
                raise
            met = report(figures)
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2, default=str))
        finally:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            if private_redis is not None:
                private_redis.stop()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
