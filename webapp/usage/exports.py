"""The dashboard's table as CSV."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain

from webapp.csv_lines import csv_lines as lines
from webapp.csv_lines import safe_cell
from webapp.usage.services import By, Row

COLUMNS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "tokens",
    "images",
    "mean_queued_seconds",
    "first_token_p50_seconds",
    "first_token_p95_seconds",
    "tokens_per_second",
)


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def csv_lines(rows: Iterable[Row], by: By) -> Iterator[str]:
    """A header, then one line per row of the table."""
    cells = (
        (
            safe_cell(row.key),
            row.requests,
            row.prompt_tokens,
            row.completion_tokens,
            row.tokens,
            row.images,
            _figure(row.queued_seconds),
            _figure(row.first_token_p50),
            _figure(row.first_token_p95),
            _figure(row.tokens_per_second),
        )
        for row in rows
    )
    return lines(chain([(str(by), *COLUMNS)], cells))
