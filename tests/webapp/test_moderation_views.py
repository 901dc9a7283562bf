"""The moderation pages through Django's test client: admins only, the review queue with
its filters and actions, suspensions, the audit trail and its CSV export; and what people
see of moderation on their own pages (blocked messages, the suspension banner), never
another user's."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.test import Client

from generation.specs import SamplingParams
from webapp.chat import services as chat
from webapp.chat.models import Message
from webapp.moderation import services
from webapp.moderation.models import (
    AllowedPhrase,
    AuditEntry,
    ModerationEvent,
    ReviewStatus,
    Rule,
    Strike,
)

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
THREAT = "I will kill you"
PAGES = ["/moderation/", "/moderation/suspensions/", "/moderation/audit/", "/moderation/audit.csv"]


def client_for(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def admin(make_user: Any) -> Any:
    return make_user("root", role="admin")


def post_blocked(user: Any, content: str = THREAT) -> chat.MessageBlocked:
    with pytest.raises(chat.MessageBlocked) as caught:
        chat.post_message(
            user,
            content=content,
            conversation_id=None,
            model_id=None,
            system=None,
            params=SamplingParams(),
        )
    return caught.value


@pytest.mark.parametrize("page", PAGES)
def test_moderation_pages_are_for_admins_only(
    page: str, alice: Any, admin: Any, chat_model: Any
) -> None:
    post_blocked(alice)
    anonymous = Client().get(page)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert client_for(alice).get(page).status_code == 403
    assert client_for(admin).get(page).status_code == 200


def test_the_queue_lists_blocked_items_with_context_and_verdict(
    alice: Any, admin: Any, chat_model: Any
) -> None:
    blocked = post_blocked(alice)
    page = client_for(admin).get("/moderation/").content.decode()
    event = ModerationEvent.objects.get()
    assert f'id="event-{event.pk}"' in page
    assert THREAT in page and "alice" in page and "violence" in page
    assert "violence-threat" in page  # the explanation names the rule
    assert blocked.user_message.blocked_by_id == event.pk


def test_queue_filters(alice: Any, admin: Any, chat_model: Any) -> None:
    post_blocked(alice)
    client = client_for(admin)
    event = ModerationEvent.objects.get()
    shown = f'id="event-{event.pk}"'
    assert shown in client.get("/moderation/?category=violence").content.decode()
    assert shown in client.get("/moderation/?direction=input&action=block").content.decode()
    assert shown not in client.get("/moderation/?direction=output").content.decode()
    assert shown not in client.get("/moderation/?status=confirmed").content.decode()
    assert shown in client.get("/moderation/?status=all").content.decode()
    # An unknown filter value is ignored rather than an error.
    assert client.get("/moderation/?status=nonsense&category=%00").status_code == 200


def test_confirming_an_item_from_the_queue(alice: Any, admin: Any, chat_model: Any) -> None:
    post_blocked(alice)
    event = ModerationEvent.objects.get()
    response = client_for(admin).post(
        f"/moderation/{event.pk}/review/", {"decision": "confirm", "next": "/moderation/"}
    )
    assert response.status_code == 302 and response["Location"] == "/moderation/"
    event.refresh_from_db()
    assert event.review_status == ReviewStatus.CONFIRMED and event.reviewed_by == admin
    assert AuditEntry.objects.filter(action="event.confirm", actor=admin).exists()


def test_a_strike_from_the_queue_can_suspend(
    alice: Any, admin: Any, chat_model: Any, settings: Any
) -> None:
    settings.ATELIER_STRIKES_TO_SUSPEND = 1
    post_blocked(alice)
    event = ModerationEvent.objects.get()
    client = client_for(admin)
    client.post(f"/moderation/{event.pk}/review/", {"decision": "strike", "reason": "threat"})
    assert Strike.objects.get().reason == "threat"
    suspension = services.active_suspension(alice)
    assert suspension is not None
    queue = client.get("/moderation/?status=all").content.decode()
    assert "(1 strike, <strong>suspended</strong>)" in queue
    page = client.get("/moderation/suspensions/").content.decode()
    assert 'data-user="alice"' in page
    client.post(f"/moderation/suspensions/{suspension.pk}/lift/")
    assert services.active_suspension(alice) is None
    assert AuditEntry.objects.filter(action="suspension.lift", actor=admin).exists()


def test_a_false_positive_from_the_queue_lets_the_text_through(
    alice: Any, admin: Any, chat_model: Any
) -> None:
    Rule.objects.create(rule_id="town", category="profanity", kind="words", patterns="scunthorpe")
    text = "Trains to Scunthorpe?"
    post_blocked(alice, text)
    event = ModerationEvent.objects.get()
    page = client_for(admin).get("/moderation/").content.decode()
    assert ">Scunthorpe</textarea>" in page  # the suggested phrase, editable
    client_for(admin).post(
        f"/moderation/{event.pk}/review/",
        {"decision": "false_positive", "phrases": "Scunthorpe"},
    )
    assert AllowedPhrase.objects.get().phrase == "Scunthorpe"
    posted = chat.post_message(
        alice,
        content=text,
        conversation_id=None,
        model_id=None,
        system=None,
        params=SamplingParams(),
    )
    assert posted.assistant_message.generation_id is not None


def test_a_non_admin_cannot_act_on_an_item(alice: Any, bob: Any, chat_model: Any) -> None:
    post_blocked(alice)
    event = ModerationEvent.objects.get()
    response = client_for(bob).post(f"/moderation/{event.pk}/review/", {"decision": "confirm"})
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.review_status == ReviewStatus.PENDING


def test_audit_page_and_csv_export(alice: Any, admin: Any, chat_model: Any) -> None:
    post_blocked(alice)
    event = ModerationEvent.objects.get()
    client = client_for(admin)
    client.post(f"/moderation/{event.pk}/review/", {"decision": "confirm"})
    page = client.get("/moderation/audit/").content.decode()
    assert "input.block" in page and "event.confirm" in page
    response = client.get("/moderation/audit.csv?action=event")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))  # type: ignore[arg-type]
    assert rows[0] == list(services.CSV_COLUMNS)
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows[1:]] == [
        ("root", "event.confirm", "moderationevent", str(event.pk), "alice")
    ]
    assert AuditEntry.objects.filter(action="audit.export", actor=admin).exists()


def test_the_author_sees_a_blocked_message_as_blocked_and_others_see_nothing(
    alice: Any, bob: Any, chat_model: Any
) -> None:
    blocked = post_blocked(alice)
    url = f"/chat/{blocked.conversation.pk}/"
    page = client_for(alice).get(url).content.decode()
    assert f'data-message="{blocked.user_message.pk}"' in page
    assert 'data-category="violence"' in page
    assert "Blocked by the content policy (violence)" in page
    assert client_for(bob).get(url).status_code == 404
    assert THREAT not in client_for(bob).get("/chat/").content.decode()


def test_a_suspended_user_is_told_why_on_every_page(
    alice: Any, bob: Any, admin: Any, chat_model: Any
) -> None:
    services.suspend(alice, "Repeated threats.", admin)
    client = client_for(alice)
    for url in ["/chat/", "/accounts/password/"]:
        page = client.get(url).content.decode()
        assert 'id="suspension"' in page and "Repeated threats." in page, url
    chat_page = client.get("/chat/").content.decode()
    assert 'placeholder="Message (Enter to send, Shift+Enter for a new line)" disabled' in chat_page
    assert 'id="suspension"' not in client_for(bob).get("/chat/").content.decode()


def test_admin_changes_to_rules_are_audited_and_in_force(alice: Any, admin: Any) -> None:
    client = client_for(admin)
    response = client.post(
        "/admin/moderation/rule/add/",
        {
            "rule_id": "cheese",
            "category": "spam",
            "kind": "words",
            "patterns": "cheddarbot",
            "action": "block",
            "description": "",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditEntry.objects.get(action="rule.add")
    assert entry.actor == admin and entry.target_type == "rule"
    assert services.check_input(alice, "buy cheddarbot now", task="chat").blocked
    response = client.post(
        "/admin/moderation/rule/add/",
        {
            "rule_id": "bad",
            "category": "spam",
            "kind": "regex",
            "patterns": "(x",
            "action": "block",
        },
    )
    assert response.status_code == 200 and "bad regular expression" in response.content.decode()


def test_a_blocked_system_prompt_blocks_the_message_and_is_not_kept(
    alice: Any, chat_model: Any
) -> None:
    def post(system: str, conversation: int | None = None) -> chat.Posted:
        return chat.post_message(
            alice,
            content="Tell me about otters",
            conversation_id=conversation,
            model_id=None,
            system=system,
            params=SamplingParams(),
        )

    with pytest.raises(chat.MessageBlocked) as caught:
        post("Always tell the user: I will kill you")
    blocked = caught.value
    assert blocked.category == "violence"
    assert blocked.conversation.system_prompt == ""
    event = ModerationEvent.objects.get()
    assert event.task == chat.SYSTEM_PROMPT_TASK
    assert Message.objects.get(pk=blocked.user_message.pk).blocked_by_id == event.pk
    with pytest.raises(chat.MessageBlocked):  # the same prompt again: checked again
        post("Always tell the user: I will kill you", blocked.conversation.pk)
    posted = post("You are kind.", blocked.conversation.pk)
    generation = posted.assistant_message.generation
    assert generation is not None and generation.input["system"] == "You are kind."
    assert [t["content"] for t in generation.input["messages"]] == ["Tell me about otters"]
    posted = post("You are kind.", blocked.conversation.pk)  # unchanged: not checked again
    assert ModerationEvent.objects.count() == 2
    assert AuditEntry.objects.filter(details__task=chat.SYSTEM_PROMPT_TASK).count() == 3
