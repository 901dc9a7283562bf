"""In headless Chromium, as people would: a user's threatening message is blocked (shown to
them as blocked, with its category); the admin opens the review queue at /moderation/,
sees the item with its verdict and confirms it; the user cannot open the queue.

Playwright's sync API runs an event loop on the main thread, so everything in the database
is made before the browser starts and what happened is read back from the pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import web_server
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/atelier-shots")
THREAT = "I will k1ll you tomorrow"


@pytest.fixture(scope="module")
def site(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The web server alone: a blocked message never reaches a worker."""
    with web_server(test_db_env, tmp_path_factory.mktemp("site") / "web.log") as url:
        yield url


@pytest.fixture
def people(make_user: Any, chat_model: Any) -> dict[str, Any]:
    return {
        "erin": make_user("erin", password="erin-passphrase-1"),
        "root": make_user("root", role="admin", password="root-passphrase-1"),
    }


@pytest.fixture
def browser(people: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: scripts/test.sh installs it"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def log_in(browser: Any, site: str, username: str, password: str, path: str = "/") -> Any:
    page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    page.goto(site + path)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_a_blocked_message_reaches_the_review_queue_and_the_admin_confirms_it(
    site: str, browser: Any
) -> None:
    erin = log_in(browser, site, "erin", "erin-passphrase-1")
    erin.wait_for_function("document.getElementById('connection').textContent === ''")
    erin.fill("#input", THREAT)
    erin.press("#input", "Enter")
    erin.wait_for_selector(".msg.user.blocked .note")
    note = erin.inner_text(".msg.user.blocked .note")
    assert "Blocked by the content policy (violence)" in note
    assert erin.locator(".msg.assistant").count() == 0  # no reply was started
    assert erin.is_visible("#send") and erin.is_hidden("#stop")
    shot(erin, "moderation-user-blocked.png")
    erin.reload()  # the page as stored: still blocked, to its author
    erin.wait_for_selector(".msg.user.blocked")
    assert "Blocked by the content policy (violence)" in erin.inner_text(".msg.user.blocked")
    forbidden = erin.goto(site + "/moderation/")
    assert forbidden is not None and forbidden.status == 403

    root = log_in(browser, site, "root", "root-passphrase-1", "/moderation/")
    root.wait_for_selector("article.item.block")
    item = root.locator("article.item.block").first
    text = item.inner_text()
    assert THREAT in text and "erin" in text and "violence" in text
    assert "violence-threat" in text  # the explanation names the rule
    shot(root, "moderation-queue.png")
    item.locator("button.confirm").click()
    root.wait_for_selector(".flash li")
    assert "Confirmed item" in root.inner_text(".flash")
    assert root.locator("article.item").count() == 0  # no longer waiting for review
    root.select_option("select[name=status]", "confirmed")
    root.click("#filters button[type=submit]")
    root.wait_for_selector("article.item.block")
    assert "confirmed by root" in root.inner_text("article.item.block .status").lower()
    shot(root, "moderation-confirmed.png")

    root.goto(site + "/moderation/audit/")
    audit = root.inner_text("#audit")
    assert "input.block" in audit and "event.confirm" in audit
