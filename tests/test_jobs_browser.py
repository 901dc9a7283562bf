"""In headless Chromium, as a person would: upload a CSV as a batch job, choose its column,
watch the progress bar reach 100% over the WebSocket, download the results as CSV and
JSONL and check them. Real Daphne and worker processes.

Playwright's sync API runs an event loop on the main thread, so the database is read
from another thread once the browser is up.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.processes import celery_worker, web_server
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/atelier-shots")
QUEUE = f"jobs-browser-{uuid.uuid4().hex[:8]}"
ROWS = [("R-101", "The river rose by ten centimetres overnight."),
        ("R-102", "The dam held and nobody was hurt."),
        ("R-103", ""),  # an empty row: skipped and counted
        ("R-104", "Schools reopen on Monday after the flood."),
        ("R-105", "The mayor thanked the volunteers."),
        ("R-106", "Rain is expected again at the weekend.")]  # fmt: skip
T = TypeVar("T")


def off_loop(function: Callable[[], T]) -> T:
    """Run ORM code on another thread (the main one runs Playwright's event loop)."""

    def run() -> T:
        from django.db import connections

        try:
            return function()
        finally:
            connections.close_all()  # so that the test database can be dropped

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture(scope="module")
def site(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**test_db_env, "ATELIER_JOB_MAX_IN_FLIGHT": "2"}
    logs = tmp_path_factory.mktemp("jobs-site")
    with celery_worker(env, [QUEUE], logs / "worker.log"), web_server(env, logs / "web.log") as url:
        yield url


@pytest.fixture
def erin(make_user: Any, endless_llama_dir: Path) -> Any:
    from webapp.catalog.models import ModelEntry

    ModelEntry.objects.create(
        name="tiny-summarizer",
        task="summarize",
        source=str(endless_llama_dir),
        queue=QUEUE,
        is_default=True,
    )
    return make_user("erin", password="erin-passphrase-1")


@pytest.fixture
def page(site: str, erin: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        page.goto(site + "/")
        page.fill("#id_username", "erin")
        page.fill("#id_password", "erin-passphrase-1")
        page.click("button[type=submit]")
        page.wait_for_load_state()
        yield page
        browser.close()


def download(page: Any, selector: str, folder: Path) -> str:
    with page.expect_download() as info:
        page.click(selector)
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target.read_text(encoding="utf-8-sig")


def test_upload_a_csv_watch_it_reach_100_percent_and_download_the_results(
    site: str, page: Any, tmp_path: Path
) -> None:
    SHOTS.mkdir(exist_ok=True)
    frames: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda socket: socket.on(
            "framereceived", lambda payload: frames.append(json.loads(payload))
        ),
    )
    source = tmp_path / "flood-reports.csv"
    with open(source, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["ref", "headline", "body"])
        writer.writerows((ref, f"Headline {ref}", body) for ref, body in ROWS)

    page.click("text=Batch jobs")
    page.select_option("#id_task", "summarize")
    page.set_input_files("#id_file", str(source))
    page.click("#upload-form button[type=submit]")

    page.wait_for_selector("#configure-form")
    assert page.input_value("#id_column") == "body"  # the longest values: suggested
    page.select_option("#id_id_column", "ref")
    page.select_option("#id_length", "short")
    page.click("button[name=preview]")
    summary = page.inner_text("#summary")
    assert "5 documents" in summary and "1 empty skipped" in summary
    page.screenshot(path=str(SHOTS / "jobs-configure.png"), full_page=True)
    page.click("#start")

    page.wait_for_selector("#job")
    page.wait_for_function(
        "document.getElementById('status').textContent === 'running'", timeout=30_000
    )
    page.screenshot(path=str(SHOTS / "jobs-running.png"), full_page=True)
    page.wait_for_function(
        "document.getElementById('percent').textContent === '100%'", timeout=240_000
    )
    page.wait_for_function("document.getElementById('status').textContent === 'done'")
    assert page.inner_text("#count-done") == "5" and page.inner_text("#count-failed") == "0"
    statuses = page.eval_on_selector_all(
        "#items .item-status", "els => els.map(e => e.textContent)"
    )
    assert statuses == ["done"] * 5  # the table was updated live, without a reload
    assert page.is_hidden("#pause") and page.is_hidden("#cancel")
    page.wait_for_timeout(600)  # the bar's width transition, for the picture only
    page.screenshot(path=str(SHOTS / "jobs-done.png"), full_page=True)

    progress = [f for f in frames if f["type"] == "progress"]
    done_counts = [f["done"] for f in progress]
    assert done_counts == sorted(done_counts) and done_counts[-1] == 5
    assert len(set(done_counts)) >= 2, "progress arrived over the socket as items finished"

    rows = list(csv.DictReader(io.StringIO(download(page, "#download-csv", tmp_path))))
    expected_ids = [ref for ref, body in ROWS if body]
    assert [r["id"] for r in rows] == expected_ids
    assert [r["index"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert {r["status"] for r in rows} == {"done"} and all(r["output"] for r in rows)
    lines = download(page, "#download-jsonl", tmp_path).splitlines()
    assert [json.loads(line)["id"] for line in lines] == expected_ids

    def stored() -> dict[str, str]:
        from webapp.jobs.models import Job

        job = Job.objects.get(user__username="erin")
        return dict(job.items.values_list("external_id", "generation__output"))

    page.click("text=Batch jobs")
    assert "5 / 5" in page.inner_text(".jobs-table") and "done" in page.inner_text(".jobs-table")
    page.screenshot(path=str(SHOTS / "jobs-list.png"), full_page=True)

    outputs = off_loop(stored)
    assert all(r["output"] == outputs[r["id"]] for r in rows)
    assert all(json.loads(line)["output"] == outputs[json.loads(line)["id"]] for line in lines)
