"""The usage pages with a year of data: how long the aggregation queries and the pages take.

Fills a database of its own (PostgreSQL `atelier_bench_usage`, or --database, on the
server of DATABASE_URL, dropped and created anew, unless --keep finds it filled) with a year
of Generation rows: --rows rows (400,000 by default) over --users users in a few groups,
four models, the three front doors, each with tokens and timings, queued at random moments
of the last 365 days (more on weekdays) and written in that order, as the studio writes
them. Then, with the database migrated (a kept one gets new indexes) and VACUUM ANALYZEd
(as autovacuum leaves it), it times (median of --repeat runs, after one warm-up):

* the services alone: a heavy user's 30 days (by day and by model: the user page's
  queries) and the dashboard's (the chart's days, by model, by user) over 30 days and a
  year, unfiltered and filtered by model, group, front door and user;
* the pages through Django's test client (queries, charts drawn by pygal, the template):
  /usage/ for the heavy user, /usage/admin/ for 30 days and a year, the CSV of a year by
  day;

and prints the plan PostgreSQL chose for the year's time to first token by model.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier .venv/bin/python \\
        bench/usage_dashboard.py [--rows 400000] [--users 60] [--repeat 5] [--keep] \\
        [--database atelier_bench_usage]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "atelier_bench_usage"
MODELS = (  # name, task, share of the rows, prompt tokens, completion tokens, tokens/s
    ("smollm2-135m", "chat", 0.55, 300, 180, 40.0),
    ("smollm2-135m-summarize", "summarize", 0.2, 1200, 150, 35.0),
    ("minilm-embeddings", "embed", 0.15, 60, 0, 0.0),
    ("efficientnet-lite0", "classify_image", 0.1, 0, 0, 0.0),
)
SOURCES = (("web", 0.6), ("batch", 0.25), ("api", 0.15))


def bench_database_url(url: str, database: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql", "pgsql"}:
        sys.exit("DATABASE_URL must name a PostgreSQL server (the figures are PostgreSQL's)")
    return urlunparse(parsed._replace(path="/" + database))


def recreate_database(url: str, database: str) -> None:
    import psycopg

    parsed = urlparse(url)
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}"')
        connection.execute(f'CREATE DATABASE "{database}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host, and pages' contexts kept


def fill(rows: int, users: int, seed: int) -> None:
    """`rows` Generations over the last 365 days, written with bulk_create."""
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from webapp.accounts.models import Role, User
    from webapp.inference.models import Generation, Status

    call_command("migrate", verbosity=0)
    randomness = random.Random(seed)
    groups = [Group.objects.create(name=f"team-{n}") for n in range(5)]
    people = []
    for n in range(users):
        user = User.objects.create(username=f"user{n:03d}", role=Role.USER)
        user.groups.add(groups[n % len(groups)])
        if n % 7 == 0:  # some in two groups
            user.groups.add(groups[(n + 1) % len(groups)])
        people.append(user)
    # A few heavy users, a long tail: weights falling with the rank.
    weights = [1 / (rank + 1) ** 0.8 for rank in range(users)]
    queued_at = Generation._meta.get_field("queued_at")
    queued_at.auto_now_add = False  # the bench writes the past
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    moments = []
    for _ in range(rows):
        when = now - dt.timedelta(seconds=randomness.uniform(0, 365 * 86400))
        if when.weekday() >= 5 and randomness.random() < 0.6:  # quieter weekends
            when -= dt.timedelta(days=2)
        moments.append(when)
    moments.sort()  # written in the order they were queued, as the studio writes them
    batch: list[Generation] = []
    for n, when in enumerate(moments):
        model, task, _, prompt, completion, speed = randomness.choices(
            MODELS, weights=[m[2] for m in MODELS]
        )[0]
        source = randomness.choices(SOURCES, weights=[s[1] for s in SOURCES])[0][0]
        wait = randomness.expovariate(1 / 0.8)
        first = wait + randomness.uniform(0.05, 0.6)
        prompt_tokens = int(prompt * randomness.uniform(0.3, 1.7))
        completion_tokens = int(completion * randomness.uniform(0.2, 1.5))
        decoding = completion_tokens / speed if speed else randomness.uniform(0.01, 0.1)
        batch.append(
            Generation(
                user=randomness.choices(people, weights=weights)[0],
                model_name=model,
                task=task,
                input={},
                status=Status.DONE if randomness.random() > 0.03 else Status.FAILED,
                source=source,
                queued_at=when,
                started_at=when + dt.timedelta(seconds=wait),
                first_token_at=when + dt.timedelta(seconds=first) if completion else None,
                finished_at=when + dt.timedelta(seconds=first + decoding),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                images=1 if task == "classify_image" else 0,
            )
        )
        if len(batch) == 5000 or n == rows - 1:
            Generation.objects.bulk_create(batch)
            batch = []
            print(f"\r  {n + 1:,} rows ({time.perf_counter() - started:.0f} s)", end="")
    print()


def timed(what: Callable[[], Any], repeat: int) -> float:
    """The median wall time of `repeat` calls, in milliseconds, after one warm-up call."""
    what()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        what()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(repeat: int) -> None:
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count
    from django.test import Client

    from webapp.accounts.models import Role, User
    from webapp.inference.models import Generation
    from webapp.usage import services
    from webapp.usage.services import By, Filters

    call_command("migrate", verbosity=0)  # a kept database gets the new indexes
    with connection.cursor() as cursor:  # as autovacuum leaves it: statistics, visibility map
        cursor.execute("VACUUM ANALYZE")
    total = Generation.objects.count()
    heavy_id = Generation.objects.values("user").annotate(n=Count("id")).order_by("-n")[0]["user"]
    heavy = User.objects.get(pk=heavy_id)
    month = services.last_days(30)
    year = services.last_days(365)
    group = Group.objects.order_by("name").first()
    print(f"{total:,} generations, {User.objects.count()} users; heavy user: {heavy.username}")
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    print(f"PostgreSQL {version}; median of {repeat} runs after a warm-up\n")

    def dashboard(filters: Filters) -> Callable[[], Any]:
        """The dashboard's queries: the chart's days or weeks, by model and by user."""

        def run() -> None:
            services.periods(filters)
            services.top(services.by_model_and_user(filters)[1])

        return run

    def user_page(filters: Filters) -> Callable[[], Any]:
        def run() -> None:
            services.daily(filters)
            services.breakdown(filters, By.MODEL)

        return run

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("user page queries, heavy user, 30 days", user_page(Filters(*month, user_id=heavy.pk))),
        ("dashboard queries, 30 days", dashboard(Filters(*month))),
        ("dashboard queries, 365 days", dashboard(Filters(*year))),
        ("  365 days, one model", dashboard(Filters(*year, model_name=MODELS[0][0]))),
        ("  365 days, one group", dashboard(Filters(*year, group_id=group.pk if group else None))),
        ("  365 days, front door api", dashboard(Filters(*year, source="api"))),
        ("  365 days, heavy user", dashboard(Filters(*year, user_id=heavy.pk))),
        ("breakdown by user, 365 days", lambda: services.breakdown(Filters(*year), By.USER)),
        ("breakdown by group, 365 days", lambda: services.breakdown(Filters(*year), By.GROUP)),
    ]
    for name, run in cases:
        print(f"{name:<44} {timed(run, repeat):8.1f} ms")

    admin, _ = User.objects.get_or_create(username="bench-admin", defaults={"role": Role.ADMIN})
    as_heavy, as_admin = Client(), Client()
    as_heavy.force_login(heavy)
    as_admin.force_login(admin)
    year_query = {"start": year[0].isoformat(), "end": year[1].isoformat()}

    def page(client: Client, path: str, query: dict[str, str] | None = None) -> Callable[[], Any]:
        def run() -> None:
            response = client.get(path, query or {})
            assert response.status_code == 200, response.status_code
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)  # type: ignore[attr-defined]

        return run

    print()
    pages = [
        ("GET /usage/ (heavy user)", page(as_heavy, "/usage/")),
        ("GET /usage/admin/ (30 days)", page(as_admin, "/usage/admin/")),
        ("GET /usage/admin/ (365 days)", page(as_admin, "/usage/admin/", year_query)),
        (
            "GET /usage/admin/ (365 days, by user)",
            page(as_admin, "/usage/admin/", {**year_query, "by": "user"}),
        ),
        (
            "GET /usage/admin/usage.csv (365 days)",
            page(as_admin, "/usage/admin/usage.csv", year_query),
        ),
    ]
    for name, run in pages:
        print(f"{name:<44} {timed(run, repeat):8.1f} ms")

    print("\nPlan of the year's time to first token by model:")
    replies = services.generations(Filters(*year)).filter(first_token_at__isnull=False)
    percentiles = replies.values("model_name").annotate(
        first_token=services.PercentilesCont(services.FIRST_TOKEN, services.QUANTILES)
    )
    for line in percentiles.explain(analyze=True).splitlines():
        print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="reuse a filled bench database")
    parser.add_argument("--database", default=DATABASE, help="the bench database's name")
    args = parser.parse_args()
    url = bench_database_url(os.environ.get("DATABASE_URL", ""), args.database)
    if not args.keep:
        recreate_database(url, args.database)
    setup_django(url)
    if not args.keep:
        print(f"Filling {args.database} with {args.rows:,} generations over {args.users} users")
        fill(args.rows, args.users, args.seed)
    measure(args.repeat)


if __name__ == "__main__":
    main()
