"""Usage figures read from the ledger, the Generation rows, and aggregated in the database:
by day, user, group or model over a range of days, with the admin dashboard's filters.

A row's tokens are its prompt and completion tokens (an embedding's or a moderation's input
counts as prompt tokens). Its time queued runs from queued to started, its time to first
token from queued to the first token (as the chat page shows it), and a model's speed is
its tokens after the first over the time after the first, over all its replies together.
Rows add up, so a total is the sum of a breakdown's rows rather than another pass over
the table. The time to first token's percentiles are read per model only (the ordered-set
aggregate sorts its rows; sums hash): PostgreSQL's percentile_cont, or on other databases
(SQLite in development) the same interpolation computed here from the durations.
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


def _measures(percentiles: bool) -> dict[str, Any]:
    measures: dict[str, Any] = {
        "requests": Count("id"),
        "prompt": Coalesce(Sum("prompt_tokens"), 0),
        "completion": Coalesce(Sum("completion_tokens"), 0),
        "image_count": Coalesce(Sum("images"), 0),
        "started": Count("started_at"),
        "queued": Sum(QUEUED),
        "decoded_tokens": Coalesce(Sum(Case(When(DECODED, then=F("completion_tokens") - 1))), 0),
        "decoding": Sum(Case(When(DECODED, then=DECODING), output_field=DurationField())),
    }
    if percentiles and _percentiles_in_database():
        measures["first_token"] = PercentilesCont(FIRST_TOKEN, QUANTILES)
    return measures


def _seconds(value: dt.timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _row(key: str, day: dt.date | None, values: dict[str, Any]) -> Row:
    p50, p95 = values.get("first_token") or (None, None)
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
        first_token_p50=_seconds(p50),
        first_token_p95=_seconds(p95),
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
    """The query of a breakdown: the sums of each key, and by model the percentiles."""
    return (
        generations(filters)
        .annotate(key=_key(by))
        .values("key")
        .annotate(**_measures(percentiles=by == By.MODEL))
        .order_by("key")
    )


def breakdown(filters: Filters, by: By) -> list[Row]:
    """One row per day, week, user, group or model that has usage, in key order; by model
    with the time to first token's percentiles. A user in two groups counts in both."""
    rows = [_row(*_label(by, values["key"]), values) for values in grouped(filters, by)]
    if by == By.MODEL and not _percentiles_in_database():
        rows = _with_percentiles(rows, generations(filters).annotate(key=_key(by)), by)
    return rows


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


def _with_percentiles(rows: list[Row], keyed: QuerySet[Generation], by: By) -> list[Row]:
    """The first-token percentiles computed here, for databases without percentile_cont."""
    durations: dict[str, list[float]] = defaultdict(list)
    for key, value in keyed.filter(first_token_at__isnull=False).values_list("key", FIRST_TOKEN):
        durations[_label(by, key)[0]].append(value.total_seconds())
    return [
        replace(
            row,
            first_token_p50=percentile(durations.get(row.key, []), 0.5),
            first_token_p95=percentile(durations.get(row.key, []), 0.95),
        )
        for row in rows
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
