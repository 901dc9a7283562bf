"""In headless Chromium, as a person would: log in, send a message, watch the reply stream
in, reload, and find the conversation still there."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORKER_QUEUE
from tests.processes import celery_worker, web_server

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# Counts how often an assistant reply's text changes while it is still streaming.
COUNT_STREAM_UPDATES = """
window.__streamUpdates = 0;
new MutationObserver(() => {
  const live = document.querySelector('.msg.assistant.streaming .body');
  if (live && live.textContent.length) window.__streamUpdates += 1;
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def site(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = test_db_env
    logs = tmp_path_factory.mktemp("site")
    with (
        celery_worker(env, [WORKER_QUEUE], logs / "worker.log"),
        web_server(env, logs / "web.log") as url,
    ):
        yield url


@pytest.fixture
def dana(make_user: Any, chat_model: Any, endless_llama_dir: Path) -> Any:
    """A user and a chat model served by the worker; made before the browser starts, since
    Playwright's event loop makes the main thread async (no ORM calls from then on)."""
    chat_model.queue = WORKER_QUEUE
    chat_model.source = str(endless_llama_dir)
    chat_model.save()
    return make_user("dana", password="dana-passphrase-1")


@pytest.fixture
def browser(dana: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (
        "Chromium is missing: scripts/test.sh installs the Debian package 'chromium'"
    )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def test_log_in_chat_see_the_reply_stream_and_find_it_after_reload(
    site: str, dana: Any, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.add_init_script(COUNT_STREAM_UPDATES)

    page.goto(site + "/")
    page.fill("#id_username", "dana")
    page.fill("#id_password", "dana-passphrase-1")
    page.click("button[type=submit]")
    page.wait_for_selector("#input")
    page.wait_for_function("document.getElementById('connection').textContent === ''")

    page.fill("#input", "Hello, tiny model!")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant[data-status=done]", timeout=60_000)
    updates = page.evaluate("window.__streamUpdates")
    reply = page.inner_text(".msg.assistant .body")
    page.screenshot(path=str(tmp_path / "chat.png"))
    assert updates >= 2, "the reply should arrive in several pieces, not all at once"
    assert reply.strip()
    assert "/chat/" in page.url and page.url.rstrip("/").split("/")[-1].isdigit()
    assert page.is_hidden("#stop") and page.is_visible("#send")

    page.reload()
    page.wait_for_selector(".msg.assistant")
    assert page.inner_text(".msg.user .body") == "Hello, tiny model!"
    assert page.inner_text(".msg.assistant .body").split() == reply.split()
    assert "Hello, tiny model!" in page.inner_text("#conversations")
