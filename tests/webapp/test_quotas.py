"""Quotas (`accounts.quotas`), checked in the front door: which limits a user has (groups,
the most generous; an admin's override), each refused with its code and its reset, the
reset honoured, counting exact with fifty requests at once, and the usage ledger's source."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection, connections, transaction
from django.test import override_settings
from django.utils import timezone

from webapp.accounts import quotas
from webapp.accounts.models import GroupLimits, UserLimits
from webapp.inference import front_door
from webapp.inference.models import Generation, Priority, Source, Status
from webapp.inference.refusals import LimitReached, QuotaExceeded, Refused

pytestmark = pytest.mark.django_db


def submit(user: Any, text: str = "Hello there", **kwargs: Any) -> Generation:
    return front_door.submit(
        user,
        task="chat",
        model=None,
        input={"system": "", "messages": [{"role": "user", "content": text}]},
        **kwargs,
    )


def done(generation: Generation, prompt: int, completion: int, **fields: Any) -> None:
    Generation.objects.filter(pk=generation.pk).update(
        status=Status.DONE, prompt_tokens=prompt, completion_tokens=completion, **fields
    )


def group_with(user: Any, name: str, **limits: Any) -> Group:
    group = Group.objects.create(name=name)
    GroupLimits.objects.create(group=group, **limits)
    user.groups.add(group)
    return group


@override_settings(
    ATELIER_TOKENS_PER_DAY=1000, ATELIER_TOKENS_PER_MONTH=0, ATELIER_REQUESTS_PER_MINUTE=5
)
def test_limits_come_from_the_default_the_most_generous_group_and_the_users_override(
    alice: Any,
) -> None:
    limits = quotas.limits_for(alice)
    assert (limits.tokens_per_day, limits.tokens_per_month, limits.requests_per_minute) == (
        1000,
        None,  # 0 in the settings: no limit
        5,
    )
    group_with(alice, "small", tokens_per_day=500, requests_per_minute=None)  # rpm: default
    group_with(alice, "large", tokens_per_day=20_000, requests_per_minute=3)
    limits = quotas.limits_for(alice)
    assert limits.tokens_per_day == 20_000 and limits.requests_per_minute == 5
    UserLimits.objects.create(user=alice, tokens_per_day=50)  # the rest as the groups say
    limits = quotas.limits_for(alice)
    assert limits.tokens_per_day == 50 and limits.requests_per_minute == 5


@override_settings(ATELIER_REQUESTS_PER_MINUTE=2, ATELIER_MAX_CONCURRENT_GENERATIONS=10)
def test_requests_a_minute_are_refused_with_their_code_and_allowed_again_after_the_minute(
    alice: Any, chat_model: Any
) -> None:
    first = submit(alice)
    submit(alice)
    with pytest.raises(QuotaExceeded) as refused:
        submit(alice)
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.limit == "requests_per_minute" and refused.value.allowed == 2
    assert "2 requests a minute" in refused.value.message
    assert re.search(r"you can send more in (59|60) seconds\.$", refused.value.message)
    assert first.queued_at + timedelta(seconds=59) < refused.value.resets_at
    assert Generation.objects.filter(user=alice).count() == 2  # the refused one stored nothing
    # A minute later the first two no longer count.
    Generation.objects.filter(user=alice).update(queued_at=timezone.now() - timedelta(seconds=61))
    submit(alice)


@override_settings(ATELIER_REQUESTS_PER_MINUTE=1, ATELIER_MAX_CONCURRENT_GENERATIONS=10)
def test_refusals_are_counted_for_metrics_by_code(alice: Any, chat_model: Any) -> None:
    from prometheus_client import REGISTRY

    labels = {"task": "chat", "code": "rate_limit_exceeded"}
    before = REGISTRY.get_sample_value("atelier_requests_refused_total", labels) or 0.0
    submit(alice)
    with pytest.raises(QuotaExceeded):
        submit(alice)
    assert REGISTRY.get_sample_value("atelier_requests_refused_total", labels) == before + 1


@override_settings(ATELIER_TOKENS_PER_DAY=100, ATELIER_MAX_CONCURRENT_GENERATIONS=10)
def test_the_days_tokens_count_real_tokens_once_finished_and_reset_the_next_day(
    alice: Any, chat_model: Any
) -> None:
    first = submit(alice, params={"max_new_tokens": 30})
    assert first.reserved_tokens == 3 + 30  # "Hello there": 11 characters, 3 tokens
    done(first, prompt=40, completion=59)  # 99 tokens used
    second = submit(alice)  # 99 < 100: allowed, and it may cross the limit: it finishes
    done(second, prompt=10, completion=20)
    with pytest.raises(QuotaExceeded) as refused:
        submit(alice)
    assert refused.value.code == "insufficient_quota" and refused.value.limit == "tokens_per_day"
    assert "100 tokens for today" in refused.value.message
    tomorrow = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    assert refused.value.resets_at == tomorrow + timedelta(days=1)
    # Yesterday's tokens do not count today.
    Generation.objects.filter(user=alice).update(queued_at=timezone.now() - timedelta(days=1))
    by_name = {s.name: s for s in quotas.standing(alice)}
    assert by_name["tokens_per_day"].used == 0 and by_name["tokens_per_day"].remaining == 100
    submit(alice)


@override_settings(ATELIER_TOKENS_PER_MONTH=500, ATELIER_MAX_CONCURRENT_GENERATIONS=10)
def test_the_months_tokens_and_the_standing_the_usage_page_shows(
    alice: Any, chat_model: Any
) -> None:
    done(submit(alice), prompt=300, completion=250)
    with pytest.raises(QuotaExceeded) as refused:
        submit(alice)
    assert refused.value.limit == "tokens_per_month" and refused.value.code == "insufficient_quota"
    first_of_next = refused.value.resets_at
    assert timezone.localtime(first_of_next).day == 1 and first_of_next > timezone.now()
    by_name = {s.name: s for s in quotas.standing(alice)}
    month = by_name["tokens_per_month"]
    assert (month.limit, month.used, month.remaining) == (500, 550, 0)
    assert by_name["tokens_per_day"].limit is None and by_name["tokens_per_day"].used == 550


@override_settings(ATELIER_TOKENS_PER_DAY=10, ATELIER_REQUESTS_PER_MINUTE=1)
def test_titles_are_never_refused_by_a_quota_and_background_work_skips_the_concurrent_limit(
    alice: Any, chat_model: Any
) -> None:
    done(submit(alice), prompt=5, completion=5)
    with pytest.raises(QuotaExceeded):
        submit(alice, priority=Priority.BACKGROUND)  # quotas apply to background work too
    title = front_door.submit(
        alice,
        task="chat_title",
        model=None,
        input={"system": "", "messages": [{"role": "user", "content": "a title"}]},
        priority=Priority.BACKGROUND,
        model_task="chat",
        counted=False,
    )
    assert title.status == Status.QUEUED


@override_settings(ATELIER_MAX_CONCURRENT_GENERATIONS=1)
def test_the_concurrent_limit_is_still_limit_reached_and_an_override_raises_it(
    alice: Any, chat_model: Any
) -> None:
    submit(alice)
    with pytest.raises(LimitReached, match="1 reply in progress"):
        submit(alice)
    UserLimits.objects.create(user=alice, max_concurrent_generations=2)
    submit(alice)


def test_what_a_request_may_use_is_reserved_by_task() -> None:
    chat = {"system": "", "messages": [{"role": "user", "content": "x" * 40}]}
    assert quotas.reservation("chat", chat, {"max_new_tokens": 100}) == 10 + 100
    assert quotas.reservation("translate", {"text": "x" * 40, "target": "de"}, {}) == 10 + 10
    assert quotas.reservation("summarize", {"text": "x" * 400, "length": "short"}, {}) == 200
    assert quotas.reservation("embed", {"texts": ["x" * 40, "y" * 40]}, {}) == 20
    assert quotas.reservation("classify_image", {"image": "7/a.png", "top_k": 5}, {}) == 0


def test_the_ledger_records_the_front_door_and_the_api_key(alice: Any, chat_model: Any) -> None:
    from webapp.api import keys

    assert submit(alice).source == Source.WEB
    assert submit(alice, source=Source.BATCH, priority=Priority.BACKGROUND).source == Source.BATCH
    key = keys.create_key(alice, "tool").key
    with front_door.origin(Source.API, key.pk):
        generation = submit(alice, priority=Priority.BACKGROUND)
    assert generation.source == Source.API and generation.api_key_id == key.pk
    assert submit(alice, priority=Priority.BACKGROUND).source == Source.WEB  # origin ended


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL's row locks"
)
@pytest.mark.django_db(transaction=True)
@override_settings(
    ATELIER_REQUESTS_PER_MINUTE=0, ATELIER_TOKENS_PER_DAY=0, ATELIER_MAX_CONCURRENT_GENERATIONS=100
)
@pytest.mark.parametrize(
    ("limit", "expected"),
    [({"requests_per_minute": 7}, 7), ({"tokens_per_day": 330}, 10)],  # 33 reserved each
)
def test_fifty_requests_at_once_never_let_more_through_than_the_quota_allows(
    alice: Any, chat_model: Any, limit: dict[str, int], expected: int
) -> None:
    UserLimits.objects.create(user=alice, **limit)
    start = threading.Barrier(51)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            start.wait(timeout=60)
            submit(alice, params={"max_new_tokens": 30})
            result = "queued"
        except Refused as refused:
            result = refused.code
        except Exception as exc:  # e.g. a broken barrier: counted, and the test fails
            result = repr(exc)
            start.abort()
        finally:
            connections.close_all()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    # The fifty arrive while one more request is being queued and not yet committed, as
    # when many tabs and tools of one person send at once.
    with transaction.atomic():
        submit(alice, params={"max_new_tokens": 30})
        start.wait(timeout=60)
        time.sleep(1)  # the fifty reach the front door meanwhile
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 50
    assert outcomes.count("queued") == expected - 1
    assert Generation.objects.filter(user=alice).count() == expected
    code = "rate_limit_exceeded" if "requests_per_minute" in limit else "insufficient_quota"
    assert outcomes.count(code) == 50 - (expected - 1)
