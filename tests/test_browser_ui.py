"""The chat page as people use it (issue 17), in headless Chromium against a real Daphne and
worker: every page fits a phone and a wide screen in light and dark; on a phone the drawer
opens and a conversation is chosen and continued; code is highlighted and copied, math is
rendered; the reader's scroll position holds while a reply streams; the model's defaults
reach the Generation and the settings survive a reload.

One Daphne and worker for the module (tests/test_browser.py's `site`). Playwright's sync API
makes the main thread async, so the data is made before the browser starts and what was
stored is read back from the page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests import test_browser as shared

site = shared.site
dana = shared.dana

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/atelier-shots")
PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1280, "height": 800}
CODE = "def reverse(text: str) -> str:\n    return text[::-1]  # a step of -1"
REPLY = f"""Use slicing:

```python
{CODE}
```

| way | cost |
|---|---|
| slicing | $O(n)$ |

> Strings never change.

$$\\sum_{{i=1}}^{{n}} i = \\frac{{n(n+1)}}{{2}}$$
"""
DEFAULTS = {"temperature": 0.35, "max_tokens": 48, "repetition_penalty": 1.15}
LONG = 4096  # above the tiny model's context: the worker writes what fits (seconds)


@pytest.fixture
def people(dana: Any, chat_model: Any, make_user: Any) -> dict[str, Any]:
    """Dana with a conversation holding code and math, an admin, someone waiting for
    approval, and per-model defaults on the chat model; all made before the browser."""
    from webapp.chat import history

    chat_model.default_temperature = DEFAULTS["temperature"]
    chat_model.default_max_tokens = DEFAULTS["max_tokens"]
    chat_model.default_repetition_penalty = DEFAULTS["repetition_penalty"]
    chat_model.description = "A tiny random Llama that never stops talking."
    chat_model.save()
    exported = {
        "format": history.EXPORT_FORMAT,
        "version": history.EXPORT_VERSION,
        "title": "Reversing strings",
        "messages": [
            {"role": "user", "content": "How do I reverse a string?"},
            {"role": "assistant", "content": REPLY},
        ],
    }
    imported = history.import_json(dana, json.dumps(exported).encode())
    root = make_user("root", role="admin", password="root-passphrase-1")
    roots = history.import_json(root, json.dumps(exported).encode())  # for the admin's pages
    make_user("waiting", role="pending")
    return {"conversation": imported.pk, "root_conversation": roots.pk}


@pytest.fixture
def browser(people: Any) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=shared.CHROMIUM, args=shared.CHROMIUM_ARGS
        )
        yield instance
        instance.close()


def log_in(browser: Browser, site: str, size: dict[str, int], scheme: str = "light", *,
           username: str = "dana", password: str = "dana-passphrase-1") -> Page:  # fmt: skip
    context = browser.new_context(viewport=size, color_scheme=scheme)  # type: ignore[arg-type]
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site)
    page = context.new_page()
    page.goto(site + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#topbar .brand")
    return page


def wait_connected(page: Page) -> None:
    page.wait_for_selector("#input")
    page.wait_for_function("document.getElementById('connection').textContent === ''")


def overflow(page: Page) -> int:
    """How many pixels the page is wider than the window (0: no horizontal scroll)."""
    width: int = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return width


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"ui-{name}.png"))


def test_every_page_fits_a_phone_and_a_wide_screen_in_light_and_dark(
    site: str, browser: Browser, people: dict[str, Any]
) -> None:
    pages = {
        "chat": f"/chat/{people['root_conversation']}/",
        "new-chat": "/chat/",
        "studio": "/studio/summarize/",
        "results": "/studio/history/",
        "jobs": "/jobs/",
        "moderation": "/moderation/",
        "audit": "/moderation/audit/",
        "approvals": "/accounts/approvals/",
    }
    backgrounds = {}
    for scheme in ("light", "dark"):
        for size in (PHONE, WIDE):
            label = f"{scheme}-{size['width']}"
            anonymous = browser.new_page(viewport=size, color_scheme=scheme)  # type: ignore[arg-type]
            anonymous.goto(site + "/accounts/login/")
            assert overflow(anonymous) == 0, f"login page scrolls sideways ({label})"
            shoot(anonymous, f"login-{label}")
            anonymous.close()
            page = log_in(
                browser, site, size, scheme, username="root", password="root-passphrase-1"
            )
            for name, path in pages.items():
                page.goto(site + path)
                page.wait_for_load_state("load")
                assert page.title() != "Not found · Atelier", path
                assert overflow(page) == 0, f"{name} scrolls sideways ({label})"
                shoot(page, f"{name}-{label}")
            # The top bar collapses on a phone: its links are one tap away, in a menu.
            if size is PHONE:
                assert page.is_hidden("#site-nav")
                page.click("#menu-button")
                assert page.is_visible("#site-nav a[href='/jobs/']")
                assert overflow(page) == 0
            else:
                assert page.is_visible("#site-nav a[href='/jobs/']")
            assert page.is_visible("#approvals-badge")  # root sees who waits
            backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.context.close()
    assert backgrounds["light"] != backgrounds["dark"], "the system's dark setting is followed"


def test_on_a_phone_code_is_highlighted_and_copied_math_renders_and_the_drawer_works(
    site: str, browser: Browser, people: dict[str, Any]
) -> None:
    page = log_in(browser, site, PHONE)
    wait_connected(page)
    # The sidebar is a drawer: closed, then opened by the menu button; choose the chat.
    assert not page.is_visible("#sidebar a[href='/chat/{}/']".format(people["conversation"]))
    page.click("#drawer-button")
    page.wait_for_function(
        "getComputedStyle(document.getElementById('sidebar')).transform === 'none'"
    )
    page.click("#sidebar a[href='/chat/{}/']".format(people["conversation"]))
    wait_connected(page)
    assert overflow(page) == 0
    # Highlighted by the server, with its language and a copy button.
    block = page.locator(".msg.assistant .codeblock").first
    assert block.locator(".code-lang").inner_text() == "python"
    assert block.locator("span.k").first.inner_text() == "def"
    assert page.evaluate(
        "getComputedStyle(document.querySelector('.codeblock span.k')).color"
    ) != page.evaluate("getComputedStyle(document.querySelector('.codeblock span.n')).color")
    block.locator(".copy-code").click()
    page.wait_for_function("document.querySelector('.copy-code').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == CODE + "\n"
    # The whole message copies as written (markdown).
    page.locator(".msg.assistant .copy-message").click()
    page.wait_for_function("document.querySelector('.msg.assistant .copy-message.copied')")
    assert page.evaluate("navigator.clipboard.readText()").strip() == REPLY.strip()
    # Math is MathML laid out by the browser, not dollar signs; tables and quotes styled.
    fraction = page.locator(".msg.assistant math mfrac")
    assert fraction.count() == 1 and fraction.bounding_box()["height"] > 10  # type: ignore[index]
    assert "$" not in page.inner_text(".msg.assistant .body")
    assert page.locator(".msg.assistant table th").count() == 2
    assert (
        page.evaluate("getComputedStyle(document.querySelector('.msg blockquote')).borderLeftStyle")
        == "solid"
    )
    shoot(page, "code-math-phone")
    # Continue the conversation on the phone: the composer stays on screen.
    composer = page.locator("#composer").bounding_box()
    assert composer and composer["y"] + composer["height"] <= PHONE["height"]
    page.fill("#input", "And in reverse order?")
    page.press("#input", "Enter")
    page.wait_for_selector(
        ".msg.assistant[data-status=done]:not(.streaming) .stamp", timeout=90_000
    )
    stamp = page.locator(".msg.assistant .stamp").last.inner_text()
    assert "tokens/s" in stamp and "s to first token" in stamp
    assert page.locator(".msg.user").count() == 2
    assert overflow(page) == 0
    shoot(page, "sent-phone")


def test_streaming_respects_the_reader_and_the_settings_survive_a_reload(
    site: str, browser: Browser, people: dict[str, Any]
) -> None:
    page = log_in(browser, site, WIDE, "dark")
    wait_connected(page)
    page.click("#settings summary")
    # A new chat starts from the model's defaults, and the picker says what they are.
    assert page.input_value("#temperature") == str(DEFAULTS["temperature"])
    assert page.input_value("#max-tokens") == str(DEFAULTS["max_tokens"])
    assert page.input_value("#repetition-penalty") == str(DEFAULTS["repetition_penalty"])
    assert "never stops talking" in page.inner_text("#model-about")
    page.fill("#input", "Tell me a long story.")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant[data-status=done]:not(.streaming)", timeout=90_000)
    # The reply was written with those defaults: the reloaded page starts from its params.
    page.reload()
    wait_connected(page)
    assert page.input_value("#temperature") == str(DEFAULTS["temperature"])
    assert page.input_value("#max-tokens") == str(DEFAULTS["max_tokens"])
    assert page.input_value("#repetition-penalty") == str(DEFAULTS["repetition_penalty"])

    # In the long conversation with code, a long reply: the reader scrolls up to read,
    # and stays where they are.
    page.goto(site + f"/chat/{people['conversation']}/")
    wait_connected(page)
    page.click("#settings summary")
    page.fill("#max-tokens", str(LONG))
    page.eval_on_selector(
        "#temperature", "el => { el.value = '0.55'; el.dispatchEvent(new Event('input')); }"
    )
    page.fill("#input", "Another, longer one, please.")
    page.press("#input", "Enter")
    streaming = (
        "(document.querySelector('.msg.assistant.streaming .body')?.textContent.length || 0)"
    )
    page.wait_for_function(f"{streaming} > 60", timeout=90_000)
    page.fill("#input", "One more thing")
    page.press("#input", "Enter")  # while busy: told why, nothing sent, nothing lost
    assert "still being written" in page.inner_text("#busy-hint")
    assert page.input_value("#input") == "One more thing"
    page.evaluate("document.getElementById('messages').scrollTop = 0")
    page.wait_for_selector("#jump-latest:not([hidden])", timeout=30_000)
    length = page.evaluate(streaming)
    page.wait_for_function(f"{streaming} > {length} + 20", timeout=60_000)
    assert page.evaluate("document.getElementById('messages').scrollTop") == 0, "scroll held"
    page.click("#jump-latest")
    at_bottom = (
        "(() => { const m = document.getElementById('messages');"
        " return m.scrollHeight - m.scrollTop - m.clientHeight < 40; })()"
    )
    assert page.evaluate(at_bottom)
    shoot(page, "streaming-dark-1280")
    page.keyboard.press("Escape")  # Esc stops the reply
    page.wait_for_selector(".msg.assistant[data-status=stopped]:not(.streaming)", timeout=60_000)
    assert page.evaluate(at_bottom), "at the bottom, it followed the reply to its end"

    # The settings of the latest reply are the conversation's: they survive a reload.
    page.reload()
    wait_connected(page)
    assert page.input_value("#temperature") == "0.55"
    assert page.input_value("#max-tokens") == str(LONG)
    # The theme toggle is remembered for the user.
    assert page.get_attribute("html", "data-theme") == "system"
    page.click("#theme-toggle")
    page.wait_for_function("document.documentElement.dataset.theme === 'dark'")
    page.reload()
    assert page.get_attribute("html", "data-theme") == "dark"
