"""CSV written a line at a time (for streamed downloads), with cells a spreadsheet will not
run as formulas. Shared by every CSV Atelier offers (the audit trail, the usage table)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

# A cell starting with one of these is run by spreadsheets as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """The text as a cell a spreadsheet shows as text (a name like "=HYPERLINK(...)")."""
    return "'" + value if value[:1] in FORMULA_STARTS else value


def csv_lines(rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """Each row as one CSV line, in order (the caller makes text cells `safe_cell`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        yield buffer.getvalue()
