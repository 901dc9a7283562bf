"""Usage figures read from the ledger, the Generation rows, and aggregated in the database:
by day, user, group or model over a range of days, with the admin dashboard's filters.

A row's tokens are its prompt and completion tokens (an embedding's or a moderation's input
counts as prompt tokens). Its time queued runs from queued to started, its time to first
token from queued to the first token (as the chat page shows it), and a model's speed is
its tokens after the first over the time after the first, over all its replies together.
Rows add up, so a total is the sum of a breakdown's rows rather than another pass over
the table, and the dashboard reads its models and its users from one pass (the sums of
each model and user). The time to first token's percentiles are read per model only, in
a query of their own over the replies with a first token (an index holds them in that
order; the sums hash): PostgreSQL's percentile_cont, or on other databases (SQLite in
development) the same interpolation computed here from the durations.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.db import connection
from django.db.models import (
    Aggregate,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from webapp.inference.models import Generation

NO_GROUP = "(no group)"
QUANTILES = (0.5, 0.95)  # of the time to first token


class By(enum.StrEnum):
    """What a breakdown's rows are."""

    DAY = "day"
    WEEK = "week"  # for the charts of long ranges (from its Monday)
    USER = "user"
    GROUP = "group"
    MODEL = "model"


@dataclass(frozen=True)
class Filters:
    """The rows counted: queued on the days from `start` to `end` (both included, in the
    site's time zone), and of one user, group, model or front door when given."""

    start: dt.date
    end: dt.date
    user_id: int | None = None
    group_id: int | None = None
    model_name: str = ""
    source: str = ""

    @property
    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=n) for n in range((self.end - self.start).days + 1)]


@dataclass(frozen=True)
class Row:
    """The figures of one day, week, user, group or model. Rows add up (`combined`), all
    but the percentiles, which only a breakdown by model reads."""

    key: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    started: int = 0  # requests that started, and their time queued in all
    queued_total: float = 0.0
    decoded_tokens: int = 0  # tokens after the first, and the time they took
    decoding_seconds: float = 0.0
    first_token_p50: float | None = None  # seconds from queued to the first token
    first_token_p95: float | None = None
    day: dt.date | None = field(default=None, compare=False)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def queued_seconds(self) -> float | None:
        """The mean time from queued to started."""
        return self.queued_total / self.started if self.started else None

    @property
    def tokens_per_second(self) -> float | None:
        if not self.decoded_tokens or self.decoding_seconds <= 0:
            return None
        return self.decoded_tokens / self.decoding_seconds


def combined(rows: Iterable[Row], key: str = "total") -> Row:
    """The rows added up (without percentiles: they do not add)."""
    rows = list(rows)
    return Row(
        key=key,
        requests=sum(row.requests for row in rows),
        prompt_tokens=sum(row.prompt_tokens for row in rows),
        completion_tokens=sum(row.completion_tokens for row in rows),
        images=sum(row.images for row in rows),
        started=sum(row.started for row in rows),
        queued_total=sum(row.queued_total for row in rows),
        decoded_tokens=sum(row.decoded_tokens for row in rows),
        decoding_seconds=sum(row.decoding_seconds for row in rows),
    )


def last_days(days: int, today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The `days` days ending today (today included)."""
    end = today or timezone.localdate()
    return end - dt.timedelta(days=days - 1), end


def generations(filters: Filters) -> QuerySet[Generation]:
    """The rows the filters select: a range of queued_at (indexed, and with the user)."""
    zone = timezone.get_current_timezone()
    since = dt.datetime.combine(filters.start, dt.time.min, tzinfo=zone)
    until = dt.datetime.combine(filters.end + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
    rows = Generation.objects.filter(queued_at__gte=since, queued_at__lt=until)
    if filters.user_id is not None:
        rows = rows.filter(user_id=filters.user_id)
    if filters.group_id is not None:
        rows = rows.filter(user__groups=filters.group_id)
    if filters.model_name:
        rows = rows.filter(model_name=filters.model_name)
    if filters.source:
        rows = rows.filter(source=filters.source)
    return rows.order_by()


class PercentilesCont(Aggregate):
    """PostgreSQL's continuous percentiles of an ordered set, several from one sort
    (NULLs left out)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(ARRAY[%(fractions)s]) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fractions: Sequence[float]) -> None:
        # Constants of ours, never user input: safe in the SQL text.
        super().__init__(
            expression,
            fractions=", ".join(str(float(f)) for f in fractions),
            output_field=ArrayField(DurationField()),
        )


def _duration(later: str, earlier: str) -> ExpressionWrapper:
    return ExpressionWrapper(F(later) - F(earlier), output_field=DurationField())


QUEUED = _duration("started_at", "queued_at")
FIRST_TOKEN = _duration("first_token_at", "queued_at")
DECODING = _duration("finished_at", "first_token_at")
# Replies with a speed: more than one token, between a first token and an end.
DECODED = Q(completion_tokens__gt=1, first_token_at__isnull=False, finished_at__isnull=False)


def _percentiles_in_database() -> bool:
    return connection.vendor == "postgresql"


class Adds(enum.Enum):
    """How a measure's rows add up."""

    COUNT = "COUNT(%s)"  # the rows where it is not NULL
    SUM = "COALESCE(SUM(%s), 0)"
    DURATION = "SUM(%s)"  # NULL when no row has one


# Each measure: what a row brings, and how the rows add up.
MEASURES: dict[str, tuple[Any, Adds]] = {
    "requests": (F("id"), Adds.COUNT),
    "prompt": (F("prompt_tokens"), Adds.SUM),
    "completion": (F("completion_tokens"), Adds.SUM),
    "image_count": (F("images"), Adds.SUM),
    "started": (F("started_at"), Adds.COUNT),
    "queued": (QUEUED, Adds.DURATION),
    "decoded_tokens": (Case(When(DECODED, then=F("completion_tokens") - 1)), Adds.SUM),
    "decoding": (Case(When(DECODED, then=DECODING), output_field=DurationField()), Adds.DURATION),
}


def _aggregate(value: Any, adds: Adds) -> Aggregate | Coalesce:
    if adds == Adds.COUNT:
        return Count(value)
    return Coalesce(Sum(value), 0) if adds == Adds.SUM else Sum(value)


def _measures() -> dict[str, Aggregate | Coalesce]:
    """The measures as the ORM's aggregates."""
    return {name: _aggregate(value, adds) for name, (value, adds) in MEASURES.items()}


def _seconds(value: dt.timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _row(key: str, day: dt.date | None, values: dict[str, Any]) -> Row:
    return Row(
        key=key,
        day=day,
        requests=values["requests"],
        prompt_tokens=values["prompt"],
        completion_tokens=values["completion"],
        images=values["image_count"],
        started=values["started"],
        queued_total=_seconds(values["queued"]) or 0.0,
        decoded_tokens=values["decoded_tokens"],
        decoding_seconds=_seconds(values["decoding"]) or 0.0,
    )


def _key(by: By) -> Any:
    return {
        By.DAY: TruncDate("queued_at"),
        By.USER: F("user__username"),
        By.GROUP: Coalesce(F("user__groups__name"), Value(NO_GROUP)),
        By.MODEL: F("model_name"),
    }[by]


def _label(by: By, key: Any) -> tuple[str, dt.date | None]:
    if by == By.DAY:
        return key.isoformat(), key
    return str(key), None


def grouped(filters: Filters, by: By) -> QuerySet[Generation, dict[str, Any]]:
    """The query of a breakdown: the sums of each key."""
    return (
        generations(filters)
        .annotate(key=_key(by))
        .values("key")
        .annotate(**_measures())
        .order_by("key")
    )


def breakdown(filters: Filters, by: By) -> list[Row]:
    """One row per day, user, group or model that has usage, in key order; by model with
    the time to first token's percentiles. A user in two groups counts in both."""
    if by == By.DAY and connection.vendor == "postgresql":
        return _days_joined(filters)
    rows = [_row(*_label(by, values["key"]), values) for values in grouped(filters, by)]
    return with_percentiles(rows, filters) if by == By.MODEL else rows


def by_model_and_user(filters: Filters) -> tuple[list[Row], list[Row]]:
    """The breakdowns by model (with the percentiles) and by user, from one pass over the
    rows: the sums of each model and user, added up each way."""
    pairs = (
        generations(filters)
        .values("model_name", "user__username")
        .annotate(**_measures())
        .order_by("model_name", "user__username")
    )
    models: dict[str, list[Row]] = defaultdict(list)
    users: dict[str, list[Row]] = defaultdict(list)
    for values in pairs:
        row = _row("", None, values)
        models[values["model_name"]].append(row)
        users[values["user__username"]].append(row)
    return (
        with_percentiles([combined(rows, key) for key, rows in models.items()], filters),
        [combined(users[key], key) for key in sorted(users)],
    )


def _days_joined(filters: Filters) -> list[Row]:
    """The breakdown by day on PostgreSQL, the rows joined to the days of the range.

    Grouped by a day computed from queued_at, PostgreSQL, which has no statistics of it,
    expects as many days as rows and sorts them all (a year of rows spills to disk);
    joined to the list of days it expects one group a day, and hashes them in parallel.
    The same rows and sums as `grouped` by day (the tests hold them equal)."""
    values = {name: value for name, (value, _) in MEASURES.items()}
    rows, params = (
        generations(filters).values(day=TruncDate("queued_at"), **values).query.sql_with_params()
    )
    sums = ", ".join(
        f"{adds.value % f'generation.{name}'} AS {name}" for name, (_, adds) in MEASURES.items()
    )
    # Our measures' names and the ORM's SQL, whose values stay parameters.
    sql = (
        f"SELECT days.day AS key, {sums} FROM ({rows}) AS generation"  # noqa: S608
        " JOIN unnest(%s::date[]) AS days(day) ON days.day = generation.day"
        " GROUP BY days.day ORDER BY days.day"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, (*params, filters.days))
        names = [column.name for column in cursor.description]
        return [
            _row(*_label(By.DAY, found[0]), dict(zip(names, found, strict=True)))
            for found in cursor.fetchall()
        ]


def top(rows: Iterable[Row], limit: int = 10) -> list[Row]:
    """The rows (users) with the most tokens, then the most requests."""
    return sorted(rows, key=lambda row: (-row.tokens, -row.requests, row.key))[:limit]


def daily(filters: Filters) -> list[Row]:
    """Every day of the range, days without usage included (as zeros)."""
    found = {row.day: row for row in breakdown(filters, By.DAY)}
    return [found.get(day) or Row(key=day.isoformat(), day=day) for day in filters.days]


def periods(filters: Filters, most_days: int = 92) -> tuple[By, list[Row], list[Row]]:
    """What a chart can show: every day of the range, or every week (from its Monday,
    the days added up) when the range is longer than `most_days`; and the days."""
    days = daily(filters)
    if len(days) <= most_days:
        return By.DAY, days, days
    weeks: dict[dt.date, list[Row]] = defaultdict(list)
    for row in days:
        if row.day is not None:
            weeks[row.day - dt.timedelta(days=row.day.weekday())].append(row)
    return (
        By.WEEK,
        [replace(combined(rows, monday.isoformat()), day=monday) for monday, rows in weeks.items()],
        days,
    )


def with_percentiles(rows: list[Row], filters: Filters) -> list[Row]:
    """The rows of a breakdown by model with each model's time to first token, p50 and
    p95, over its replies that had a first token."""
    replies = generations(filters).filter(first_token_at__isnull=False)
    found: dict[str, tuple[float | None, ...]] = {}
    if _percentiles_in_database():
        ordered = replies.values("model_name").annotate(
            first_token=PercentilesCont(FIRST_TOKEN, QUANTILES)
        )
        for values in ordered.values_list("model_name", "first_token"):
            found[values[0]] = tuple(_seconds(value) for value in values[1])
    else:  # the same interpolation, computed here
        durations: dict[str, list[float]] = defaultdict(list)
        for key, value in replies.values_list("model_name", FIRST_TOKEN):
            durations[key].append(value.total_seconds())
        for key, seconds in durations.items():
            found[key] = tuple(percentile(seconds, fraction) for fraction in QUANTILES)
    return [
        replace(row, first_token_p50=p50, first_token_p95=p95)
        for row in rows
        for p50, p95 in [found.get(row.key, (None, None))]
    ]


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """The continuous percentile (linear interpolation between the two nearest values) of
    durations in seconds, as PostgreSQL's percentile_cont computes it."""
    ordered: Sequence[float] = sorted(values)
    if not ordered:
        return None
    place = fraction * (len(ordered) - 1)
    below = int(place)
    above = min(below + 1, len(ordered) - 1)
    value = ordered[below] + (ordered[above] - ordered[below]) * (place - below)
    return round(value, 6)  # to the microsecond, as PostgreSQL's intervals are
