"""The usage pages and their figures: Generation rows made with known tokens and timings,
then read back through the services, the pages and the CSV export (PostgreSQL's
percentile_cont, and the fallback other databases take, on the same rows)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from webapp.inference.models import Generation, Source, Status
from webapp.usage import services
from webapp.usage.services import By, Filters

pytestmark = pytest.mark.django_db

TODAY = timezone.localdate()
YESTERDAY = TODAY - dt.timedelta(days=1)


def generation(
    user: Any,
    model: str,
    *,
    day: dt.date = TODAY,
    queued: float = 0.5,
    first_token: float | None = 1.0,
    decoding: float = 2.0,
    prompt: int = 10,
    completion: int = 21,
    images: int = 0,
    source: str = Source.WEB,
    task: str = "chat",
) -> Generation:
    """A finished generation queued at noon of `day`: started `queued` seconds later, its
    first token `first_token` seconds after it was queued, done `decoding` seconds after."""
    row = Generation.objects.create(
        user=user, model_name=model, task=task, input={}, source=source, status=Status.DONE
    )
    at = dt.datetime.combine(day, dt.time(12), tzinfo=timezone.get_current_timezone())
    first = at + dt.timedelta(seconds=first_token) if first_token is not None else None
    Generation.objects.filter(pk=row.pk).update(
        queued_at=at,
        started_at=at + dt.timedelta(seconds=queued),
        first_token_at=first,
        finished_at=(first or at) + dt.timedelta(seconds=decoding),
        prompt_tokens=prompt,
        completion_tokens=completion,
        images=images,
    )
    return row


@pytest.fixture
def ledger(alice: Any, bob: Any) -> dict[str, Any]:
    """alice: three chat replies on "llm-a" (first tokens after 1, 2 and 5 s) and an image
    on "vit" yesterday through the API; bob: one batch summary on "llm-b" today. bob is in
    the group "team"; alice in none."""
    team = Group.objects.create(name="team")
    bob.groups.add(team)
    generation(alice, "llm-a", first_token=1.0, queued=0.5, prompt=10, completion=21)
    generation(alice, "llm-a", first_token=2.0, queued=1.5, prompt=20, completion=11)
    generation(alice, "llm-a", first_token=5.0, queued=1.0, prompt=30, completion=1)
    generation(
        alice,
        "vit",
        day=YESTERDAY,
        first_token=None,
        prompt=0,
        completion=0,
        images=1,
        source=Source.API,
        task="classify_image",
    )
    generation(bob, "llm-b", source=Source.BATCH, prompt=100, completion=41, decoding=4.0)
    # Outside every range asked for below: 40 days ago.
    generation(alice, "llm-a", day=TODAY - dt.timedelta(days=40), prompt=999, completion=999)
    return {"team": team}


def last_week(**kwargs: Any) -> Filters:
    return Filters(TODAY - dt.timedelta(days=6), TODAY, **kwargs)


def total(filters: Filters) -> services.Row:
    return services.combined(services.breakdown(filters, By.MODEL))


def by_key(rows: list[services.Row]) -> dict[str, services.Row]:
    return {row.key: row for row in rows}


def test_figures_by_model_match_the_rows_they_come_from(ledger: dict[str, Any]) -> None:
    rows = by_key(services.breakdown(last_week(), By.MODEL))
    assert set(rows) == {"llm-a", "llm-b", "vit"}
    llm_a = rows["llm-a"]
    assert (llm_a.requests, llm_a.prompt_tokens, llm_a.completion_tokens) == (3, 60, 33)
    assert llm_a.tokens == 93
    assert llm_a.queued_seconds == pytest.approx(1.0)  # (0.5 + 1.5 + 1.0) / 3
    # percentile_cont over 1, 2, 5 s: the median, and 2 + 0.9 * (5 - 2) at 95 %.
    assert llm_a.first_token_p50 == pytest.approx(2.0)
    assert llm_a.first_token_p95 == pytest.approx(4.7)
    # Tokens after the first over the time after the first, the one-token reply left out:
    # (20 + 10) / (2 + 2) s.
    assert llm_a.tokens_per_second == pytest.approx(7.5)
    vit = rows["vit"]
    assert (vit.requests, vit.images, vit.tokens) == (1, 1, 0)
    assert vit.first_token_p50 is None and vit.tokens_per_second is None
    assert rows["llm-b"].tokens_per_second == pytest.approx(40 / 4.0)


def test_totals_days_users_groups_and_filters(ledger: dict[str, Any], alice: Any) -> None:
    everything = total(last_week())
    assert (everything.requests, everything.tokens, everything.images) == (5, 93 + 141, 1)
    assert everything.queued_seconds == pytest.approx((0.5 + 1.5 + 1.0 + 0.5 + 0.5) / 5)
    assert everything.tokens_per_second == pytest.approx((20 + 10 + 40) / (2 + 2 + 4))
    assert everything.first_token_p50 is None  # percentiles do not add up

    days = services.daily(last_week())
    assert len(days) == 7 and days[-1].day == TODAY and days[0].requests == 0
    assert (days[-1].requests, days[-2].requests, days[-2].images) == (4, 1, 1)

    users = by_key(services.breakdown(last_week(), By.USER))
    assert (users["alice"].requests, users["alice"].tokens) == (4, 93)
    assert (users["bob"].requests, users["bob"].tokens) == (1, 141)
    assert [row.key for row in services.top(users.values(), 1)] == ["bob"]
    assert services.breakdown(last_week(), By.USER)[0].first_token_p50 is None  # by model only

    groups = by_key(services.breakdown(last_week(), By.GROUP))
    assert groups["team"].tokens == 141 and groups[services.NO_GROUP].tokens == 93

    team = total(last_week(group_id=ledger["team"].pk))
    assert (team.requests, team.tokens) == (1, 141)
    api = total(last_week(source=Source.API))
    assert (api.requests, api.images) == (1, 1)
    assert total(last_week(user_id=alice.pk, model_name="llm-a")).tokens == 93
    month = Filters(TODAY - dt.timedelta(days=45), TODAY, user_id=alice.pk)
    assert total(month).tokens == 93 + 1998


def test_long_ranges_are_charted_by_week(ledger: dict[str, Any]) -> None:
    recent = Filters(TODAY - dt.timedelta(days=91), TODAY)
    assert services.periods(recent)[0] == By.DAY
    long = Filters(TODAY - dt.timedelta(days=120), TODAY)
    unit, weeks, days = services.periods(long)
    assert unit == By.WEEK and len(days) == 121
    assert all(week.day and week.day.weekday() == 0 for week in weeks)
    assert weeks[0].day <= long.start and weeks[-1].day > TODAY - dt.timedelta(days=7)
    assert sum(week.tokens for week in weeks) == total(long).tokens == 93 + 141 + 1998
    assert sum(week.requests for week in weeks) == 6
    assert services.combined(weeks).queued_seconds == pytest.approx(total(long).queued_seconds)


def test_the_fallback_percentiles_equal_postgresqls(
    ledger: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_database = services.breakdown(last_week(), By.MODEL)
    assert in_database[0].first_token_p95 is not None
    monkeypatch.setattr(services, "_percentiles_in_database", lambda: False)
    assert services.breakdown(last_week(), By.MODEL) == in_database


def test_a_user_sees_only_their_own_usage(ledger: dict[str, Any], alice: Any) -> None:
    client = Client()
    client.force_login(alice)
    page = client.get("/usage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "llm-a" in html and "vit" in html
    assert "llm-b" not in html and "bob" not in html
    mine = page.context["total"]
    assert (mine.requests, mine.prompt_tokens, mine.completion_tokens) == (4, 60, 33)
    assert [row.key for row in page.context["models"]] == ["llm-a", "vit"]
    assert html.count('class="pygal-chart"') == 2  # the two charts, drawn by pygal
    assert "usage-all-link" not in html  # no dashboard link for a user


def test_the_user_page_says_what_the_quota_leaves(
    ledger: dict[str, Any], alice: Any, settings: Any
) -> None:
    settings.ATELIER_TOKENS_PER_DAY = 1000
    client = Client()
    client.force_login(alice)
    page = client.get("/usage/")
    day = next(s for s in page.context["standing"] if s.name == "tokens_per_day")
    assert (day.limit, day.used, day.remaining) == (1000, 93, 907)
    html = page.content.decode()
    assert '907 <span class="muted">left of 1,000</span>' in html
    assert "Tokens today" in html


def test_the_dashboard_is_for_admins_only(ledger: dict[str, Any], alice: Any) -> None:
    client = Client()
    assert client.get("/usage/admin/").status_code == 302  # to the login page
    client.force_login(alice)
    assert client.get("/usage/admin/").status_code == 403
    assert client.get("/usage/admin/usage.csv").status_code == 403


def test_the_dashboard_shows_the_filtered_figures(ledger: dict[str, Any], make_user: Any) -> None:
    client = Client()
    client.force_login(make_user("root", role="admin"))
    page = client.get("/usage/admin/", {"by": "model"})
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="pygal-chart"') == 6
    assert "usage-all-link" in html
    assert [(r.key, r.tokens) for r in page.context["rows"]] == [
        ("llm-a", 93),
        ("llm-b", 141),
        ("vit", 0),
    ]
    filtered = client.get("/usage/admin/", {"user": "alice", "source": "api", "by": "day"})
    assert filtered.context["total"].requests == 1
    assert filtered.context["total"].images == 1
    wrong = client.get("/usage/admin/", {"user": "nobody"})
    assert "No user is called nobody." in wrong.content.decode()


def test_the_csv_export_holds_the_filtered_table(ledger: dict[str, Any], make_user: Any) -> None:
    client = Client()
    client.force_login(make_user("root", role="admin"))
    start = (TODAY - dt.timedelta(days=6)).isoformat()
    response = client.get(
        "/usage/admin/usage.csv", {"by": "user", "start": start, "end": TODAY.isoformat()}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert lines[0] == [
        "user",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "tokens",
        "images",
        "mean_queued_seconds",
        "first_token_p50_seconds",
        "first_token_p95_seconds",
        "tokens_per_second",
    ]
    assert lines[1] == ["alice", "4", "60", "33", "93", "1", "0.875", "", "", "7.500"]
    assert lines[2] == ["bob", "1", "100", "41", "141", "0", "0.500", "", "", "10.000"]
    assert len(lines) == 3
    by_group = client.get("/usage/admin/usage.csv", {"by": "group", "group": ledger["team"].pk})
    rows = list(csv.reader(io.StringIO(b"".join(by_group.streaming_content).decode())))
    assert [row[:2] for row in rows[1:]] == [["team", "1"]]


def test_the_days_joined_on_postgresql_equal_the_grouped_days(ledger: dict[str, Any]) -> None:
    """The dashboard's days come from a query of their own on PostgreSQL (the rows joined to
    the range's days); they equal the generic breakdown's, filtered or not."""
    for filters in (
        last_week(),
        last_week(source=Source.API),
        last_week(group_id=ledger["team"].pk),
    ):
        generic = [
            services._row(*services._label(By.DAY, values["key"]), values)
            for values in services.grouped(filters, By.DAY)
        ]
        assert services.breakdown(filters, By.DAY) == generic
        assert [row.day for row in generic] == sorted(row.day for row in generic)
    days = by_key(services.breakdown(last_week(), By.DAY))
    assert (days[TODAY.isoformat()].requests, days[TODAY.isoformat()].tokens) == (4, 93 + 141)
    assert days[TODAY.isoformat()].queued_total == pytest.approx(0.5 + 1.5 + 1.0 + 0.5)


def test_days_are_the_sites_days_in_the_join(alice: Any, settings: Any) -> None:
    """A reply queued at 23:30 in the site's time zone (the next day in UTC) counts on its
    own day, in the joined days as in the generic breakdown."""
    settings.TIME_ZONE = "America/New_York"
    with timezone.override("America/New_York"):
        today = timezone.localdate()
        row = generation(alice, "llm-a", day=today - dt.timedelta(days=1))
        late = dt.datetime.combine(
            today - dt.timedelta(days=1), dt.time(23, 30), tzinfo=timezone.get_current_timezone()
        )
        Generation.objects.filter(pk=row.pk).update(queued_at=late)
        filters = Filters(today - dt.timedelta(days=2), today)
        days = services.daily(filters)
        assert [day.requests for day in days] == [0, 1, 0]
        generic = [values["requests"] for values in services.grouped(filters, By.DAY)]
        assert generic == [1]


def test_models_and_users_from_one_pass_equal_their_breakdowns(
    ledger: dict[str, Any], alice: Any
) -> None:
    for filters in (last_week(), last_week(user_id=alice.pk), last_week(source=Source.BATCH)):
        models, users = services.by_model_and_user(filters)
        assert models == services.breakdown(filters, By.MODEL)
        assert users == services.breakdown(filters, By.USER)
    models, users = services.by_model_and_user(last_week())
    assert [row.key for row in users] == ["alice", "bob"]
    llm_a = by_key(models)["llm-a"]
    assert (llm_a.first_token_p50, llm_a.first_token_p95) == (
        pytest.approx(2.0),
        pytest.approx(4.7),
    )
    assert services.combined(models).tokens == services.combined(users).tokens == 93 + 141


def test_the_percentiles_count_only_the_filtered_replies(
    ledger: dict[str, Any], alice: Any, bob: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation(bob, "llm-a", first_token=9.0, source=Source.BATCH)
    mine = by_key(services.breakdown(last_week(user_id=alice.pk), By.MODEL))["llm-a"]
    assert (mine.first_token_p50, mine.first_token_p95) == (
        pytest.approx(2.0),
        pytest.approx(4.7),
    )
    everyone = by_key(services.breakdown(last_week(), By.MODEL))["llm-a"]
    assert everyone.first_token_p50 == pytest.approx(3.5)  # 1, 2, 5, 9 s
    batch = by_key(services.breakdown(last_week(source=Source.BATCH), By.MODEL))["llm-a"]
    assert (batch.first_token_p50, batch.first_token_p95) == (pytest.approx(9.0),) * 2
    monkeypatch.setattr(services, "_percentiles_in_database", lambda: False)
    assert by_key(services.breakdown(last_week(), By.MODEL))["llm-a"] == everyone
