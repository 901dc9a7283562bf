import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from generation.specs import SamplingParams
from webapp.chat import services
from webapp.inference.models import Status
from webapp.inference.rendering import render_markdown

pytestmark = pytest.mark.django_db


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post(user: Any, content: str = "Hello", conversation_id: int | None = None) -> services.Posted:
    return services.post_message(
        user, content=content, conversation_id=conversation_id, model_id=None, system="Be brief.",
        params=SamplingParams(),
    )  # fmt: skip


def test_chat_page_lists_own_conversations_and_models(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    mine = post(alice, "About otters").conversation
    post(bob, "Bob's secret plans")
    page = logged_in(alice).get(reverse("chat:home")).content.decode()
    assert (
        "About otters" in page
        and "Bob&#x27;s secret plans" not in page
        and "secret plans" not in page
    )
    assert "tiny-llama" in page
    detail = logged_in(alice).get(reverse("chat:conversation", args=[mine.pk]))
    assert detail.status_code == 200 and "About otters" in detail.content.decode()


def test_another_users_conversation_is_404(alice: Any, bob: Any, chat_model: Any) -> None:
    theirs = post(bob, "private").conversation
    assert logged_in(alice).get(reverse("chat:conversation", args=[theirs.pk])).status_code == 404


def test_post_message_builds_history_and_queues_a_generation(alice: Any, chat_model: Any) -> None:
    first = post(alice, "One")
    generation = first.assistant_message.generation
    assert generation is not None and generation.status == Status.QUEUED
    generation.output = "Reply one"
    generation.status = Status.DONE
    generation.save()
    second = post(alice, "Two", first.conversation.pk)
    assert second.user_message.parent_id == first.assistant_message.pk
    assert second.assistant_message.generation is not None
    assert second.assistant_message.generation.input == {
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "One"},
            {"role": "assistant", "content": "Reply one"},
            {"role": "user", "content": "Two"},
        ],
    }
    assert [m.text for m in services.visible_path(second.conversation)] == [
        "One",
        "Reply one",
        "Two",
        "",
    ]


def test_model_output_can_never_inject_html() -> None:
    hostile = (
        '<script>alert(1)</script> <img src=x onerror="alert(2)"> '
        "[click](javascript:alert(3)) <iframe src=//evil></iframe>\n\n```html\n<b>code</b>\n```"
    )
    html = render_markdown(hostile)
    assert "<script" not in html and "<img" not in html and "<iframe" not in html
    assert "href=" not in html  # the javascript: link is not made a link; it stays inert text
    assert "&lt;img src=x onerror=" in html  # raw HTML is shown as text, escaped
    # Code blocks show markup as text (highlighted: the text between the spans).
    assert "<b>" not in html and "&lt;b&gt;code&lt;/b&gt;" in re.sub(r"<[^>]+>", "", html)
    assert "<pre><code" in html


def test_markdown_renders_code_blocks_lists_and_safe_links() -> None:
    html = render_markdown(
        "**bold**\n\n- a\n- b\n\n```python\nprint(1)\n```\n\n[docs](https://example.org)"
    )
    assert "<strong>bold</strong>" in html and "<li>a</li>" in html
    assert '<span class="code-lang">python</span>' in html  # labelled and highlighted
    assert '<span class="nb">print</span>' in html
    assert 'href="https://example.org"' in html and "noopener" in html


def test_one_shot_results_are_listed_beside_the_chats_of_their_owner_only(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    from webapp.inference.models import Generation
    from webapp.studio.models import Result

    def result(user: Any, title: str) -> Result:
        generation = Generation.objects.create(
            user=user, model=chat_model, model_name=chat_model.name, task="summarize",
            input={"text": "x", "length": "short"}, status=Status.DONE, output="y",
        )  # fmt: skip
        return Result.objects.create(
            user=user, generation=generation, kind="summarize", title=title
        )

    mine = result(alice, "Quarterly flood report")
    result(bob, "Bob's secret memo")
    page = logged_in(alice).get(reverse("chat:home")).content.decode()
    assert "Quarterly flood report" in page and "Bob&#x27;s secret memo" not in page
    assert f'href="/studio/result/{mine.generation_id}/"' in page
    searched = logged_in(alice).get(reverse("chat:home"), {"q": "nothing like it"})
    assert "Quarterly flood report" not in searched.content.decode()
    assert (
        'id="results"'
        not in logged_in(bob).get(reverse("chat:home"), {"q": "zzz"}).content.decode()
    )
