"""In headless Chromium: a user opens their usage page and an admin the usage dashboard; the
charts pygal drew are on the page with a size and with bars in them, on a wide screen and on
a phone. Screenshots go to /tmp/usage-shots/ (the admin's in the dark theme).

Playwright's sync API runs an event loop on the main thread, so everything in the database
is made before the browser starts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests.processes import web_server
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/usage-shots")
SCREENS = {"wide": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def site(test_db_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The web server alone: the pages read what is recorded."""
    with web_server(test_db_env, tmp_path_factory.mktemp("site") / "web.log") as url:
        yield url


@pytest.fixture
def people(make_user: Any) -> dict[str, Any]:
    """cleo with a month of chat replies and summaries; dev with a few API calls; root, an
    admin who prefers the dark theme."""
    from webapp.inference.models import Generation, Source, Status

    cleo = make_user("cleo", password="cleo-passphrase-1")
    dev = make_user("dev", password="dev-passphrase-1")
    root = make_user("root", role="admin", password="root-passphrase-1")
    root.theme = "dark"
    root.save()
    now = timezone.now()
    for day in range(30):
        for n in range(day % 5 + 1):
            for user, model, source in (
                (cleo, "smollm2-135m", Source.WEB),
                (cleo, "smollm2-summarize", Source.BATCH),
                (dev, "smollm2-135m", Source.API),
            ):
                if user is dev and n > 1:
                    continue
                at = now - dt.timedelta(days=day, minutes=n)
                row = Generation.objects.create(
                    user=user, model_name=model, task="chat", input={}, status=Status.DONE
                )
                Generation.objects.filter(pk=row.pk).update(
                    source=source,
                    queued_at=at,
                    started_at=at + dt.timedelta(seconds=0.2 + n / 10),
                    first_token_at=at + dt.timedelta(seconds=0.5 + n / 5),
                    finished_at=at + dt.timedelta(seconds=3 + n),
                    prompt_tokens=120 + 40 * n,
                    completion_tokens=60 + 25 * (day % 7),
                )
    return {"cleo": cleo, "dev": dev, "root": root}


@pytest.fixture
def browser(people: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: scripts/test.sh installs it"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def log_in(browser: Any, site: str, username: str, screen: str) -> Any:
    page = browser.new_context(viewport=SCREENS[screen]).new_page()
    page.goto(site + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-passphrase-1")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


MARKS = ".series rect, .series path, .series circle"


def drawn_charts(page: Any) -> list[dict[str, float]]:
    """Each pygal chart's size on the page and the bars, lines and dots drawn in it."""
    return list(
        page.eval_on_selector_all(
            "figure.chart svg.pygal-chart",
            """(charts, marks) => charts.map(svg => {
                const box = svg.getBoundingClientRect();
                return {width: box.width, height: box.height,
                        marks: svg.querySelectorAll(marks).length};
            })""",
            MARKS,
        )
    )


def test_a_user_sees_their_usage_charted(site: str, browser: Any) -> None:
    for screen in SCREENS:
        page = log_in(browser, site, "cleo", screen)
        page.goto(site + "/usage/")
        charts = drawn_charts(page)
        assert len(charts) == 2
        assert all(c["width"] > 300 and c["height"] > 120 and c["marks"] >= 30 for c in charts)
        models = page.inner_text("#by-model tbody")
        assert models.count("smollm2") == 2 and "\t90\t" in models
        assert page.inner_text("#by-model tfoot").split()[:2] == ["Total", "180"]  # none of dev's
        assert page.locator("#quota .limit").count() == 4
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"usage-mine-{screen}.png"), full_page=True)
        page.context.close()


def test_an_admin_sees_everyones_usage_charted(site: str, browser: Any) -> None:
    for screen in SCREENS:
        page = log_in(browser, site, "root", screen)
        page.goto(site + "/usage/admin/?by=user")
        charts = drawn_charts(page)
        assert len(charts) == 6
        assert all(c["width"] > 300 and c["height"] > 120 and c["marks"] > 0 for c in charts)
        assert page.inner_text("#breakdown tbody").split()[0] == "cleo"
        page.select_option("#id_source", "api")
        page.click("#usage-filters button[type=submit]")
        page.wait_for_load_state()
        assert page.inner_text("#breakdown tbody").split()[0] == "dev"
        assert "source=api" in (page.get_attribute("#export", "href") or "")
        page.goto(site + "/usage/admin/?by=user")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"usage-admin-{screen}.png"), full_page=True)
        page.context.close()
