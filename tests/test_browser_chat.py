"""In headless Chromium, as a person would: stop a reply, regenerate one, edit a message,
move between the versions (the "i/n" arrows), and reload the page while a reply is being written.

The server, worker and browser fixtures come from tests/test_browser.py (one server and
worker for this module). Playwright's sync API runs an event loop on the main thread, so
nothing here touches the ORM once the browser is up: what was stored is read back from the
page after a reload, and from the events the server sent over the WebSocket.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests import test_browser as shared

# From tests/test_browser.py: this module's server and worker, the user (made before the
# browser starts, with the tiny model without EOS) and the browser.
site = shared.site
dana = shared.dana
browser = shared.browser

if TYPE_CHECKING:
    from playwright.sync_api import Page, WebSocket

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/tmp/atelier-shots")
Rows = list[tuple[str, str]]  # (role, text) of each message shown
# A limit above the tiny model's context: the worker shortens it to what fits (~480 tokens).
LONG = 4096
# Long enough to reload the page in the middle of the reply (seconds on this machine), short
# enough to wait for its end.
RELOADED = 200
SHORT = 24  # replies that only need to finish

# The text of the reply being streamed, as the page shows it, after each change; kept when
# the reply finishes (the finished reply's body is then replaced by rendered HTML).
RECORD_STREAMED_TEXT = """
window.__streamed = [];
new MutationObserver(() => {
  const live = document.querySelector('.msg.assistant.streaming .body');
  if (live && live.textContent.length) {
    const seen = window.__streamed;
    if (!seen.length || seen[seen.length - 1] !== live.textContent) seen.push(live.textContent);
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""
STREAMING_LENGTH = """() => {
  const live = document.querySelector('.msg.assistant.streaming .body');
  return live ? live.textContent.length : -1;
}"""


def open_chat(browser: Any, site: str) -> Page:
    """A logged-in chat page, connected, that records what it streams and what it receives."""
    page: Page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.add_init_script(shared.COUNT_STREAM_UPDATES)
    page.add_init_script(RECORD_STREAMED_TEXT)
    page.goto(site + "/")
    page.fill("#id_username", "dana")
    page.fill("#id_password", "dana-passphrase-1")
    page.click("button[type=submit]")
    wait_connected(page)
    return page


def wait_connected(page: Page) -> None:
    page.wait_for_selector("#input")
    page.wait_for_function("document.getElementById('connection').textContent === ''")


def server_events(page: Page) -> list[dict[str, Any]]:
    """Every JSON event the page receives over its WebSockets (across reloads)."""
    events: list[dict[str, Any]] = []

    def on_frame(payload: str | bytes) -> None:
        if isinstance(payload, str):
            events.append(json.loads(payload))

    def on_socket(socket: WebSocket) -> None:
        socket.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    return events


def send(page: Page, text: str, max_tokens: int) -> None:
    settings = page.locator("details.settings")
    if settings.get_attribute("open") is None:
        page.click("details.settings summary")
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_streaming_text(page: Page, longer_than: int = 0) -> int:
    """Wait until the reply being streamed shows more than `longer_than` characters."""
    page.wait_for_function(f"({STREAMING_LENGTH})() > {longer_than}", timeout=60_000)
    length: int = page.evaluate(STREAMING_LENGTH)
    return length


def wait_finished(page: Page, status: str = "done", other_than: str | None = None) -> str:
    """Wait for a finished reply with this status (not the generation `other_than`);
    returns its generation id."""
    selector = f".msg.assistant[data-status={status}]:not(.streaming)"
    if other_than is not None:
        selector += f':not([data-generation="{other_than}"])'
    found = page.wait_for_selector(selector, timeout=60_000)
    assert found is not None
    generation = found.get_attribute("data-generation")
    assert generation
    return generation


def shown(page: Page) -> Rows:
    """The visible conversation: (role, text) per message bubble, in order."""
    rows: list[list[str]] = page.eval_on_selector_all(
        "#messages .msg:not(.hidden-while-pending)",
        """els => els.map(el => [el.classList.contains('user') ? 'user' : 'assistant',
                                 el.querySelector('.body').innerText])""",
    )
    return [(role, " ".join(text.split())) for role, text in rows]


def finished_exchange(page: Page, question: str, other_than: str | None = None) -> tuple[str, Rows]:
    """Wait for the reply to `question` (a new one, not the generation `other_than`) to
    finish; returns its generation id and the conversation shown: the question and a reply."""
    generation = wait_finished(page, other_than=other_than)
    rows = shown(page)
    assert [role for role, _ in rows] == ["user", "assistant"]
    assert rows[0][1] == question and rows[1][1], "the question and a reply"
    return generation, rows


def choose_version(
    page: Page, role: str, direction: str, *, place: str, reply: str, conversation: Rows
) -> None:
    """Click the previous or next arrow on the message's branch control: the page shows
    that branch without reloading (the message at `place` ("1/2"), the generation `reply`
    and the text `conversation`); an arrow is disabled at either end."""
    title = "Previous version" if direction == "previous" else "Next version"
    page.evaluate("window.__samePage = true")
    page.click(f".msg.{role} .branch-nav button[title='{title}']")
    page.wait_for_function(
        f"document.querySelector('.msg.{role} .branch-count')?.textContent === '{place}'"
    )
    assert page.evaluate("window.__samePage === true"), "switched without reloading the page"
    wait_connected(page)
    assert page.inner_text(f".msg.{role} .branch-count") == place
    assert page.get_attribute(".msg.assistant", "data-generation") == reply
    assert shown(page) == conversation
    index, count = place.split("/")
    arrows = f".msg.{role} .branch-nav button"
    assert page.is_disabled(arrows + "[title='Previous version']") == (index == "1")
    assert page.is_disabled(arrows + "[title='Next version']") == (index == count)


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS / f"{name}.png")


def test_stop_keeps_the_partial_reply_marked_as_stopped(
    site: str, dana: Any, browser: Any, tmp_path: Path
) -> None:
    page = open_chat(browser, site)
    send(page, "Write a very long story, please.", LONG)
    page.wait_for_selector("#stop", state="visible")
    wait_streaming_text(page)

    page.click("#stop")
    generation = wait_finished(page, status="stopped")
    reply = page.locator(f".msg.assistant[data-generation='{generation}']")
    assert reply.locator(".meta").inner_text() == "stopped"
    assert page.is_hidden("#stop") and page.is_visible("#send")
    text = shown(page)[-1][1]
    assert text, "the partial reply stays on the page"

    page.reload()
    wait_connected(page)
    reply = page.locator(f".msg.assistant[data-generation='{generation}']")
    assert reply.get_attribute("data-status") == "stopped"
    assert reply.locator(".meta").inner_text() == "stopped"
    assert shown(page) == [("user", "Write a very long story, please."), ("assistant", text)]
    assert page.is_hidden("#stop") and page.is_visible("#send")
    screenshot(page, tmp_path, "stop")


def test_regenerate_streams_a_sibling_and_the_arrows_move_between_them(
    site: str, dana: Any, browser: Any, tmp_path: Path
) -> None:
    page = open_chat(browser, site)
    send(page, "Tell me about Paris.", SHORT)
    first_generation, first = finished_exchange(page, "Tell me about Paris.")
    assert page.locator(".msg .branch-nav").count() == 0, "one version: no arrows"

    page.evaluate("window.__streamUpdates = 0")
    page.click(".msg.assistant .regenerate")
    assert page.locator(".msg.assistant.streaming").count() == 1
    # The new reply takes the old one's place, under the same question.
    second_generation, second = finished_exchange(page, "Tell me about Paris.", first_generation)
    assert page.evaluate("window.__streamUpdates") >= 1, "the new reply streamed in"
    assert page.inner_text(".msg.assistant .branch-count") == "2/2"
    assert page.locator(".msg.user .branch-nav").count() == 0

    choose_version(
        page, "assistant", "previous", place="1/2", reply=first_generation, conversation=first
    )
    choose_version(
        page, "assistant", "next", place="2/2", reply=second_generation, conversation=second
    )
    screenshot(page, tmp_path, "regenerate")


def test_edit_starts_a_new_branch_and_the_original_stays_one_branch_away(
    site: str, dana: Any, browser: Any, tmp_path: Path
) -> None:
    page = open_chat(browser, site)
    send(page, "The first version", SHORT)
    first_generation, original = finished_exchange(page, "The first version")

    page.click(".msg.user .edit")
    editor = page.locator(".msg.user .editor")
    assert editor.locator("textarea").input_value() == "The first version"
    editor.locator("textarea").fill("The edited version")
    editor.locator("button", has_text="Send").click()
    edited_generation, edited = finished_exchange(page, "The edited version", first_generation)
    assert page.inner_text(".msg.user .branch-count") == "2/2"
    assert page.locator(".msg.assistant .branch-nav").count() == 0

    choose_version(
        page, "user", "previous", place="1/2", reply=first_generation, conversation=original
    )
    choose_version(page, "user", "next", place="2/2", reply=edited_generation, conversation=edited)
    screenshot(page, tmp_path, "edit")


def test_reload_mid_generation_shows_the_partial_reply_and_keeps_streaming(
    site: str, dana: Any, browser: Any, tmp_path: Path
) -> None:
    page = open_chat(browser, site)
    events = server_events(page)
    send(page, "Write a long poem.", RELOADED)
    before = wait_streaming_text(page)
    partial: str = page.evaluate(
        "document.querySelector('.msg.assistant.streaming .body').textContent"
    )
    assert len(partial) >= before

    page.reload()
    wait_connected(page)
    generation = page.get_attribute(".msg.assistant", "data-generation")
    assert generation
    # The partial reply is back (everything seen before the reload, and more)...
    resumed = wait_streaming_text(page, longer_than=len(partial) - 1)
    # ...and keeps growing while the worker writes it.
    grown = wait_streaming_text(page, longer_than=resumed)
    assert wait_streaming_text(page, longer_than=grown) > grown > resumed
    screenshot(page, tmp_path, "reload-streaming")

    wait_finished(page)
    final = shown(page)
    streamed: list[str] = page.evaluate("window.__streamed")
    done = [e for e in events if e.get("type") == "done" and str(e["generation"]) == generation]
    assert len(done) == 1, "one done event after the reload"
    assert streamed[-1].startswith(partial), "nothing shown before the reload was lost"
    assert streamed[-1] == done[0]["text"], "the streamed text is exactly the stored reply"
    assert all(b.startswith(a) for a, b in itertools.pairwise(streamed)), (
        "the text only grew: nothing repeated or reordered"
    )

    page.reload()
    wait_connected(page)
    assert shown(page) == final, "the stored reply is the one the page showed"
    assert page.get_attribute(".msg.assistant", "data-status") == "done"
    assert page.is_hidden("#stop") and page.is_visible("#send")
    screenshot(page, tmp_path, "reload")
