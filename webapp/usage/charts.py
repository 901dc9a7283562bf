"""The usage charts, drawn on the server by pygal as inline SVG: no JavaScript, nothing to
fetch, and the page's colour variables (light and dark themes) apply inside them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pygal
from django.utils.safestring import SafeString, mark_safe
from pygal.style import Style

from webapp.usage.services import Row

# Series colours that read on the light and the dark background alike.
SERIES = ("#6366f1", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#a855f7")
WIDTH, HEIGHT = 480, 270  # about a panel; on a phone scaled to 2/3, the text still legible

STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="var(--ink)",
    foreground_strong="var(--ink)",
    foreground_subtle="var(--muted)",
    guide_stroke_color="var(--line)",
    major_guide_stroke_color="var(--line)",
    guide_stroke_dasharray="none",
    major_guide_stroke_dasharray="none",
    opacity="0.9",
    opacity_hover="1",
    colors=SERIES,
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=14,
    major_label_font_size=14,
    legend_font_size=15,
    value_font_size=12,
    title_font_size=16,
    no_data_font_size=20,
)


def _config(**options: object) -> dict[str, object]:
    return {
        "style": STYLE,
        "width": WIDTH,
        "height": HEIGHT,
        "js": [],  # pygal's tooltips script comes from a CDN; the tables give exact figures
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 2,
        "truncate_legend": -1,
        "truncate_label": -1,
        "margin": 10,
        "margin_bottom": 22,  # room for the legend's descenders
        "no_data_text": "No usage in this period",
        **options,
    }


def _svg(chart: pygal.graph.graph.Graph, label: str) -> SafeString:
    svg = chart.render(is_unicode=True, disable_xml_declaration=True)
    # An accessible name for the figure; the tables beside it hold the figures themselves.
    return mark_safe(svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1))  # noqa: S308


def _day_labels(days: Sequence[dt.date]) -> tuple[list[str], list[str]]:
    """Each day's (or week's Monday's) label, and the few written under the axis."""
    labels = [day.strftime("%b %-d") for day in days]
    every = max(1, len(days) // 5)
    return labels, labels[::every]


def _over_time(kind: type[pygal.graph.graph.Graph], rows: Sequence[Row], **options: object) -> Any:
    """A chart of `kind` whose x axis is the rows' days (or weeks), a few of them written."""
    labels, major = _day_labels([row.day for row in rows if row.day])
    chart = kind(**_config(x_labels_major=major, show_minor_x_labels=False, **options))
    chart.x_labels = labels
    return chart


def tokens_per_day(rows: Sequence[Row], unit: str = "day") -> SafeString:
    """Prompt and completion tokens stacked, one bar a day (or week)."""
    chart = _over_time(pygal.StackedBar, rows, y_title="tokens")
    chart.add("Prompt tokens", [row.prompt_tokens for row in rows])
    chart.add("Completion tokens", [row.completion_tokens for row in rows])
    return _svg(chart, f"Tokens per {unit}")


def requests_per_day(rows: Sequence[Row], unit: str = "day") -> SafeString:
    chart = _over_time(pygal.Bar, rows, y_title="requests", show_legend=False)
    chart.add("Requests", [row.requests for row in rows])
    return _svg(chart, f"Requests per {unit}")


def queued_per_day(rows: Sequence[Row], unit: str = "day") -> SafeString:
    """Mean time queued, a line over the days or weeks (a gap where nothing was queued)."""
    chart = _over_time(pygal.Line, rows, y_title="seconds", show_legend=False, dots_size=2)
    chart.add("Mean time queued (s)", [row.queued_seconds for row in rows])
    return _svg(chart, f"Mean time queued per {unit}")


def first_token_by_model(rows: Sequence[Row]) -> SafeString:
    chart = pygal.Bar(**_config(y_title="seconds", print_values=False))
    chart.x_labels = [row.key for row in rows]
    chart.add("p50", [row.first_token_p50 for row in rows])
    chart.add("p95", [row.first_token_p95 for row in rows])
    return _svg(chart, "Time to first token by model, p50 and p95")


def speed_by_model(rows: Sequence[Row]) -> SafeString:
    chart = pygal.HorizontalBar(**_config(show_legend=False, x_title="tokens per second"))
    rows = rows[::-1]  # pygal draws the first label at the bottom
    chart.x_labels = [row.key for row in rows]
    chart.add("Tokens/s", [row.tokens_per_second for row in rows])
    return _svg(chart, "Tokens per second by model")


def tokens_by_user(rows: Sequence[Row]) -> SafeString:
    chart = pygal.HorizontalStackedBar(**_config())
    rows = rows[::-1]  # the top user on top
    chart.x_labels = [row.key for row in rows]
    chart.add("Prompt tokens", [row.prompt_tokens for row in rows])
    chart.add("Completion tokens", [row.completion_tokens for row in rows])
    return _svg(chart, "Top users by tokens")
