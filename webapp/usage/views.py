"""The usage pages: each user's own usage at /usage/, and the admins' dashboard at
/usage/admin/ with its CSV export."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from webapp.accounts import quotas
from webapp.accounts.models import User
from webapp.accounts.permissions import staff_required
from webapp.usage import charts, exports, services
from webapp.usage.forms import DEFAULT_DAYS, DashboardFilters
from webapp.usage.services import By, Filters

USER_PAGE_DAYS = 30
TOP_USERS = 10


@require_GET
@login_required
def mine(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    filters = Filters(*services.last_days(USER_PAGE_DAYS), user_id=user.pk)
    days = services.daily(filters)
    models = services.breakdown(filters, By.MODEL)
    return render(
        request,
        "usage/mine.html",
        {
            "filters": filters,
            "days": list(reversed([day for day in days if day.requests])),
            "models": models,
            "total": services.combined(models),
            "standing": quotas.standing(user),
            "tokens_chart": charts.tokens_per_day(days),
            "requests_chart": charts.requests_per_day(days),
        },
    )


@require_GET
@staff_required("see everyone's usage")
def dashboard(request: HttpRequest) -> HttpResponse:
    form = DashboardFilters(request.GET or None, initial=_range(DEFAULT_DAYS))
    filters, by = form.filters(), form.table_by()
    unit, periods, days = services.periods(filters)
    models, users = services.by_model_and_user(filters)
    top = services.top(users, TOP_USERS)
    table = {By.DAY: days, By.USER: users, By.MODEL: models}.get(by)
    return render(
        request,
        "usage/dashboard.html",
        {
            "form": form,
            "filters": filters,
            "by": by,
            "by_model": by == By.MODEL,
            "rows": table if table is not None else _table(filters, by),
            "unit": unit,
            "total": services.combined(models),
            "models": models,
            "top": top,
            "query": request.GET.urlencode(),
            "charts": {
                "requests": charts.requests_per_day(periods, unit),
                "tokens": charts.tokens_per_day(periods, unit),
                "queued": charts.queued_per_day(periods, unit),
                "first_token": charts.first_token_by_model(models),
                "speed": charts.speed_by_model(models),
                "top": charts.tokens_by_user(top),
            },
        },
    )


def _range(days: int) -> dict[str, dt.date]:
    start, end = services.last_days(days)
    return {"start": start, "end": end}


def _table(filters: Filters, by: By) -> list[services.Row]:
    """The dashboard's table: every day of the range, or a row per user, group or model."""
    return services.daily(filters) if by == By.DAY else services.breakdown(filters, by)


@require_GET
@staff_required("see everyone's usage")
def dashboard_csv(request: HttpRequest) -> StreamingHttpResponse:
    form = DashboardFilters(request.GET or None)
    filters, by = form.filters(), form.table_by()
    rows = _table(filters, by)
    response = StreamingHttpResponse(
        (line.encode() for line in exports.csv_lines(rows, by)),
        content_type="text/csv; charset=utf-8",
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="atelier-usage-by-{by}-{stamp}.csv"'
    return response
