"""A job's results as CSV or JSON Lines: every item in input order with its id, status,
output and error. Used by the download views and the batch command."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from webapp.jobs.models import Job

FIELDS = ["index", "id", "status", "output", "error"]
KINDS = ("csv", "jsonl")


def rows(job: Job) -> Iterator[dict[str, object]]:
    items = job.items.order_by("index").values_list(
        "index", "external_id", "status", "output", "error"
    )
    for values in items.iterator(chunk_size=500):
        yield dict(zip(FIELDS, values, strict=True))


def csv_chunks(job: Job) -> Iterator[str]:
    """CSV text in chunks of about 64 KB, starting with a byte-order mark so that
    spreadsheet programs read it as UTF-8."""
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for row in rows(job):
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def jsonl_lines(job: Job) -> Iterator[str]:
    for row in rows(job):
        yield json.dumps(row, ensure_ascii=False) + "\n"


def chunks(job: Job, kind: str) -> Iterator[str]:
    if kind not in KINDS:
        raise ValueError(f"results come as {' or '.join(KINDS)}, not {kind!r}")
    return csv_chunks(job) if kind == "csv" else jsonl_lines(job)
