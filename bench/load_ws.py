"""WebSocket load: many users, connections and concurrent generations against the stack.

Starts its own stack (a throwaway SQLite database, or the PostgreSQL at DATABASE_URL; a
private Redis unless --redis-url; N Celery workers on one queue; one Daphne) with a tiny
random Llama that has no end-of-sequence token, so every reply runs to exactly --tokens
tokens. U users each get a session; C WebSocket connections are spread over them, and G of
them send messages; the other connections of the same user subscribe to each of that
user's generations (a second tab), or stay idle with --idle none. Two ways to send:

* --arrival steady (the default): G generations in flight all the time, as G people
  chatting. Each sender starts at a random moment within the first --ramp seconds, then
  sends its next message as soon as its previous reply is done (after an exponential
  think time of mean --think seconds), for --duration seconds. The in-flight count at
  each send is reported, so the concurrency claimed is the concurrency measured.
* --arrival burst: the G connections send one message each at the same moment (a
  thundering herd: the web process stores G messages at once, so the last of them waits
  for all the others).

Per generation it measures, on one wall clock (client time.time() and the database's
timestamps, same machine):

* client: send -> accepted, -> first token event, -> done;
* database: queued_at, started_at, first_token_at, finished_at;
* added TTFT = (client first token - send) - (started_at - queued_at) [waiting for a free
  worker] - (first_token_at - started_at) [the model's own first token on the worker]:
  what the web process, Redis, the relay and the WebSocket add;

and checks every stream a connection received: sequence numbers without gaps (lost),
repeats (duplicated) or decreases (reordered), and the token texts joined equal to the
done event's text and the stored Generation.output. Errors: error events, replies that
did not end as done, exceptions and timeouts. Targets: added TTFT p50 <= 30 ms and
p95 <= 80 ms; lost, duplicated, reordered and errors all 0. Exit status 1 when a count
target is missed (timings depend on the machine and only print MISS).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/load_ws.py [--quick] [--connections 200]
        [--generations 50] [--users 50] [--workers 2] [--tokens 32]
        [--arrival steady|burst] [--duration 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import secrets
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.stream_overhead import BUSY_LOAD, progress, throwaway_dir  # noqa: E402

PROMPT = "Tell me about the lighthouse."
MODEL_NAME = "tiny-llama-endless"
TEMPERATURE = 0.8
SEED = 1234
TARGET_ADDED_P50 = 0.030  # seconds
TARGET_ADDED_P95 = 0.080
QUICK = {"connections": 20, "generations": 5, "users": 5, "duration": 5.0, "ramp": 1.0}
DEFAULTS = {"connections": 200, "generations": 50, "users": 50, "duration": 40.0, "ramp": 10.0}
CONNECT_AT_ONCE = 20  # WebSocket handshakes in flight together while connecting


# --- results -------------------------------------------------------------------------------


@dataclass
class Stream:
    """What one connection received for one generation."""

    generation: int
    primary: bool  # the connection that sent the message (else a subscriber)
    seqs: list[int] = field(default_factory=list)
    text: str = ""
    first_token_at: float | None = None  # client wall clock
    done: dict[str, Any] | None = None
    done_at: float | None = None
    errors: list[str] = field(default_factory=list)

    def counts(self, last: int) -> tuple[int, int, int]:
        """(lost, duplicated, reordered): the seq numbers received must be 1, 2, ...,
        `last` (the stream's last seq in Redis) in order. A done event rebuilt from the
        database (seq 0) does not stand in for the events it skipped."""
        seen: set[int] = set()
        duplicated = reordered = 0
        highest = 0
        for seq in self.seqs:
            if seq in seen:
                duplicated += 1
                continue
            if seq < highest:
                reordered += 1
            seen.add(seq)
            highest = max(highest, seq)
        lost = sum(1 for seq in range(1, max(highest, last) + 1) if seq not in seen)
        return lost, duplicated, reordered


@dataclass
class Sent:
    """One generation as its sender saw it, with the database's timestamps added later."""

    connection: int
    user: int
    sent_at: float
    in_flight: int = 0  # generations sent and not yet done, this one included
    accepted_at: float | None = None
    generation: int | None = None
    stream: Stream | None = None
    db: dict[str, Any] = field(default_factory=dict)

    def added_ttft(self) -> float | None:
        queued, first = self.db.get("queued_at"), self.db.get("first_token_at")
        if self.stream is None or self.stream.first_token_at is None or not (queued and first):
            return None
        return (self.stream.first_token_at - self.sent_at) - (first - queued)


@dataclass
class Connection:
    index: int
    user: int
    ws: Any = None
    streams: dict[int, Stream] = field(default_factory=dict)
    accepted: asyncio.Queue[tuple[float, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    errors: list[str] = field(default_factory=list)
    finished: dict[int, asyncio.Event] = field(default_factory=dict)


# --- set-up --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, help="WebSocket connections (default 200)")
    parser.add_argument("--generations", type=int, help="concurrent generations (default 50)")
    parser.add_argument("--users", type=int, help="users, each with a session (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of each generation")
    parser.add_argument(
        "--arrival",
        choices=["steady", "burst"],
        default="steady",
        help="steady: G generations in flight for --duration seconds (default); "
        "burst: G messages sent at the same moment",
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of sending in steady mode (default 40)"
    )
    parser.add_argument(
        "--ramp", type=float, help="senders start within this many seconds (steady; default 10)"
    )
    parser.add_argument(
        "--think", type=float, default=0.2, help="mean think time between replies (steady)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: defaults {QUICK['connections']} connections, "
        f"{QUICK['generations']} generations, {QUICK['users']} users",
    )
    parser.add_argument(
        "--idle",
        choices=["subscribe", "none"],
        default="subscribe",
        help="what connections that send nothing do: subscribe to their user's generation "
        "(default) or nothing",
    )
    parser.add_argument("--redis-url", help="use this Redis instead of a private one")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds for the whole measured run"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--keep-temp", action="store_true", help="keep the temporary directory (logs, database)"
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.connections, args.generations, args.users, args.workers, args.tokens) < 1:
        parser.error("--connections, --generations, --users, --workers and --tokens must be >= 1")
    if args.duration <= 0 or args.ramp < 0 or args.think < 0:
        parser.error("--duration must be > 0; --ramp and --think must be >= 0")
    if args.ramp >= args.duration:
        parser.error("--ramp must be shorter than --duration")
    if args.generations > args.connections or args.users > args.connections:
        parser.error("each generation and each user needs a connection of its own")
    return args


def per_user_limit(args: argparse.Namespace) -> int:
    """The concurrency limit that lets the busiest user start all of their generations
    (never lower than the site's default)."""
    from django.conf import settings

    busiest = math.ceil(args.generations / args.users)
    return max(busiest, settings.ATELIER_MAX_CONCURRENT_GENERATIONS)


def configure_environment(var_dir: Path, run_id: str, redis_url: str | None) -> Any:
    """Environment for this process and its children; returns the private Redis, if any.
    Must run before Django settings are imported: they are read from the environment."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["ATELIER_VAR_DIR"] = str(var_dir)
    os.environ["ATELIER_REDIS_PREFIX"] = f"atelier-load-{run_id}"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
        return None
    from webapp.private_redis import PrivateRedis

    private = PrivateRedis(var_dir / "redis")
    os.environ["REDIS_URL"] = private.start()
    return private


def build_model(var_dir: Path) -> Path:
    """The tiny random Llama, saved and loaded like any model, without an end-of-sequence
    token so that every reply runs to max_tokens."""
    from tests.tiny.causal import build_tiny_causal_lm

    folder = build_tiny_causal_lm(var_dir / "model", family="llama")
    config_file = folder / "generation_config.json"
    config = json.loads(config_file.read_text())
    config["eos_token_id"] = None
    config_file.write_text(json.dumps(config))
    return folder


def setup_database(args: argparse.Namespace, run_id: str, queue: str, model: Path) -> Any:
    """Migrate; create the users (no password: they log in by session) and the model's
    catalog entry. Returns (users, entry)."""
    import django

    django.setup()
    from django.core.management import call_command

    from webapp.accounts.models import User
    from webapp.catalog.models import ModelEntry

    call_command("migrate", verbosity=0)
    users = []
    for index in range(args.users):
        user = User(username=f"load-{run_id}-{index}", role="user")
        user.set_unusable_password()
        user.save()
        users.append(user)
    ModelEntry.objects.filter(is_default=True, task="chat").update(is_default=False)
    entry = ModelEntry.objects.create(
        name=f"{MODEL_NAME}-{run_id}",
        task="chat",
        source=str(model),
        device="cpu",
        queue=queue,
        is_default=True,
    )
    return users, entry


# --- the client ----------------------------------------------------------------------------


async def open_connection(url: str, cookie: str) -> Any:
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    origin = url.replace("ws://", "http://").split("/ws/")[0]
    return await connect(
        url,
        origin=Origin(origin),
        additional_headers={"Cookie": cookie},
        proxy=None,
        max_queue=None,
        open_timeout=60,
    )


async def read_events(connection: Connection) -> None:
    """Record every event of the connection, on the client's wall clock."""
    from websockets.exceptions import ConnectionClosed

    try:
        async for raw in connection.ws:
            now = time.time()
            event = json.loads(raw)
            kind = event.get("type")
            if kind == "accepted":
                # The relay's events follow at once: watch the stream before reading on.
                watch(connection, event["generation"], primary=True)
                connection.accepted.put_nowait((now, event))
                continue
            if kind == "error":
                connection.errors.append(
                    f"error event: {event.get('code')}: {event.get('message')}"
                )
                connection.accepted.put_nowait((now, event))  # a refused message, if any
                continue
            generation = event.get("generation")
            stream = connection.streams.get(generation) if isinstance(generation, int) else None
            if stream is None or "seq" not in event:
                continue  # queue/running/worker_lost: outside the stream, no seq
            stream.seqs.append(event["seq"])
            if kind == "token":
                stream.text += event["text"]
                if stream.first_token_at is None:
                    stream.first_token_at = now
            elif kind == "status" and event.get("status") == "requeued":
                stream.errors.append("requeued (a worker was taken for dead)")
                stream.text = ""
            elif kind == "done":
                stream.done, stream.done_at = event, now
                connection.finished[generation].set()
    except ConnectionClosed as exc:
        if exc.rcvd is None or exc.rcvd.code != 1000:
            connection.errors.append(f"connection closed: {exc}")


def watch(connection: Connection, generation: int, primary: bool) -> Stream:
    stream = Stream(generation=generation, primary=primary)
    connection.streams[generation] = stream
    connection.finished[generation] = asyncio.Event()
    return stream


async def send_one(
    sender: Connection, params: dict[str, Any], subscribers: list[Connection]
) -> Sent:
    """Send one message; once accepted, the user's other connections subscribe to it."""
    sent = Sent(connection=sender.index, user=sender.user, sent_at=time.time())
    await sender.ws.send(json.dumps({"type": "message", "content": PROMPT, **params}))
    accepted_at, event = await sender.accepted.get()
    if event.get("type") != "accepted":
        return sent
    sent.accepted_at, sent.generation = accepted_at, event["generation"]
    sent.stream = sender.streams[event["generation"]]  # watched by read_events
    for other in subscribers:
        watch(other, event["generation"], primary=False)
        await other.ws.send(json.dumps({"type": "subscribe", "generation": event["generation"]}))
    return sent


async def send_steadily(
    args: argparse.Namespace,
    senders: list[Connection],
    idle: list[Connection],
    params: dict[str, Any],
    start: float,
) -> list[Sent]:
    """Each sender sends, waits for its reply to be done, thinks, and sends again, from a
    random moment in the ramp until --duration has passed: G generations in flight."""
    rng = random.Random(SEED)
    sent: list[Sent] = []
    in_flight = 0
    deadline = start + args.duration

    async def sender(connection: Connection, delay: float, think: random.Random) -> None:
        nonlocal in_flight
        await asyncio.sleep(delay)
        subscribers = [o for o in idle if o.user == connection.user]
        number = 0
        while time.time() < deadline:
            in_flight += 1
            seed = SEED + connection.index * 10_000 + number
            one = await send_one(connection, {**params, "seed": seed}, subscribers)
            one.in_flight = in_flight
            sent.append(one)
            if one.generation is None:  # refused: counted as an error; this sender stops
                in_flight -= 1
                return
            await connection.finished[one.generation].wait()
            in_flight -= 1
            number += 1
            if args.think:
                await asyncio.sleep(think.expovariate(1 / args.think))

    tasks = [sender(c, rng.uniform(0, args.ramp), random.Random(rng.random())) for c in senders]
    with contextlib.suppress(TimeoutError):  # what did not finish counts as a timeout
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.timeout)
    return sorted(sent, key=lambda s: s.sent_at)


async def run_load(
    args: argparse.Namespace, ws_url: str, cookies: list[str], model_id: int
) -> tuple[list[Sent], list[Connection], float, float]:
    """Connect, warm up one reply per worker, then send (steadily or in one burst).
    Returns (sent, connections, start, end) with start/end on the wall clock."""
    connections = [Connection(index=i, user=i % args.users) for i in range(args.connections)]
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def connect(connection: Connection) -> None:
        async with gate:
            connection.ws = await open_connection(ws_url, cookies[connection.user])

    await asyncio.gather(*(connect(c) for c in connections))
    readers = [asyncio.create_task(read_events(c)) for c in connections]
    params = {"model": model_id, "max_tokens": args.tokens, "temperature": TEMPERATURE}
    try:
        # Warm-up: one short reply per worker, so that model loading is not measured.
        warm = [
            await send_one(connections[i], {**params, "max_tokens": 2, "seed": SEED}, [])
            for i in range(min(args.workers, args.generations))
        ]
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    connections[s.connection].finished[s.generation].wait()
                    for s in warm
                    if s.generation
                )
            ),
            timeout=args.timeout,
        )
        for connection in connections:
            connection.streams.clear()
            connection.finished.clear()
            connection.errors.clear()
            connection.accepted = asyncio.Queue()

        senders = connections[: args.generations]
        idle = connections[args.generations :] if args.idle == "subscribe" else []
        start = time.time()
        if args.arrival == "burst":
            sent = await asyncio.gather(
                *(
                    send_one(
                        c,
                        {**params, "seed": SEED + c.index},
                        [o for o in idle if o.user == c.user],
                    )
                    for c in senders
                )
            )
            for s in sent:
                s.in_flight = len(sent)
        else:
            sent = await send_steadily(args, senders, idle, params, start)
        waits = [c.finished[generation].wait() for c in connections for generation in c.finished]
        with contextlib.suppress(TimeoutError):  # what did not finish counts as a timeout
            await asyncio.wait_for(asyncio.gather(*waits), timeout=args.timeout)
        end = time.time()
    finally:
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    return list(sent), connections, start, end


def stored_generations(ids: list[int]) -> dict[int, dict[str, Any]]:
    """The database's view of the generations (timestamps as wall-clock seconds)."""
    from webapp.inference.models import Generation

    rows = {}
    for generation in Generation.objects.filter(pk__in=ids):
        stamps = ("queued_at", "started_at", "first_token_at", "finished_at")
        row: dict[str, Any] = {
            name: (value.timestamp() if (value := getattr(generation, name)) else None)
            for name in stamps
        }
        row.update(
            status=generation.status,
            output=generation.output,
            completion_tokens=generation.completion_tokens,
            attempts=generation.attempts,
        )
        rows[generation.pk] = row
    return rows


def last_seqs(ids: list[int]) -> dict[int, int]:
    """Each generation's last seq as stored in its Redis stream: what every client
    should have received (entry ids are 0-<seq>)."""
    from webapp.inference import streams

    client = streams.sync_redis()
    found = {}
    for generation_id in ids:
        last: Any = client.xrevrange(streams.stream_key(generation_id), count=1)
        if last:
            entry_id = last[0][0]
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            found[generation_id] = int(entry_id.split("-")[1])
    return found


# --- figures -------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every figure is a measured value)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def spread(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
        "n": len(values),
    }


def analyse(
    args: argparse.Namespace,
    sent: list[Sent],
    connections: list[Connection],
    start: float,
    end: float,
    last_seqs: dict[int, int],
) -> dict[str, Any]:
    errors: list[str] = [e for c in connections for e in c.errors]
    lost = duplicated = reordered = 0
    mismatched = 0
    streams = [s for c in connections for s in c.streams.values()]
    for sender in sent:
        if sender.generation is None:
            errors.append(f"connection {sender.connection}: message not accepted")
    for stream in streams:
        who = f"generation {stream.generation} ({'sender' if stream.primary else 'subscriber'})"
        a, b, c = stream.counts(last_seqs.get(stream.generation, 0))
        lost, duplicated, reordered = lost + a, duplicated + b, reordered + c
        errors += [f"{who}: {e}" for e in stream.errors]
        if stream.done is None:
            errors.append(f"{who}: timed out without a done event")
            continue
        if stream.done.get("status") != "done":
            errors.append(f"{who}: ended {stream.done.get('status')}: {stream.done.get('error')}")
        stored = sent_by_id(sent).get(stream.generation)
        output = stored.db.get("output") if stored else None
        if stream.first_token_at is None:
            errors.append(f"{who}: done without a token event")
        if not (stream.text == stream.done.get("text") == output):
            mismatched += 1
            errors.append(f"{who}: streamed text differs from done's text or the stored output")

    done = [s for s in sent if s.stream and s.stream.done]
    in_flight = [float(s.in_flight) for s in sent]
    completion = sum(int(s.db.get("completion_tokens") or 0) for s in sent)
    short = [s.generation for s in done if s.db.get("completion_tokens") != args.tokens]
    wall = end - start

    def client(attr: str) -> list[float]:
        values = []
        for s in sent:
            at = getattr(s, attr) if attr == "accepted_at" else getattr(s.stream, attr, None)
            if at is not None:
                values.append(at - s.sent_at)
        return values

    def db(a: str, b: str) -> list[float]:
        return [s.db[b] - s.db[a] for s in sent if s.db.get(a) and s.db.get(b)]

    per_generation = [
        int(s.db["completion_tokens"]) / (s.stream.done_at - s.sent_at)
        for s in done
        if s.stream and s.stream.done_at and s.db.get("completion_tokens")
    ]
    streaming = [
        int(s.db["completion_tokens"]) / (s.stream.done_at - s.stream.first_token_at)
        for s in done
        if s.stream
        and s.stream.done_at
        and s.stream.first_token_at
        and s.db.get("completion_tokens")
        and s.stream.done_at > s.stream.first_token_at
    ]
    return {
        "added_ttft": spread([v for s in sent if (v := s.added_ttft()) is not None]),
        # The same, only for messages sent with at least 90 % of G generations in flight
        # (steady mode: leaves out the ramp, when fewer are).
        "added_ttft_full": spread(
            [
                v
                for s in sent
                if s.in_flight >= 0.9 * args.generations and (v := s.added_ttft()) is not None
            ]
        ),
        "send_to_queued": spread(
            [s.db["queued_at"] - s.sent_at for s in sent if s.db.get("queued_at")]
        ),
        "delivery": spread(
            [
                s.stream.first_token_at - s.db["first_token_at"]
                for s in sent
                if s.stream and s.stream.first_token_at and s.db.get("first_token_at")
            ]
        ),
        "model_ttft": spread(db("started_at", "first_token_at")),
        "queue_wait": spread(db("queued_at", "started_at")),
        "send_to_accepted": spread(client("accepted_at")),
        "send_to_first_token": spread(client("first_token_at")),
        "send_to_done": spread(client("done_at")),
        "worker_seconds": spread(db("started_at", "finished_at")),
        "tokens_per_second": completion / wall if wall > 0 else 0.0,
        "tokens_per_second_per_generation": spread(per_generation),
        "stream_tokens_per_second_per_generation": spread(streaming),
        "completion_tokens": completion,
        "wall_seconds": wall,
        "sent": len(sent),
        "in_flight_at_send": {
            "p5": percentile(in_flight, 5),
            "p50": percentile(in_flight, 50),
            "max": max(in_flight) if in_flight else None,
        },
        "generations_done": len(done),
        "streams": len(streams),
        "subscriber_streams": sum(1 for s in streams if not s.primary),
        "short_generations": short,
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "text_mismatches": mismatched,
        "errors": len(errors),
        "error_messages": errors[:20],
        "samples": [  # one row per message, for a closer look (only in --json)
            {
                "sent": round(s.sent_at - start, 4),
                "in_flight": s.in_flight,
                "send_to_queued": s.db["queued_at"] - s.sent_at if s.db.get("queued_at") else None,
                "send_to_accepted": s.accepted_at - s.sent_at if s.accepted_at else None,
                "added_ttft": s.added_ttft(),
            }
            for s in sent
        ],
    }


def sent_by_id(sent: list[Sent]) -> dict[int, Sent]:
    return {s.generation: s for s in sent if s.generation is not None}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def report(args: argparse.Namespace, figures: dict[str, Any], info: dict[str, Any]) -> bool:
    """Print the table and the verdicts; True when every count target is met."""
    import torch

    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print("WebSocket load: the chat stack under many connections and concurrent generations")
    print(
        f"  model      tiny random Llama without EOS, cpu; {args.tokens} tokens per reply, "
        f"temperature {TEMPERATURE}, seeded"
    )
    print(
        f"  load       {args.connections} connections, {args.users} users, "
        f"{args.generations} concurrent generations, idle connections: {args.idle} "
        f"({figures['subscriber_streams']} subscriber streams)"
    )
    flight = figures["in_flight_at_send"]
    if args.arrival == "burst":
        arrival = f"burst: {args.generations} messages sent at the same moment"
    else:
        arrival = (
            f"steady for {args.duration:g} s (ramp {args.ramp:g} s, think {args.think:g} s): "
            f"{figures['sent']} messages, in flight at each send p5 {flight['p5']:.0f}, "
            f"p50 {flight['p50']:.0f}, max {flight['max']:.0f}"
        )
    print(f"  arrival    {arrival}")
    print(
        f"  stack      {args.workers} Celery workers (solo), 1 Daphne, {info['database']}, "
        f"{info['redis']}; per-user limit {info['limit']}"
    )
    print(
        f"  machine    {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__}, "
        f"workers' OMP_NUM_THREADS={info['omp']}, nice {info['nice']}; "
        f"Python {platform.python_version()}"
    )
    print(f"  date       {date}")
    print(
        f"  load avg   {info['load_before']:.2f} before the bench, "
        f"{info['load_after']:.2f} at the end (1 min)"
    )
    print()
    rows = [
        ("added TTFT (stack)", figures["added_ttft"]),
        (f"  with >= {math.ceil(0.9 * args.generations)} in flight", figures["added_ttft_full"]),
        ("  of which send -> queued_at", figures["send_to_queued"]),
        ("  of which first_token_at -> client", figures["delivery"]),
        ("model's own TTFT (worker)", figures["model_ttft"]),
        ("queue wait (free worker)", figures["queue_wait"]),
        ("send -> accepted", figures["send_to_accepted"]),
        ("send -> first token", figures["send_to_first_token"]),
        ("send -> done", figures["send_to_done"]),
        ("worker: started -> finished", figures["worker_seconds"]),
    ]
    header = ("figure", "p50", "p95", "max", "n")
    body = [(name, ms(f["p50"]), ms(f["p95"]), ms(f["max"]), str(f["n"])) for name, f in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in body:
        print(line.format(*row))
    print()
    per = figures["tokens_per_second_per_generation"]
    streaming = figures["stream_tokens_per_second_per_generation"]
    print(
        f"  delivered tokens/s   {figures['tokens_per_second']:.1f} overall "
        f"({figures['completion_tokens']} tokens in {figures['wall_seconds']:.2f} s)"
    )
    print(
        f"  per generation       p50 {_rate(per['p50'])} (send -> done), "
        f"p50 {_rate(streaming['p50'])} (first token -> done)"
    )
    print(
        f"  generations done     {figures['generations_done']} of {figures['sent']}"
        + (
            f"; short of {args.tokens} tokens: {figures['short_generations']}"
            if figures["short_generations"]
            else ""
        )
    )
    added = figures["added_ttft"]
    checks = [
        ("added TTFT p50 <= 30 ms", added["p50"] is not None and added["p50"] <= TARGET_ADDED_P50),
        ("added TTFT p95 <= 80 ms", added["p95"] is not None and added["p95"] <= TARGET_ADDED_P95),
    ]
    counts = [
        (f"lost tokens = 0 ({figures['lost']})", figures["lost"] == 0),
        (f"duplicated = 0 ({figures['duplicated']})", figures["duplicated"] == 0),
        (f"reordered = 0 ({figures['reordered']})", figures["reordered"] == 0),
        (
            f"errors = 0 ({figures['errors']}; text mismatches {figures['text_mismatches']})",
            figures["errors"] == 0,
        ),
    ]
    print()
    for name, ok in [*checks, *counts]:
        print(f"  {'PASS' if ok else 'MISS'}  {name}")
    for message in figures["error_messages"]:
        print(f"    {message}")
    cores = os.cpu_count() or 1
    if info["load_before"] > BUSY_LOAD * cores:
        print(
            "  WARNING: the machine was busy before the benchmark started (load average "
            f"{info['load_before']:.2f} on {cores} cores); other processes compete for the "
            "cores and the timings, the added TTFT above all, are unreliable"
        )
    return all(ok for _name, ok in counts)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} tokens/s"


# --- main ----------------------------------------------------------------------------------


def start_together(stack: contextlib.ExitStack, managers: list[Any]) -> list[Any]:
    """Enter the processes' context managers in parallel threads (each waits until its
    process is ready; starting Python processes one after another is slow on few cores).
    Every one that started is stopped by `stack`, also when another failed."""
    with ThreadPoolExecutor(max_workers=len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        results, failure = [], None
        for manager, future in zip(managers, futures, strict=True):
            try:
                results.append(future.result())
                stack.push(manager)
            except Exception as exc:
                failure = failure or exc
    if failure is not None:
        raise failure
    return results


def measure(
    args: argparse.Namespace, var_dir: Path, run_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    from django.conf import settings
    from django.db import connection

    from tests.processes import celery_worker, database_url, process_env, session_cookie, web_server

    queue = f"load-{run_id}"
    load_before = os.getloadavg()[0]  # before this bench starts anything of its own
    progress("building the tiny model and the database")
    users, entry = setup_database(args, run_id, queue, build_model(var_dir))
    limit = per_user_limit(args)
    omp = os.environ.get("OMP_NUM_THREADS", "1")
    env = process_env(
        DATABASE_URL=database_url(connection.settings_dict),
        ATELIER_VAR_DIR=str(var_dir),
        ATELIER_MAX_CONCURRENT_GENERATIONS=str(limit),
        OMP_NUM_THREADS=omp,  # one thread per worker: the model is tiny, the cores few
    )
    cookies = [session_cookie(user) for user in users]
    info: dict[str, Any] = {
        "database": connection.vendor,
        "redis": "Redis at --redis-url" if args.redis_url else "private Redis",
        "limit": limit,
        "omp": omp,
        "nice": settings.ATELIER_WORKER_NICE,
        "flush_ms": settings.ATELIER_STREAM_FLUSH_MS,
    }
    connection.close()  # the children share the database; hold nothing open on it
    with contextlib.ExitStack() as stack:
        progress(f"starting {args.workers} workers and the web server")
        workers = [
            celery_worker(env, [queue], var_dir / f"worker-{index}.log")
            for index in range(args.workers)
        ]
        *processes, base_url = start_together(
            stack, [*workers, web_server(env, var_dir / "web.log")]
        )
        ws_url = base_url.replace("http://", "ws://") + "/ws/chat/"
        info["load_before"] = load_before
        progress(f"running the load (load average {os.getloadavg()[0]:.2f})")
        sent, connections, start, end = asyncio.run(run_load(args, ws_url, cookies, entry.pk))
        info["load_after"] = os.getloadavg()[0]
        progress("stopping the stack")
        for process in processes:  # all at once; the stack then waits for each in turn
            process.terminate()
    ids = [s.generation for s in sent if s.generation is not None]
    rows = stored_generations(ids)
    connection.close()
    for s in sent:
        if s.generation is not None:
            s.db = rows.get(s.generation, {})
    return analyse(args, sent, connections, start, end, last_seqs(ids)), info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    with throwaway_dir(args.keep_temp) as var_dir:
        private_redis = configure_environment(var_dir, run_id, args.redis_url)
        try:
            try:
                figures, info = measure(args, var_dir, run_id)
            except Exception:
                for log in sorted(var_dir.glob("*.log")):
                    print(f"--- {log.name} (end) ---\n{log.read_text()[-3000:]}", file=sys.stderr)
                raise
            met = report(args, figures, info)
            if args.json:
                args.json.write_text(
                    json.dumps(
                        {"args": {**vars(args), "json": str(args.json)}, **figures, **info},
                        indent=2,
                        default=str,
                    )
                )
        finally:
            from django.db import connections

            connections.close_all()
            if private_redis is not None:
                private_redis.stop()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
