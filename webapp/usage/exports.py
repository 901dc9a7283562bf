"""The dashboard's table as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

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


def _cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (a user or model named "=...")."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def csv_lines(rows: Iterable[Row], by: By) -> Iterator[str]:
    """A header, then one line per row of the table."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(cells: Iterable[object]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(cells)
        return buffer.getvalue()

    yield line((str(by), *COLUMNS))
    for row in rows:
        yield line(
            (
                _cell(row.key),
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
        )
