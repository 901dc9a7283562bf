"""Quotas: how much a user may generate, and how much of it they have used.

Four limits: replies in progress at once (`max_concurrent`, interactive requests only),
model calls a minute, and tokens (prompts and outputs of every task) a day and a month.
Each comes from the site's default (ATELIER_* settings; 0 there means none), raised or
lowered per group (a user in several groups gets the most generous), and replaced per user
by an admin's `UserLimits`. The ledger is the Generation rows: a finished generation counts
its real tokens, one still queued or running what it may use (`reserved_tokens`, set by the
front door from its input and its maximum output), so requests arriving together cannot
all slip under a limit that only the first of them fits.

The front door calls `check` after `hold`, which serializes one user's requests until the
transaction that queues them commits; so counting is exact under concurrency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Case, Count, F, Min, Q, Sum, When
from django.utils import timezone

from webapp.accounts.models import QuotaLock, User
from webapp.inference.models import FINISHED, Generation, Priority, Status
from webapp.inference.refusals import LimitReached, QuotaExceeded

LIMIT_NAMES = ("max_concurrent", "requests_per_minute", "tokens_per_day", "tokens_per_month")
LABELS = {
    "max_concurrent": "Replies in progress",
    "requests_per_minute": "Requests this minute",
    "tokens_per_day": "Tokens today",
    "tokens_per_month": "Tokens this month",
}
# The model field each limit is stored in, on GroupLimits and UserLimits.
FIELDS = {
    "max_concurrent": "max_concurrent_generations",
    "requests_per_minute": "requests_per_minute",
    "tokens_per_day": "tokens_per_day",
    "tokens_per_month": "tokens_per_month",
}
# Never counted against the user's requests a minute: the studio's own follow-ups.
UNCOUNTED_TASKS = ("chat_title",)


@dataclass(frozen=True)
class Limits:
    """A user's limits; None is no limit."""

    max_concurrent: int
    requests_per_minute: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None

    def get(self, name: str) -> int | None:
        value: int | None = getattr(self, name)
        return value


@dataclass(frozen=True)
class Standing:
    """One limit of a user's and how much of it is used now."""

    name: str
    label: str
    limit: int | None
    used: int
    remaining: int | None
    resets_at: datetime | None


def _default(name: str) -> int | None:
    if name == "max_concurrent":
        return int(settings.ATELIER_MAX_CONCURRENT_GENERATIONS)
    value = int(getattr(settings, f"ATELIER_{name.upper()}"))
    return value or None  # 0: no limit


def _most_generous(values: Iterable[int | None]) -> int | None:
    found = list(values)
    return None if any(v is None for v in found) else max(v for v in found if v is not None)


def limits_for(user: User) -> Limits:
    """The user's limits, read in one query: the admin's override of each, else the most
    generous of their groups' (a group that sets none gives the default), else the
    default."""
    names = list(FIELDS.values())
    rows = list(
        User.objects.filter(pk=user.pk).values_list(
            "groups__id",
            *(f"limits_override__{field}" for field in names),
            *(f"groups__atelier_limits__{field}" for field in names),
        )
    )
    chosen: dict[str, Any] = {}
    for index, name in enumerate(FIELDS):
        default = _default(name)
        own = rows[0][1 + index] if rows else None
        groups = [row[1 + len(names) + index] for row in rows if row[0] is not None]
        if own is not None:
            chosen[name] = own
        elif groups:
            chosen[name] = _most_generous(default if value is None else value for value in groups)
        else:
            chosen[name] = default
    if chosen["max_concurrent"] is None:  # every group's is a number; kept for the type
        chosen["max_concurrent"] = _default("max_concurrent")
    return Limits(**chosen)


@dataclass(frozen=True)
class Windows:
    now: datetime
    minute: datetime  # requests since then count against the minute's
    day: datetime
    next_day: datetime
    month: datetime
    next_month: datetime

    @classmethod
    def at(cls, now: datetime | None = None) -> Windows:
        now = now or timezone.now()
        local = timezone.localtime(now)
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        next_month = (month + timedelta(days=32)).replace(day=1)
        return cls(
            now=now,
            minute=now - timedelta(seconds=60),
            day=day,
            next_day=timezone.localtime(day + timedelta(days=1)).replace(hour=0),
            month=month,
            next_month=next_month,
        )


@dataclass(frozen=True)
class Used:
    in_progress: int
    requests_last_minute: int
    oldest_in_minute: datetime | None
    tokens_today: int
    tokens_this_month: int


# A generation's tokens: its real ones once finished, until then what it may use.
_COST = Case(
    When(status__in=FINISHED, then=F("prompt_tokens") + F("completion_tokens")),
    default=F("reserved_tokens"),
)


def used_by(user: User, windows: Windows) -> Used:
    """What the user has used in each window, and their requests in progress: one query."""
    since = min(windows.month, windows.minute)
    in_minute = Q(queued_at__gte=windows.minute) & ~Q(task__in=UNCOUNTED_TASKS)
    unfinished = Q(status__in=[Status.QUEUED, Status.RUNNING])
    totals = (
        Generation.objects.filter(user=user)
        .filter(Q(queued_at__gte=since) | unfinished)
        .aggregate(
            month=Sum(_COST, filter=Q(queued_at__gte=windows.month)),
            day=Sum(_COST, filter=Q(queued_at__gte=windows.day)),
            minute=Count("pk", filter=in_minute),
            oldest=Min("queued_at", filter=in_minute),
            in_progress=Count("pk", filter=unfinished & Q(priority=Priority.INTERACTIVE)),
        )
    )
    return Used(
        in_progress=totals["in_progress"] or 0,
        requests_last_minute=totals["minute"] or 0,
        oldest_in_minute=totals["oldest"],
        tokens_today=totals["day"] or 0,
        tokens_this_month=totals["month"] or 0,
    )


def standing(user: User, now: datetime | None = None) -> list[Standing]:
    """Each limit of the user's with what is used and left, and when it resets."""
    windows = Windows.at(now)
    limits = limits_for(user)
    used = used_by(user, windows)
    minute_reset = used.oldest_in_minute + timedelta(seconds=60) if used.oldest_in_minute else None
    rows = {
        "max_concurrent": (used.in_progress, None),
        "requests_per_minute": (used.requests_last_minute, minute_reset),
        "tokens_per_day": (used.tokens_today, windows.next_day),
        "tokens_per_month": (used.tokens_this_month, windows.next_month),
    }
    result = []
    for name in LIMIT_NAMES:
        count, resets_at = rows[name]
        limit = limits.get(name)
        result.append(
            Standing(
                name=name,
                label=LABELS[name],
                limit=limit,
                used=count,
                remaining=None if limit is None else max(0, limit - count),
                resets_at=resets_at,
            )
        )
    return result


def hold(user: User) -> None:
    """Serialize this user's quota checks until the current transaction ends: the update
    locks the user's QuotaLock row in PostgreSQL and takes SQLite's write lock. Call inside
    a transaction, before `check`."""
    if not QuotaLock.objects.filter(user=user).update(checks=F("checks") + 1):
        QuotaLock.objects.bulk_create([QuotaLock(user=user)], ignore_conflicts=True)
        QuotaLock.objects.filter(user=user).update(checks=F("checks") + 1)


def _when(moment: datetime, now: datetime) -> str:
    seconds = max(1, math.ceil((moment - now).total_seconds()))
    if seconds < 120:
        return f"in {seconds} second{'s' if seconds != 1 else ''}"
    local = timezone.localtime(moment)
    if moment - now < timedelta(days=1):
        return f"at {local:%H:%M} {local.tzname()}"
    return f"on {local:%Y-%m-%d} at {local:%H:%M} {local.tzname()}"


def check(user: User, *, interactive: bool, counted: bool = True) -> None:
    """Refuse a new request the user's limits do not allow now: LimitReached at the limit
    of replies in progress (interactive requests only: background work waits in the
    queue), QuotaExceeded for the minute's requests or the day's or month's tokens.
    `counted`: False for the studio's own follow-ups (titles), which no quota refuses."""
    if not counted:
        return
    windows = Windows.at()
    limits = limits_for(user)
    used = used_by(user, windows)
    if interactive and used.in_progress >= limits.max_concurrent:
        busy = used.in_progress
        raise LimitReached(
            f"You already have {busy} repl{'y' if busy == 1 else 'ies'} in progress, "
            f"your limit; wait for one to finish or stop it."
        )
    now = windows.now
    rpm = limits.requests_per_minute
    if rpm is not None and used.requests_last_minute >= rpm:
        resets_at = (used.oldest_in_minute or now) + timedelta(seconds=60)
        raise QuotaExceeded(
            f"You have reached your limit of {rpm:,} request{'s' if rpm != 1 else ''} a "
            f"minute; you can send more {_when(resets_at, now)}.",
            code="rate_limit_exceeded",
            limit="requests_per_minute",
            allowed=rpm,
            resets_at=resets_at,
        )
    for name, spent, resets_at, period in (
        ("tokens_per_day", used.tokens_today, windows.next_day, "today"),
        ("tokens_per_month", used.tokens_this_month, windows.next_month, "this month"),
    ):
        allowed = limits.get(name)
        if allowed is not None and spent >= allowed:
            raise QuotaExceeded(
                f"You have used your {allowed:,} tokens for {period}; your quota resets "
                f"{_when(resets_at, now)}.",
                code="insufficient_quota",
                limit=name,
                allowed=allowed,
                resets_at=resets_at,
            )


# Tasks whose output is text the size of their input when they set no maximum.
TEXT_OUT_TASKS = ("summarize", "translate")


def reservation(task: str, input: dict[str, Any], params: dict[str, Any]) -> int:
    """What a request may use before it has run: its input's tokens, estimated at four
    characters a token, plus its maximum output; for a summary or a translation without
    one, as many again as its input; for embeddings, moderation and images, nothing."""
    chars = sum(len(text) for text in _texts(input))
    prompt = math.ceil(chars / 4)
    most = params.get("max_new_tokens")
    if isinstance(most, int) and most > 0:
        return prompt + most
    return prompt + (prompt if task in TEXT_OUT_TASKS else 0)


# Input fields that are not text the model reads: a message's role, an image's path, a
# summary's length, a translation's languages.
_NOT_TEXT = {"role", "image", "length", "target", "source"}


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOT_TEXT:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
