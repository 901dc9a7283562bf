"""The chat page's details (issue 17): rendered code and math, titles, per-model defaults,
reply timings and their export, themes, approvals and the error pages. Fast tests through
the real services and views; tests/test_browser_ui.py shows them in a browser."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from generation.specs import SamplingParams
from tests.conftest import DIRECT_QUEUE
from webapp.accounts.models import Role, Theme, User
from webapp.catalog.models import ModelEntry
from webapp.chat import history, services, titles
from webapp.chat.protocol import ProtocolError, SendMessage, parse_client_message
from webapp.inference import front_door
from webapp.inference.models import Generation, Status
from webapp.inference.relay import timings_of
from webapp.inference.rendering import code_css, render_markdown

pytestmark = pytest.mark.django_db


@pytest.fixture
def smol(db: Any) -> ModelEntry:
    """A chat model with its own defaults (never run here: nothing loads it)."""
    return ModelEntry.objects.create(
        name="smol",
        task="chat",
        source="/models/smol",
        queue=DIRECT_QUEUE,
        is_default=True,
        description="A small model.",
        default_temperature=0.3,
        default_max_tokens=200,
        default_repetition_penalty=1.2,
    )


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text_of(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


# --- Rendering ---------------------------------------------------------------------------


def test_fenced_code_is_highlighted_under_its_language_and_keeps_its_indentation() -> None:
    html = render_markdown("```python\ndef f(x):\n    return x  # same\n```")
    assert '<div class="codeblock"><div class="code-head"><span class="code-lang">python' in html
    assert '<span class="k">def</span>' in html and '<span class="c1"># same</span>' in html
    assert "\n    " in html  # the indentation is kept inside <pre>
    assert "def f(x):\n    return x  # same" in text_of(html)
    # An unknown language is shown plain, under its name; a hostile one is not a label.
    assert '<span class="code-lang">brainfudge</span>' in render_markdown("```brainfudge\n+\n```")
    hostile = render_markdown('```"><img src=x onerror=alert(1)>\nx\n```')
    assert "<img" not in hostile and '<span class="code-lang">code</span>' in hostile


def test_indented_code_right_after_prose_stays_code() -> None:
    html = render_markdown("Here it is:\n    for ch in text:\n        print(ch)\nDone.")
    assert "<p>Here it is:</p>" in html
    assert "for ch in text:\n    print(ch)" in text_of(html)  # indentation kept
    assert html.count('class="codeblock"') == 1
    # List continuations and fenced code are left alone.
    assert "<pre" not in render_markdown("- item\n    more of the item")
    fenced = render_markdown("```\nline\n    indented\n```")
    assert fenced.count('class="codeblock"') == 1 and "line\n    indented" in fenced


def test_math_becomes_mathml_and_dollars_of_money_stay_text() -> None:
    html = render_markdown("Area $\\pi r^2$, and $$\\frac{a}{b}$$ costs $5 or $10.")
    assert '<span class="math inline"><math display="inline">' in html
    assert "<mi>π</mi>" in html and "<mfrac>" in html
    assert "costs $5 or $10." in html
    block = render_markdown("$$\n\\sum_{i=1}^n i\n$$")
    assert '<div class="math block">' in block and '<math display="block">' in block
    # TeX it cannot parse is shown as written, escaped; nothing in it becomes markup.
    broken = render_markdown("$\\frac{<script>$")
    assert "<script" not in broken


def test_math_cannot_smuggle_links_or_handlers() -> None:
    html = render_markdown(
        "$\\href{javascript:alert(1)}{x}$ and $x^{<img src=x onerror=alert(1)>}$"
    )
    assert "javascript:" not in html.replace("javascript:alert(1)}{x}", "")
    assert "<img" not in html and "onerror=" not in html.replace("onerror=alert(1)", "")
    assert "href=" not in html


def test_tables_and_quotes_render_and_the_code_colours_come_from_pygments() -> None:
    html = render_markdown("| a | b |\n|---|---|\n| 1 | 2 |\n\n> quoted")
    assert "<table>" in html and "<th>a</th>" in html and "<blockquote>" in html
    css = code_css()
    assert ".codeblock pre .k {" in css
    assert all(line.startswith(".codeblock pre") for line in css.splitlines())


# --- Titles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "title"),
    [
        (
            "You've provided a Python function that reverses a string. If",
            "You've provided a Python function",
        ),
        ('"Otters in Cold Water"', "Otters in Cold Water"),
        ("Title: **Reverse a String in Python**\nMore text", "Reverse a String in Python"),
        ("Otters and sea lions in the cold waters of the north", "Otters and sea lions"),
        ("   ", ""),
    ],
)  # fmt: skip
def test_a_title_is_short_and_whole(written: str, title: str) -> None:
    assert titles.clean_title(written) == title


def test_a_long_first_message_is_cut_after_a_whole_word() -> None:
    long = "Please explain " + "continental drift and plate tectonics " * 4
    provisional = titles.provisional_title(long)
    assert provisional.endswith("…") and len(provisional) <= titles.MAX_TITLE_CHARS
    assert long.startswith(provisional[:-1]) and long[len(provisional) - 1] == " "


def test_the_title_endpoint_answers_its_owner_only(alice: Any, bob: Any, smol: Any) -> None:
    posted = services.post_message(
        alice, content="Hello there", conversation_id=None, model_id=None, system=None, params={}
    )
    url = reverse("chat:title", args=[posted.conversation.pk])
    assert signed_in(alice).get(url).json() == {"title": "Hello there", "source": "auto"}
    assert signed_in(bob).get(url).status_code == 404


# --- Per-model defaults ------------------------------------------------------------------


def test_a_models_defaults_fill_what_a_chat_request_leaves_out(alice: Any, smol: Any) -> None:
    frame = parse_client_message({"type": "message", "content": "Hi", "temperature": 0.9})
    assert isinstance(frame, SendMessage)
    posted = services.post_message(
        alice, content="Hi", conversation_id=None, model_id=None, system=None, params=frame.params
    )
    generation = posted.assistant_message.generation
    assert generation is not None
    assert (
        generation.params
        == SamplingParams(temperature=0.9, max_new_tokens=200, repetition_penalty=1.2).to_dict()
    )  # the request's own temperature wins; the model's length and penalty fill in


def test_without_model_defaults_atelier_defaults_apply_and_other_tasks_are_untouched(
    alice: Any, smol: Any
) -> None:
    smol.default_temperature = smol.default_max_tokens = smol.default_repetition_penalty = None
    smol.save()
    chat = front_door.submit(
        alice, task="chat", model=None, input={"system": "", "messages": []}, params={}
    )
    expected = SamplingParams(max_new_tokens=settings.ATELIER_DEFAULT_MAX_TOKENS).to_dict()
    assert chat.params == expected
    smol.default_temperature = 1.5
    smol.save()
    summary = front_door.submit(
        alice,
        task="summarize",
        model=smol,
        model_task="chat",
        input={"text": "x", "length": "short"},
        params={},
    )
    assert summary.params == {}  # one-shot tasks run greedy with the worker's defaults


def test_repetition_penalty_is_checked_on_the_way_in() -> None:
    with pytest.raises(ValueError, match="repetition_penalty"):
        SamplingParams(repetition_penalty=0.5)
    with pytest.raises(ProtocolError) as refused:
        parse_client_message({"type": "message", "content": "Hi", "repetition_penalty": 3})
    assert refused.value.code == "out_of_range"
    ok = parse_client_message({"type": "message", "content": "Hi", "repetition_penalty": 1.3})
    assert isinstance(ok, SendMessage) and ok.params == {"repetition_penalty": 1.3}


def test_the_picker_describes_each_model_and_the_page_remembers_the_last_settings(
    alice: Any, smol: Any
) -> None:
    rnn = ModelEntry.objects.create(
        name="gru", task="chat", source="/models/gru", backend="rnn", takes_system_prompt=False
    )
    client = signed_in(alice)
    page = client.get(reverse("chat:home"))
    about = page.context["model_settings"]
    assert about[str(smol.pk)] == {
        "description": "A small model.",
        "temperature": 0.3,
        "top_p": 0.95,
        "max_tokens": 200,
        "repetition_penalty": 1.2,
        "system_prompt": True,
    }
    assert about[str(rnn.pk)]["system_prompt"] is False
    assert 'id="model-settings"' in page.content.decode()
    posted = services.post_message(
        alice,
        content="Hi",
        conversation_id=None,
        model_id=None,
        system=None,
        params={"temperature": 1.1, "max_new_tokens": 64},
    )
    page = client.get(reverse("chat:conversation", args=[posted.conversation.pk]))
    assert page.context["remembered"] == {
        "temperature": 1.1,
        "top_p": 0.95,
        "max_tokens": 64,
        "repetition_penalty": 1.2,
    }


# --- Timings -----------------------------------------------------------------------------


def finished_reply(user: User) -> services.Posted:
    posted = services.post_message(
        user, content="Hello", conversation_id=None, model_id=None, system=None, params={}
    )
    generation = posted.assistant_message.generation
    assert generation is not None
    start = generation.queued_at
    Generation.objects.filter(pk=generation.pk).update(
        status=Status.DONE,
        output="Hi **there**",
        started_at=start + timedelta(seconds=0.5),
        first_token_at=start + timedelta(seconds=1.5),
        finished_at=start + timedelta(seconds=3.5),
        completion_tokens=41,
    )
    return posted


def test_a_reply_shows_when_it_was_written_and_how_fast(alice: Any, smol: Any) -> None:
    posted = finished_reply(alice)
    generation = Generation.objects.get(pk=posted.assistant_message.generation_id)
    timings = timings_of(generation)
    assert timings["first_token_seconds"] == 1.5
    assert timings["tokens_per_second"] == 20.0  # 40 tokens after the first, in 2 s
    assert timings["written_at"] == generation.finished_at.isoformat()
    page = signed_in(alice).get(reverse("chat:conversation", args=[posted.conversation.pk]))
    body = page.content.decode()
    assert f'data-written="{generation.finished_at.isoformat()}"' in body
    assert 'data-ttft="1.5"' in body and 'data-speed="20.0"' in body
    unfinished = Generation(queued_at=timezone.now(), completion_tokens=0)
    assert timings_of(unfinished) == {
        "written_at": None,
        "first_token_seconds": None,
        "tokens_per_second": None,
    }


def test_the_export_says_when_each_reply_was_written_and_how_fast(alice: Any, smol: Any) -> None:
    posted = finished_reply(alice)
    generation = Generation.objects.get(pk=posted.assistant_message.generation_id)
    exported = json.loads(history.export_json(posted.conversation))
    reply = exported["messages"][1]
    assert reply["created_at"] == generation.finished_at.isoformat()
    assert reply["created_at"] != posted.assistant_message.created_at.isoformat()
    assert reply["first_token_seconds"] == 1.5 and reply["tokens_per_second"] == 20.0
    assert reply["completion_tokens"] == 41
    markdown = history.export_markdown(posted.conversation)
    assert "1.5 s to first token · 20.0 tokens/s" in markdown


# --- Themes, approvals, error pages ------------------------------------------------------


def test_the_theme_is_remembered_per_user(alice: Any) -> None:
    client = signed_in(alice)
    assert 'data-theme="system"' in client.get(reverse("chat:home")).content.decode()
    answer = client.post(reverse("theme"), {"theme": "dark"}, HTTP_X_REQUESTED_WITH="fetch")
    assert answer.status_code == 204
    alice.refresh_from_db()
    assert alice.theme == Theme.DARK
    assert 'data-theme="dark"' in client.get(reverse("chat:home")).content.decode()
    assert client.post(reverse("theme"), {"theme": "purple"}).status_code == 400
    back = client.post(reverse("theme"), {"theme": "light", "next": "https://evil.example/"})
    assert back.status_code == 302 and back["Location"] == reverse("chat:home")
    alice.refresh_from_db()
    assert alice.theme == Theme.LIGHT


def test_admins_see_who_waits_and_approve_or_refuse_them(make_user: Any) -> None:
    admin = User.objects.create_superuser("root", password="x-long-passphrase")
    first = make_user("first", role=Role.PENDING)
    second = make_user("second", role=Role.PENDING)
    client = signed_in(admin)
    page = client.get(reverse("chat:home")).content.decode()
    assert 'id="approvals-badge"' in page and "2 waiting" in page
    client.post(reverse("approvals"), {"user": [first.pk], "action": "approve"})
    client.post(reverse("approvals"), {"user": [second.pk], "action": "refuse"})
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.role == Role.USER and first.can_generate
    assert second.role == Role.PENDING and not second.is_active  # disabled, kept
    assert 'id="approvals-badge"' not in client.get(reverse("chat:home")).content.decode()
    nothing = client.post(reverse("approvals"), {"action": "approve"}, follow=True)
    assert "Choose at least one account." in nothing.content.decode()
    # Only admins: another user is refused with the styled page.
    refused = signed_in(make_user("plain")).get(reverse("approvals"))
    assert refused.status_code == 403 and "Not for this account" in refused.content.decode()


def test_a_pending_user_is_told_once_why_they_cannot_generate() -> None:
    client = Client()
    client.post(
        reverse("signup"),
        {
            "username": "newbie",
            "email": "",
            "password1": "a-long-passphrase-1",
            "password2": "a-long-passphrase-1",
        },
    )
    page = client.get(reverse("chat:home")).content.decode()
    assert page.count("waiting for an administrator") == 1
    assert "Welcome!" not in page  # one notice, not a flash message as well


@pytest.mark.parametrize("path", ["/no/such/page/", "/chat/999999/"])
def test_not_found_is_a_styled_page_with_a_way_back(alice: Any, path: str) -> None:
    response = signed_in(alice).get(path)
    assert response.status_code == 404
    body = response.content.decode()
    assert "Nothing here" in body and 'href="/"' in body and "favicon.svg" in body


# --- Moderation, results, translations ---------------------------------------------------


def test_the_audit_trail_hides_routine_allows_names_actions_and_links_items(
    alice: Any, smol: Any, make_user: Any
) -> None:
    services.post_message(
        alice, content="Hello there", conversation_id=None, model_id=None, system=None, params={}
    )
    with pytest.raises(services.MessageBlocked) as blocked:
        services.post_message(
            alice, content="I will kill you", conversation_id=None, model_id=None, system=None,
            params={},
        )  # fmt: skip
    event = blocked.value.user_message.blocked_by
    assert event is not None
    client = signed_in(make_user("root", role=Role.ADMIN))

    def trail(**query: str) -> str:
        page = client.get(reverse("moderation:audit"), query).content.decode()
        return page[page.index('<table id="audit">') :]

    page = trail()
    assert "input blocked" in page and "input.block" in page  # readable, with its code
    assert "input.allow" not in page
    assert f'href="/moderation/?event={event.pk}"' in page
    shown = trail(routine="show")
    assert "input allowed" in shown and "input.allow" in shown
    assert "input.allow" in trail(action="input.allow")  # asking for them shows them
    one = client.get(reverse("moderation:queue"), {"event": event.pk}).content.decode()
    assert f'id="event-{event.pk}"' in one and "I will kill you" in one
    assert f'<label for="phrases-{event.pk}"' in one and f'<label for="reason-{event.pk}"' in one


def one_shot(user: User, model: ModelEntry, kind: str, input: dict[str, Any], output: str) -> Any:
    from webapp.studio.models import Result

    generation = Generation.objects.create(
        user=user, model=model, model_name=model.name, task=kind, input=input,
        status=Status.DONE, output=output, result={"target": input.get("target")},
    )  # fmt: skip
    return Result.objects.create(user=user, generation=generation, kind=kind, title=output[:30])


def test_results_can_be_filtered_by_kind_and_words(alice: Any, bob: Any, smol: Any) -> None:
    one_shot(alice, smol, "summarize", {"text": "x", "length": "short"}, "Otters keep warm")
    one_shot(alice, smol, "translate", {"text": "Hallo", "target": "en"}, "Hello")
    one_shot(bob, smol, "summarize", {"text": "x", "length": "short"}, "Otters of Bob")
    client = signed_in(alice)
    url = reverse("studio:history")
    assert {r.title for r in client.get(url).context["results"]} == {"Otters keep warm", "Hello"}
    assert [r.title for r in client.get(url, {"kind": "translate"}).context["results"]] == ["Hello"]
    found = client.get(url, {"q": "otters"})
    assert [r.title for r in found.context["results"]] == ["Otters keep warm"]
    assert "No result matches" in client.get(url, {"q": "nothing like it"}).content.decode()


def test_a_translation_that_is_its_input_is_marked_doubtful(alice: Any, smol: Any) -> None:
    same = one_shot(
        alice, smol, "translate", {"text": "The cat sleeps.", "target": "fr"}, "The  cat sleeps."
    )
    done = one_shot(
        alice, smol, "translate", {"text": "The cat sleeps.", "target": "fr"}, "Le chat dort."
    )
    client = signed_in(alice)
    page = client.get(reverse("studio:result", args=[same.generation_id])).content.decode()
    assert "Doubtful: the output is the input, unchanged" in page and "French" in page
    assert 'class="doubtful-mark"' in page
    fine = client.get(reverse("studio:result", args=[done.generation_id])).content.decode()
    assert 'class="doubtful-mark"' not in fine and 'id="doubtful"' in fine  # hidden, for the script


def test_the_server_error_page_stands_alone_with_a_way_back() -> None:
    from django.template.loader import render_to_string

    page = render_to_string("500.html")  # rendered without a request, as Django does
    assert "Something went wrong" in page and 'href="/"' in page and "favicon.svg" in page
