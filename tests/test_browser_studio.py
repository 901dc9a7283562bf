"""In headless Chromium, as a person would, against real Daphne and worker processes:
summarize a pasted text and watch the summary stream in, copy and download it; drop an
image on the classify page, see its preview, then its top-5 labels as bars; see the
translate page offer only what its model translates; find both results in the history.

Playwright's sync API runs an event loop on the main thread: the models and the user are
made before the browser starts, and nothing here touches the ORM afterwards.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import celery_worker, web_server
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.tiny.models import IMAGE_LABELS, build_tiny_marian, build_tiny_vit
from tests.webapp.test_studio_views import png

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/atelier-shots")
QUEUE = f"studio-browser-{uuid.uuid4().hex[:8]}"
REPORT = (
    "The river rose by ten centimetres overnight. The dam held and nobody was hurt. "
    "Schools reopen on Monday after the flood. The mayor thanked the volunteers. "
) * 3

# The summary's text each time it changes while it is still streaming.
RECORD_STREAMED = """
window.__streamed = [];
new MutationObserver(() => {
  const live = document.querySelector('#output.streaming');
  if (live && live.textContent.length) {
    const seen = window.__streamed;
    if (!seen.length || seen[seen.length - 1] !== live.textContent) seen.push(live.textContent);
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""

DROP_IMAGE = """async (encoded) => {
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], "blue-square.png", {type: "image/png"}));
  const zone = document.getElementById("dropzone");
  const init = {dataTransfer: transfer, bubbles: true, cancelable: true};
  zone.dispatchEvent(new DragEvent("dragover", init));
  zone.dispatchEvent(new DragEvent("drop", init));
}"""


@pytest.fixture(scope="module")
def site(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**test_db_env, "ATELIER_UPLOADS_DIR": str(tmp_path_factory.mktemp("studio-uploads"))}
    logs = tmp_path_factory.mktemp("studio-site")
    with celery_worker(env, [QUEUE], logs / "worker.log"), web_server(env, logs / "web.log") as url:
        yield url


@pytest.fixture
def fay(make_user: Any, endless_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A user, and a summarizer (the tiny model without EOS, so the summary runs to its
    length and streams in many pieces), an English→German translator and an image
    classifier served by the worker."""
    from webapp.catalog.models import ModelEntry

    root = tmp_path_factory.mktemp("studio-browser-models")
    for name, task, source in [
        ("tiny-summarizer", "summarize", endless_llama_dir),
        ("tiny-marian", "translate", build_tiny_marian(root / "marian", "en", "de")),
        ("tiny-vit", "classify_image", build_tiny_vit(root / "vit")),
    ]:
        ModelEntry.objects.create(
            name=name, task=task, source=str(source), queue=QUEUE, is_default=True
        )
    return make_user("fay", password="fay-passphrase-1")


@pytest.fixture
def page(site: str, fay: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 1200, "height": 900}, accept_downloads=True
        )
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site)
        page = context.new_page()
        page.add_init_script(RECORD_STREAMED)
        page.goto(site + "/")
        page.fill("#id_username", "fay")
        page.fill("#id_password", "fay-passphrase-1")
        page.click("button[type=submit]")
        page.wait_for_load_state()
        yield page
        browser.close()


def test_summarize_a_text_and_watch_it_stream_then_copy_and_download_it(
    site: str, page: Any, tmp_path: Path
) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.click("nav >> text=Summarize")
    page.fill("#text", REPORT)
    page.check("input[name=length][value=long]")
    assert page.input_value("#model") != ""
    page.screenshot(path=str(SHOTS / "studio-summarize-form.png"), full_page=True)
    page.click("#submit")

    page.wait_for_selector("#result[data-kind=summarize]")
    page.wait_for_function("window.__streamed.length >= 1", timeout=60_000)
    page.screenshot(path=str(SHOTS / "studio-summarize-streaming.png"), full_page=True)
    page.wait_for_selector("#result[data-status=done]", timeout=120_000)
    page.screenshot(path=str(SHOTS / "studio-summarize-done.png"), full_page=True)

    summary = page.text_content("#output")
    streamed: list[str] = page.evaluate("window.__streamed")
    assert summary  # a random tiny model's words: maybe only spaces and newlines
    assert len(streamed) >= 2, "the summary should arrive in several pieces, not all at once"
    assert all(summary.startswith(piece) for piece in streamed)  # it only ever grew
    assert page.is_hidden("#stop") and page.is_visible("#copy")

    page.click("#copy")
    page.wait_for_selector("#copied", state="visible")
    assert page.evaluate("navigator.clipboard.readText()") == page.text_content("#output")
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name.startswith("summary-the-river-rose")
    assert saved.read_text(encoding="utf-8") == page.text_content("#output")

    page.reload()  # the finished result is read from the database
    assert page.text_content("#output") == summary
    assert "The river rose" in page.inner_text("#recent")


def test_drop_an_image_see_its_preview_then_its_labels_as_bars(site: str, page: Any) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.click("nav >> text=Classify image")
    page.wait_for_url("**/studio/classify/")  # drop on the new page, not the one leaving
    page.wait_for_load_state()
    page.evaluate(DROP_IMAGE, base64.b64encode(png((320, 240))).decode())
    page.wait_for_selector("#preview:not([hidden])")
    assert page.evaluate("document.getElementById('image').files[0].name") == "blue-square.png"
    assert "blue-square.png" in page.inner_text("#drop-help")
    page.screenshot(path=str(SHOTS / "studio-classify-preview.png"), full_page=True)
    page.click("#submit")

    page.wait_for_selector("#result[data-kind=classify_image][data-status=done]", timeout=60_000)
    page.wait_for_selector("#labels li")
    page.screenshot(path=str(SHOTS / "studio-classify-done.png"), full_page=True)
    rows = page.eval_on_selector_all(
        "#labels li",
        """items => items.map(li => [li.querySelector('.label').textContent,
            li.querySelector('.bar span').getBoundingClientRect().width,
            li.querySelector('.bar').getBoundingClientRect().width,
            parseFloat(li.querySelector('.pct').textContent)])""",
    )
    assert len(rows) == 5 and {label for label, *_ in rows} <= set(IMAGE_LABELS)
    percents = [percent for *_, percent in rows]
    assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.5
    for _label, fill, track, percent in rows:  # each bar is as long as its probability
        assert fill == pytest.approx(max(track * percent / 100, 2), abs=1.5)
    assert page.evaluate("document.querySelector('.result-image').naturalWidth") == 320

    page.click("text=All results →")
    table = page.inner_text("#results")
    assert "blue-square.png" in table and "Image labels" in table


def test_the_translate_page_offers_what_its_model_translates(site: str, page: Any) -> None:
    page.click("nav >> text=Translate")
    page.wait_for_selector("#translate-form")
    assert page.input_value("#target") == "de"  # the only target this model has
    assert page.is_disabled("#target option[value=fr]")
    assert page.is_disabled("#source option[value=fr]")
    assert not page.is_disabled("#source option[value=en]")
    assert "translates from English into German" in page.inner_text("#model-languages")
    page.fill("#text", "The weather is lovely today and we are going for a walk by the sea.")
    page.click("#submit")
    page.wait_for_selector("#result[data-kind=translate][data-status=done]", timeout=60_000)
    assert "English (detected) → German" in page.inner_text(".result-head")
    page.screenshot(path=str(SHOTS / "studio-translate-done.png"), full_page=True)
